//! The CLI's errors: each prints as one line after `error: `.

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the framework: unknown layers, file errors, libtorch.
    #[error(transparent)]
    Hooks(#[from] hooks::Error),
    /// From loading or running a model.
    #[error(transparent)]
    Model(#[from] hooks_models::ModelError),
    /// The input file.
    #[error("{0}")]
    Input(String),
    /// A command-line option.
    #[error("{0}")]
    Usage(String),
    /// Ctrl-C or SIGTERM stopped the run; `what` says what became of the output.
    #[error("interrupted by {}; {what}", if *.signal == 15 { "SIGTERM" } else { "SIGINT (Ctrl-C)" })]
    Interrupted {
        /// The signal's number.
        signal: i32,
        /// What the output holds now.
        what: String,
    },
    /// Writing to standard output failed.
    #[error("cannot write to standard output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The process's exit code for this error: 128 + the signal for an interruption, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Interrupted { signal, .. } => u8::try_from(128 + signal).unwrap_or(1),
            _ => 1,
        }
    }

    /// Whether the reader of standard output went away (`hooks layers | head`): not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}
