//! `hooks`: list the layers of a Hugging Face checkpoint, extract their activations to `.npz`,
//! inspect the result, compare layers (CKA, SVCCA) and probe them.

/// `println!` that returns the error instead of panicking, so that a closed pipe
/// (`hooks layers | head`) ends the command quietly.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::error::CliError::Output)
    }};
}

mod compare;
mod edits;
mod error;
mod extract;
mod features;
mod folder;
mod generate;
mod heatmap;
mod input;
mod inspect;
mod lens;
mod lineplot;
mod pool;
mod probe;
mod sae;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::error::CliError;

/// See inside transformer checkpoints (BERT, GPT-2, Llama, Mistral, Qwen2, Qwen3, Gemma, GPT-NeoX):
/// activations by transformers' own module names, and what each layer predicts (the logit lens).
#[derive(Debug, Parser)]
#[command(name = "hooks", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every capturable layer path, with its output shape for a one-sentence input.
    Layers {
        /// A Hugging Face model folder (config.json, model.safetensors, tokenizer.json).
        /// Default: all-MiniLM-L6-v2 from the project's .venv.
        #[arg(long, value_name = "DIR")]
        model: Option<PathBuf>,
        #[command(flatten)]
        sae: sae::SaeArgs,
    },
    /// Run a model over an input file and save the selected layers' activations to one .npz.
    Extract(Box<extract::ExtractArgs>),
    /// Join the shard folders of `extract --shard K/N`, in order, into one folder: the one an
    /// unsharded run writes, byte for byte.
    Merge {
        /// The folder to write (new or empty).
        out: PathBuf,
        /// The shard folders, 0 to N-1.
        #[arg(required = true)]
        shards: Vec<PathBuf>,
    },
    /// Compare layers with CKA or SVCCA: one input's layers with one another, or two inputs'
    /// layers across; writes the matrix as CSV and, with --plot, a heatmap.
    Compare(compare::CompareArgs),
    /// Generate from each prompt with the model's KV cache (greedy or sampled), optionally
    /// steered or ablated, and optionally capturing layers over the prompt and its output.
    Generate(Box<generate::GenerateArgs>),
    /// The logit lens: read each layer's residual through the model's own final norm and
    /// unembedding; writes the top tokens, entropy and KL to the final layer per layer and
    /// position to one .npz and, with --plot, the figure.
    Lens(Box<lens::LensArgs>),
    /// Fit a linear probe per layer (logistic, ridge or mean-diff), cross-validated over
    /// stratified folds with an optional control task; writes one CSV row per layer, the folds,
    /// and optionally the probe directions and the accuracy-by-layer plot.
    Probe(Box<probe::ProbeArgs>),
    /// Describe each feature of a sparse autoencoder over a corpus in one streaming pass: how
    /// often it fires, its max, its mean when active, and its top-K max-activating examples
    /// (sample and position); writes one .npz.
    Features(Box<features::FeaturesArgs>),
    /// Show each array of an .npz file (name, dtype, shape, bytes, min/max/mean), or each file of a dataset folder, finished or not.
    Inspect {
        /// The .npz file, or a dataset folder (finished, being written, or left by a stopped run).
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return usage_error(&e),
    };
    let order = edits::order(&matches);
    let result: Result<(), CliError> = match cli.command {
        Command::Layers { model, sae } => extract::layers(model.as_deref(), &sae),
        Command::Features(args) => features::features(&args),
        Command::Extract(args) => extract::run(&args, &order),
        Command::Merge { out, shards } => folder::merge(&out, &shards),
        Command::Inspect { path } => inspect::run(&path),
        Command::Lens(args) => lens::run(&args),
        Command::Generate(args) => generate::run(&args, &order),
        Command::Compare(args) => compare::run(&args),
        Command::Probe(args) => probe::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            // The library's hint names its Rust API too; a command-line user lists layers so.
            let line = e
                .to_string()
                .replace(hooks::LIST_LAYERS, "list every layer with `hooks layers --model DIR`");
            eprintln!("error: {line}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// A command line clap refuses, said on one line as every other error is (clap's own text, less
/// its usage block and its "For more information" line); `--help` and `--version` as clap prints
/// them.
fn usage_error(e: &clap::Error) -> ExitCode {
    let shown = [
        ErrorKind::DisplayHelp,
        ErrorKind::DisplayVersion,
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand,
    ];
    if shown.contains(&e.kind()) {
        let _ = e.print();
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
    }
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let line = parts.join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    eprintln!("error: {line}; see `hooks --help`");
    ExitCode::from(2)
}
