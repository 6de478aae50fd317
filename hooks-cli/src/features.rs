//! `hooks features`: feature statistics of one SAE over a corpus, in one streaming pass.

use std::path::PathBuf;
use std::time::Instant;

use hooks::{ActivationSink, Chunk, Extractor, NpzArray};
use hooks_models::sae::{FeatureStats, Sae};
use tch::{Kind, Tensor};

use crate::error::CliError;
use crate::extract::{check_vocabulary, model_dir, parse_device, tokenize, DType};
use crate::input::{self, InputFormat};
use crate::sae::SaeArgs;
use crate::signals;

/// Options of `hooks features`.
#[derive(Debug, clap::Args)]
pub struct FeaturesArgs {
    /// A Hugging Face model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Text lines, JSONL with a `text` field, or JSONL with `input_ids` lists.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// How to read each line: auto, text, or jsonl.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    input_format: InputFormat,
    /// The SAE whose features to describe, attached to LAYER (see `hooks extract --sae`).
    #[arg(long, value_name = "LAYER=PATH", required = true)]
    sae: String,
    /// The .npz to write.
    #[arg(long, value_name = "STATS.npz")]
    out: PathBuf,
    /// Max-activating examples kept per feature.
    #[arg(long, value_name = "K", default_value_t = 20)]
    top_examples: u32,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Truncate inputs to N tokens (default: the model's maximum).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_length: Option<u64>,
    /// Use only the first N samples.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_samples: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The dtype the model runs in (the SAE runs in float32).
    #[arg(long, value_enum, default_value_t = DType::F32)]
    dtype: DType,
}

/// Hands each window's real-token rows of one layer to [`FeatureStats`].
struct StatsSink {
    layer: String,
    stats: FeatureStats,
    /// Each sample's line in the input.
    lines: Vec<i64>,
}

impl ActivationSink for StatsSink {
    fn write(&mut self, chunk: &Chunk<'_>) -> hooks::Result<()> {
        let acts = chunk
            .activations
            .get(&self.layer)
            .ok_or_else(|| hooks::Error::NeverFired {
                layers: vec![self.layer.clone()],
            })?;
        let lengths = chunk.lengths()?;
        let mask = chunk.attention_mask.f_to_kind(Kind::Bool)?;
        let rows = acts.f_index(&[Some(mask)])?;
        let mut samples = Vec::with_capacity(rows.size()[0] as usize);
        let mut positions = Vec::with_capacity(samples.capacity());
        for (i, &n) in lengths.iter().enumerate() {
            let line = self.lines[chunk.first + i];
            samples.extend(std::iter::repeat_n(line, n as usize));
            positions.extend(0..n);
        }
        self.stats
            .add(&rows, &samples, &positions)
            .map_err(|e| hooks::Error::Model(Box::new(e)))
    }
}

/// `hooks features`.
pub fn features(args: &FeaturesArgs) -> Result<(), CliError> {
    let start = Instant::now();
    if !crate::folder::is_npz(&args.out) {
        return Err(CliError::Usage(format!(
            "`--out {}`: the statistics are one .npz file; give a path ending in .npz",
            args.out.display()
        )));
    }
    let device = parse_device(&args.device)?;
    let dir = model_dir(args.model.as_deref())?;
    let sae_args = SaeArgs {
        sae: vec![args.sae.clone()],
        ..SaeArgs::default()
    };
    let input = input::read(args.input.as_deref(), args.input_format, &[])?;
    let mut samples = input.samples;
    if let Some(max) = args.max_samples {
        samples.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    }
    let lines: Vec<i64> = input.lines[..samples.len()].to_vec();
    let model = sae_args.attach(hooks_models::load(&dir, device, args.dtype.kind())?)?;
    let mut notes = model.notes();
    notes.extend(input.note);
    let input_name = args
        .input
        .as_ref()
        .map_or_else(|| "the bundled sentences".to_owned(), |p| format!("`{}`", p.display()));
    check_vocabulary(&samples, &input_name, model.vocab_size())?;
    let max_length = args
        .max_length
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX))
        .min(model.max_length());
    let (items, cut) = tokenize(&samples, &dir, max_length)?;
    if cut > 0 {
        notes.push(format!(
            "{cut} of {} texts were longer than {max_length} tokens and were cut to it",
            samples.len()
        ));
    }
    let (layer, _) = sae_args.pairs()?.remove(0);
    let point = format!("{layer}.sae.hook_sae_acts_post");
    let d_sae = Sae::load(sae_args.pairs()?.remove(0).1)?.d_sae();
    let k = usize::try_from(args.top_examples).unwrap_or(usize::MAX);
    let batch_size = usize::try_from(args.batch_size).unwrap_or(usize::MAX);
    let interrupt = signals::Interrupt::install()?;
    // A window of one batch: memory holds two windows of [batch, longest, d_sae] at most,
    // whatever the corpus' size.
    let extractor = Extractor::new()
        .batch_size(batch_size)
        .max_length(Some(max_length))
        .window(batch_size)
        .interrupt(interrupt.flag())
        .progress(true);
    let mut sink = StatsSink {
        layer: point.clone(),
        stats: FeatureStats::new(usize::try_from(d_sae).unwrap_or(0), k)?,
        lines,
    };
    match extractor.run_into(&*model, &[point.as_str()], &items, 0, &mut sink) {
        Err(hooks::Error::Interrupted) => return Err(interrupt.error("nothing was written")),
        other => other?,
    };
    let summary = sink.stats.finish();
    let (d, k64) = (d_sae, i64::try_from(k).unwrap_or(i64::MAX));
    let frequency = Tensor::from_slice(&summary.frequency);
    let max = Tensor::from_slice(&summary.max);
    let mean = Tensor::from_slice(&summary.mean_when_active);
    let top_values = Tensor::from_slice(&summary.top_values).view([d, k64]);
    let top_sample = Tensor::from_slice(&summary.top_sample).view([d, k64]);
    let top_position = Tensor::from_slice(&summary.top_position).view([d, k64]);
    let tokens = Tensor::from_slice(&[i64::try_from(summary.tokens).unwrap_or(i64::MAX)]);
    let arrays = [
        ("frequency", NpzArray::Tensor(&frequency)),
        ("max", NpzArray::Tensor(&max)),
        ("mean_when_active", NpzArray::Tensor(&mean)),
        ("top_values", NpzArray::Tensor(&top_values)),
        ("top_sample", NpzArray::Tensor(&top_sample)),
        ("top_position", NpzArray::Tensor(&top_position)),
        ("tokens", NpzArray::Tensor(&tokens)),
    ];
    let path = match hooks::save_npz_unless(arrays, &args.out, &interrupt.flag()) {
        Err(hooks::Error::Interrupted) => return Err(interrupt.error("nothing was written")),
        other => other?,
    };
    out!(
        "{} features of `{layer}` over {} samples, {} tokens in {:.1} s -> {}",
        d_sae,
        samples.len(),
        summary.tokens,
        start.elapsed().as_secs_f64(),
        path.display()
    )?;
    for note in notes {
        eprintln!("note: {note}");
    }
    if interrupt.raised() {
        return Err(interrupt.error("the file was written whole before stopping"));
    }
    Ok(())
}
