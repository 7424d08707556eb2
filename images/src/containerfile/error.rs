//! What can go wrong building from a Containerfile, each error naming the line, the source
//! path or the option concerned.

use crate::build::BuildError;
use crate::fsutil::IoError;
use crate::store::StoreError;
use crate::unpack::UnpackError;

/// Why a build failed. Nothing is tagged when any of these is returned.
#[derive(Debug, thiserror::Error)]
// Large sources are boxed: this error travels up many frames of a build.
pub enum ContainerfileError {
    #[error("{file}: line {line}, column {column}: {message} (at {near:?})")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
        /// The start of the text where the parser stopped (an unknown instruction's name).
        near: String,
    },
    #[error("{instruction} is not supported yet (line {line})")]
    Unsupported { instruction: String, line: usize },
    #[error("line {line}: {instruction}: {reason}")]
    Instruction {
        line: usize,
        instruction: String,
        reason: String,
    },
    #[error("line {line}: {instruction} source {source_path:?}: {reason}")]
    Source {
        line: usize,
        instruction: String,
        source_path: String,
        reason: String,
    },
    #[error("{option}: {reason}")]
    InvalidOption { option: String, reason: String },
    #[error("line {line}: FROM {base}: {source}")]
    Base {
        line: usize,
        base: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("line {line}: {source}")]
    Layer {
        line: usize,
        #[source]
        source: Box<BuildError>,
    },
    #[error(
        "line {line}: {instruction}: exit code {exit_code}{}",
        output_block(output)
    )]
    RunFailed {
        line: usize,
        instruction: String,
        exit_code: i32,
        /// The end of the step's output.
        output: String,
    },
    #[error("interrupted before line {line}")]
    Interrupted { line: usize },
    #[error("line {line}: {instruction}: running the step: {reason}")]
    Runner {
        line: usize,
        instruction: String,
        reason: String,
    },
    #[error("line {line}: unpacking the stage's layers so far: {source}")]
    Lowers {
        line: usize,
        #[source]
        source: Box<UnpackError>,
    },
    #[error("unpacking stage {stage:?} for COPY --from: {source}")]
    Unpack {
        stage: String,
        #[source]
        source: Box<UnpackError>,
    },
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: Box<StoreError>,
    },
}

impl ContainerfileError {
    /// What kind of failure this is (see [`crate::ErrorKind`]): a bad file, source or option
    /// is the caller's to fix; an unsupported instruction is berth's gap.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            Self::Parse { .. }
            | Self::Instruction { .. }
            | Self::Source { .. }
            | Self::InvalidOption { .. }
            | Self::RunFailed { .. } => K::InvalidArgument,
            Self::Unsupported { .. } => K::Unsupported,
            Self::Base { source, .. } | Self::Store { source, .. } => source.kind(),
            Self::Io(_)
            | Self::Layer { .. }
            | Self::Unpack { .. }
            | Self::Lowers { .. }
            | Self::Interrupted { .. }
            | Self::Runner { .. } => K::Internal,
        }
    }
}

/// The step's output under the error line, or nothing when it wrote none.
fn output_block(output: &str) -> String {
    let output = output.trim_end();
    if output.is_empty() {
        String::new()
    } else {
        format!("\n--- the step's output (its end) ---\n{output}")
    }
}

pub(crate) type Result<T, E = ContainerfileError> = std::result::Result<T, E>;

pub(crate) fn store_err(what: impl Into<String>) -> impl FnOnce(StoreError) -> ContainerfileError {
    let what = what.into();
    move |source| ContainerfileError::Store {
        what,
        source: Box::new(source),
    }
}
