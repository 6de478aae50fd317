//! Section 6: the dataset folder (`hooks extract --out DIR`): peak RSS at N and 8N inputs, write
//! throughput against a raw write of the same bytes, and bytes on disk of the token layout
//! against the padded `.npz`.

use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::time::Instant;

use hooks::{ActivationSink, Activations, Chunk, DatasetWriter};
use tch::{Device, Kind, Tensor};

use crate::engine::long_tailed;
use crate::memory::peak_rss;
use crate::stats::{paired_ratios, Summary};
use crate::writing::write_tensors;
use crate::{hooks_binary, token_ids, write_jsonl, BenchResult, Ctx, Target, LAYERS};

pub struct Folder {
    /// (inputs, peak RSS bytes, folder bytes, seconds) of `hooks extract --out DIR`.
    rss: Vec<(usize, u64, u64, f64)>,
    tokens_per_input: i64,
    /// Seconds of the dataset writer and of a raw write of the same bytes, and the throughput
    /// ratio (raw seconds / writer seconds) per round.
    write_s: [Summary; 2],
    write_ratio: Summary,
    write_bytes: u64,
    write_windows: usize,
    /// Bytes on disk for the long-tailed corpus, one layer unpooled: the folder, the `.npz`.
    disk: [u64; 2],
    corpus: usize,
}

fn folder_bytes(dir: &Path) -> BenchResult<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

/// `hooks extract` of `input` to `out` with `layers`, under `peak_rss.py`: (peak, seconds).
fn hooks_extract(ctx: &Ctx, input: &Path, layers: &str, out: &Path) -> BenchResult<(u64, f64)> {
    let hooks = hooks_binary().ok_or("no `hooks` binary next to this one; run `make bench`")?;
    let argv: Vec<String> = [
        hooks.display().to_string(),
        "extract".into(),
        "--model".into(),
        ctx.model_dir.display().to_string(),
        "--input".into(),
        input.display().to_string(),
        "--layers".into(),
        layers.into(),
        "--out".into(),
        out.display().to_string(),
    ]
    .into();
    let reply = peak_rss(ctx, &argv)?;
    if reply["status"].as_i64() != Some(0) {
        return Err(format!("hooks extract failed:\n{}", reply["stderr"].as_str().unwrap_or("")).into());
    }
    Ok((
        reply["peak_rss"].as_u64().unwrap_or(0),
        reply["seconds"].as_f64().unwrap_or(f64::NAN),
    ))
}

/// Synthetic windows of `[n, len, 384]` rows for the six layers, all tokens real.
fn windows(count: usize, n: i64, len: i64) -> Vec<(Activations, Tensor, Tensor)> {
    tch::manual_seed(11);
    (0..count)
        .map(|_| {
            let mut acts = Activations::new();
            for layer in LAYERS {
                acts.insert(layer, Tensor::randn([n, len, 384], (Kind::Float, Device::Cpu)));
            }
            let ids = Tensor::ones([n, len], (Kind::Int64, Device::Cpu));
            (acts, ids.shallow_clone(), ids)
        })
        .collect()
}

pub fn run(ctx: &mut Ctx) -> BenchResult<Folder> {
    let full = ctx.cfg.full;
    let (n, len, rounds, window_count, corpus_n) = if full { (512, 64, 3, 16, 2000) } else { (4, 8, 1, 2, 12) };
    let layers = LAYERS.join(",");

    // Peak RSS at N and 8N: a folder is written window by window.
    let mut rss = Vec::new();
    if hooks_binary().is_some() || full {
        for inputs in [n, 8 * n] {
            let input = ctx.path("folder-rss.jsonl");
            write_jsonl(&input, &token_ids(inputs, len, 7))?;
            let out = ctx.path("folder-rss");
            // The median of three runs: a peak varies by tens of MB from run to run with what the
            // allocator keeps.
            let mut runs = Vec::new();
            for _ in 0..rounds {
                let (peak, seconds) = hooks_extract(ctx, &input, &layers, &out)?;
                runs.push((peak, folder_bytes(&out)?, seconds));
                std::fs::remove_dir_all(&out)?;
            }
            runs.sort_by_key(|r| r.0);
            let (peak, bytes, seconds) = runs[runs.len() / 2];
            rss.push((inputs, peak, bytes, seconds));
            std::fs::remove_file(&input)?;
        }
    }

    // Write throughput: the writer (append, sync each file, then the manifest, per window)
    // against a raw write of the same bytes, synced once per window as well.
    let chunks = windows(window_count, 32, 64);
    let mut bytes = 0u64;
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let writer_run = |bytes: &mut u64| -> BenchResult<f64> {
            let dir = ctx.path("folder-write");
            let start = Instant::now();
            let mut writer = DatasetWriter::create(&dir, serde_json::json!({}), None, window_count * 32, false)?;
            for (i, (acts, ids, mask)) in chunks.iter().enumerate() {
                writer.write(&Chunk {
                    first: i * 32,
                    activations: acts,
                    input_ids: ids,
                    attention_mask: mask,
                })?;
            }
            writer.finish()?;
            let seconds = start.elapsed().as_secs_f64();
            *bytes = folder_bytes(&dir)?;
            std::fs::remove_dir_all(&dir)?;
            Ok(seconds)
        };
        let raw_run = || -> BenchResult<f64> {
            let path = ctx.path("folder-raw");
            let start = Instant::now();
            let mut file = File::create(&path)?;
            for (acts, _, _) in &chunks {
                write_tensors(&mut file, acts.iter().map(|(_, t)| t))?;
                file.sync_data()?;
            }
            let seconds = start.elapsed().as_secs_f64();
            std::fs::remove_file(&path)?;
            Ok(seconds)
        };
        if round % 2 == 0 {
            ours.push(writer_run(&mut bytes)?);
            raw.push(raw_run()?);
        } else {
            raw.push(raw_run()?);
            ours.push(writer_run(&mut bytes)?);
        }
    }

    // Bytes on disk of one unpooled layer for the long-tailed corpus.
    let mut disk = [0, 0];
    if hooks_binary().is_some() || full {
        let input = ctx.path("folder-corpus.jsonl");
        write_jsonl(&input, &long_tailed(corpus_n, 6))?;
        let (dir, npz) = (ctx.path("folder-corpus"), ctx.path("folder-corpus.npz"));
        hooks_extract(ctx, &input, "encoder.layer.5", &dir)?;
        hooks_extract(ctx, &input, "encoder.layer.5", &npz)?;
        disk = [folder_bytes(&dir)?, std::fs::metadata(&npz)?.len()];
        std::fs::remove_dir_all(&dir)?;
        std::fs::remove_file(&npz)?;
        std::fs::remove_file(&input)?;
    }
    Ok(Folder {
        rss,
        tokens_per_input: len,
        write_s: [Summary::of(&ours), Summary::of(&raw)],
        write_ratio: Summary::of(&paired_ratios(&raw, &ours)),
        write_bytes: bytes,
        write_windows: window_count,
        disk,
        corpus: corpus_n,
    })
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

