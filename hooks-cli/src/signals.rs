//! Ctrl-C and SIGTERM: the run stops between batches, a dataset folder keeps every window it
//! synced, nothing half-written is left, and the exit code says which signal (130 or 143).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::CliError;
use crate::folder::{self, Outcome};
use crate::input::Sample;

/// The flag the engine checks between batches, and which signal raised it.
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Catches SIGINT and SIGTERM from now on. A second one of either ends the process at once,
    /// as the default would.
    pub fn install() -> Result<Interrupt, CliError> {
        let flag = Arc::new(AtomicBool::new(false));
        let which = Arc::new(AtomicUsize::new(0));
        let fail = |e: std::io::Error| CliError::Usage(format!("cannot install the signal handlers: {e}"));
        for signal in [SIGINT, SIGTERM] {
            let code = 128 + signal;
            // Registered first, so it sees the flag as the previous signal left it.
            signal_hook::flag::register_conditional_shutdown(signal, code, Arc::clone(&flag)).map_err(fail)?;
            signal_hook::flag::register_usize(signal, Arc::clone(&which), usize::try_from(signal).unwrap_or(0))
                .map_err(fail)?;
            signal_hook::flag::register(signal, Arc::clone(&flag)).map_err(fail)?;
        }
        Ok(Interrupt { flag, which })
    }

    /// The flag to hand the engine.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    /// Whether a signal came.
    pub fn raised(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The error that ends the command with 128 + the signal, saying what became of the output.
    pub fn error(&self, what: &str) -> CliError {
        let signal = i32::try_from(self.which.load(Ordering::SeqCst)).unwrap_or(SIGINT);
        CliError::Interrupted {
            signal,
            what: what.to_owned(),
        }
    }

    /// Ends a dataset-folder run: its summary line, or the interruption with what the folder kept.
    pub fn finish(
        &self,
        outcome: Result<Outcome, hooks::Error>,
        out: &Path,
        start: Instant,
        notes: Vec<String>,
        samples: &[Sample],
    ) -> Result<(), CliError> {
        match outcome {
            Err(hooks::Error::Interrupted) => {
                let kept = hooks::read_manifest(out).map(|m| m.done.samples).unwrap_or(0);
                Err(self.error(&format!(
                    "`{}` keeps {kept} samples written whole; run the same command again to resume",
                    out.display()
                )))
            }
            Err(e) => Err(e.into()),
            Ok(Outcome::AlreadyComplete { samples }) => {
                out!(
                    "`{}` is already complete ({samples} samples) for this same request, which would write the same bytes again; nothing to do",
                    out.display()
                )?;
                Ok(())
            }
            Ok(Outcome::Done {
                report,
                resumed,
                samples: total,
            }) => {
                let resumed = if resumed > 0 {
                    format!(" (resumed after {resumed})")
                } else {
                    String::new()
                };
                let manifest = hooks::read_manifest(out)?;
                out!(
                    "extracted {} samples{resumed} x {} layers, {} tokens{} -> {}",
                    total,
                    manifest.config["layers"].as_array().map_or(0, Vec::len),
                    manifest.done.tokens,
                    folder::rates(&report.stats, start),
                    out.display()
                )?;
                let max_length = manifest.config["settings"]["max_length"].as_u64().unwrap_or(0);
                let notes = notes.into_iter().chain(folder::notes(
                    &report.unpooled,
                    report.truncated,
                    samples.len(),
                    usize::try_from(max_length).unwrap_or(0),
                ));
                for note in notes {
                    eprintln!("note: {note}");
                }
                if self.raised() {
                    return Err(self.error("the folder was finished before stopping"));
                }
                Ok(())
            }
        }
    }
}
