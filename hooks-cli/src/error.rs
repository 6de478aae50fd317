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
}