impl Folder {
    /// The growth of the peak from N to 8N, in MB, and the allowance: 5% of the N peak or 50 MB.
    fn growth(&self) -> Option<(f64, f64)> {
        let [(_, small, _, _), (_, large, _, _)] = self.rss[..] else {
            return None;
        };
        Some((mb(large) - mb(small), (mb(small) * 0.05).max(50.0)))
    }

    pub fn targets(&self) -> Vec<Target> {
        let one = |x: f64| Summary {
            median: x,
            p25: x,
            p75: x,
            n: 1,
        };
        let growth = self.growth();
        vec![
            Target::at_most(
                format!(
                    "6. dataset folder: peak RSS growth N → 8N, MB (allowed: max(5% of N's peak, 50 MB) = {:.0})",
                    growth.map_or(f64::NAN, |g| g.1)
                ),
                growth.map_or(50.0, |g| g.1.round()),
                &one(growth.map_or(f64::NAN, |g| g.0)),
                1,
            ),
            Target::at_least(
                "6. dataset folder write throughput / raw write of the same bytes",
                0.9,
                &self.write_ratio,
                3,
            ),
        ]
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## 6. The dataset folder\n\n\
             `make bench` (section 6 of the report)\n\n\
             Peak RSS of `hooks extract --out DIR` (release build, the six block outputs \
             unpooled, so one row per real token, windows of 64 samples: 8 × 512 positions), over N and 8N inputs \
             of {} tokens, taken as in section 4, the median of three runs each:\n",
            self.tokens_per_input
        );
        s.push_str("| inputs | folder MB | peak RSS MB | seconds |\n|---|---|---|---|\n");
        for (inputs, peak, bytes, seconds) in &self.rss {
            let _ = writeln!(s, "| {inputs} | {:.1} | {:.1} | {seconds:.1} |", mb(*bytes), mb(*peak));
        }
        if let Some((growth, allowed)) = self.growth() {
            let _ = writeln!(
                s,
                "\nFrom N to 8N the output grows eightfold and the peak by {growth:.1} MB (allowed: \
                 {allowed:.0} MB): memory holds the libraries, the model, the token ids and two \
                 windows (one running, one being written), not the result."
            );
        }
        let _ = writeln!(
            s,
            "\n| write {:.0} MB in {} windows | seconds |\n|---|---|\n\
             | `DatasetWriter` (append to each `.npy`; sync them and the new manifest's temporary side by side; rename it over the old) | {} |\n\
             | raw sequential write of the same bytes, synced per window | {} |\n\n\
             Throughput of the writer over the raw write: {} (per-round ratios, median and \
             interquartile range).\n",
            mb(self.write_bytes),
            self.write_windows,
            self.write_s[0].show(3),
            self.write_s[1].show(3),
            self.write_ratio.show(3),
        );
        let [folder, npz] = self.disk;
        let _ = writeln!(
            s,
            "Bytes on disk, `encoder.layer.5` unpooled, the long-tailed corpus of section 5 ({} \
             texts): the folder's token layout {:.1} MB against the `.npz` padded to the longest \
             {:.1} MB ({:.2}×): no byte of padding is written.\n",
            self.corpus,
            mb(folder),
            mb(npz),
            folder as f64 / npz.max(1) as f64
        );
        s
    }
}
