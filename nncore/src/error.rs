//! The crate's one error type.

use std::fmt;

/// Where in a model an error happened: `SimpleNet.fc2 (Linear)`.
///
/// A layer reports an error with only its own type name (`Linear`); every
/// derived module the error passes through on its way out prepends the field
/// name and records its own type name as the root, so the error that reaches
/// the user names the whole path from the outermost model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModulePath {
    root: Option<String>,
    fields: Vec<String>,
    module: String,
}

impl ModulePath {
    /// The path of a module called directly, not through a parent: just its
    /// type name, such as `Linear`.
    #[must_use]
    pub fn leaf(module: impl Into<String>) -> Self {
        Self {
            root: None,
            fields: Vec::new(),
            module: module.into(),
        }
    }

    /// Records that the module sat in field `field` of a parent whose type
    /// name is `parent`.
    pub fn push_parent(&mut self, field: &str, parent: &str) {
        self.fields.insert(0, field.to_owned());
        self.root = Some(parent.to_owned());
    }

    /// The type name of the module the error came from (`Linear`).
    #[must_use]
    pub fn module(&self) -> &str {
        &self.module
    }

    /// The dotted field path below the outermost model (`fc2`, or
    /// `encoder.fc`); empty when the module was called directly.
    #[must_use]
    pub fn fields(&self) -> String {
        self.fields.join(".")
    }
}

impl fmt::Display for ModulePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.root {
            None => f.write_str(&self.module),
            Some(root) => {
                f.write_str(root)?;
                for field in &self.fields {
                    write!(f, ".{field}")?;
                }
                write!(f, " ({})", self.module)
            }
        }
    }
}

/// Every error nncore reports.
///
/// Errors raised inside a model carry a [`ModulePath`], so that a shape
/// mismatch reads `SimpleNet.fc2 (Linear): expected input with 50 features,
/// got 60`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input's feature count (columns) is not what the layer takes.
    #[error("{path}: expected input with {expected} features, got {got}")]
    FeatureMismatch {
        /// Where it happened.
        path: ModulePath,
        /// The features the layer takes.
        expected: usize,
        /// The features of the input it was given.
        got: usize,
    },
    /// Any other input the module cannot take.
    #[error("{path}: {message}")]
    InvalidInput {
        /// Where it happened.
        path: ModulePath,
        /// What was wrong.
        message: String,
    },
    /// `backward` was called without a `forward_train` before it, or twice
    /// for one `forward_train`.
    #[error(
        "{path}: backward called without a recorded forward (call `forward_train` before each `backward`)"
    )]
    NoRecordedForward {
        /// Where it happened.
        path: ModulePath,
    },
    /// Two tensors that must agree in shape do not (a loss's input and
    /// target, a gradient and the output it belongs to, ...).
    #[error("{context}: shape mismatch: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// What was being computed.
        context: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape that came.
        got: Vec<usize>,
    },
    /// An argument is outside what the function accepts (a class label
    /// out of range, a NaN target, a negative learning rate, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// Loading a state dict failed; the message lists every problem, as
    /// PyTorch's `load_state_dict` does.
    #[error("{0}")]
    LoadStateDict(crate::LoadError),
    /// A parameter or buffer holds NaN or an infinity (see
    /// `ModuleExt::check_finite`).
    #[error("{kind} {name} holds a non-finite value ({value} at flat index {index})", kind = if *is_buffer { "buffer" } else { "parameter" })]
    NonFinite {
        /// The parameter's or buffer's dotted name.
        name: String,
        /// The row-major index of the first such value.
        index: usize,
        /// The value.
        value: f32,
        /// Whether it is a buffer (a running statistic) rather than a
        /// parameter.
        is_buffer: bool,
    },
    /// A gradient check found the backward pass disagreeing with finite
    /// differences (see `GradCheck`).
    #[error("gradient check failed: {0}")]
    GradCheck(String),
    /// Safetensors data is malformed, truncated or hostile.
    #[error("invalid safetensors data: {0}")]
    Format(String),
    /// A safetensors file is malformed, truncated or hostile.
    #[error("{}: invalid safetensors file: {message}", path.display())]
    InvalidFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An I/O error, with the file it concerned.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Adds one level of module path to an error raised inside field
    /// `field` of a module whose type name is `parent`. Errors without a
    /// module path are returned unchanged. The derive calls this for every
    /// child; hand-written `forward`s can too.
    #[must_use]
    pub fn within(mut self, field: &str, parent: &str) -> Self {
        if let Some(path) = self.path_mut() {
            path.push_parent(field, parent);
        }
        self
    }

    /// A gradient handed to `module`'s backward whose shape is not its
    /// output's.
    #[must_use]
    pub fn gradient_shape(module: &str, expected: (usize, usize), got: (usize, usize)) -> Self {
        Error::InvalidInput {
            path: ModulePath::leaf(module),
            message: format!(
                "expected gradient of shape [{}, {}], got [{}, {}]",
                expected.0, expected.1, got.0, got.1
            ),
        }
    }

    /// The module path the error carries, if it came from inside a module.
    #[must_use]
    pub fn path(&self) -> Option<&ModulePath> {
        match self {
            Error::FeatureMismatch { path, .. }
            | Error::InvalidInput { path, .. }
            | Error::NoRecordedForward { path } => Some(path),
            _ => None,
        }
    }

    fn path_mut(&mut self) -> Option<&mut ModulePath> {
        match self {
            Error::FeatureMismatch { path, .. }
            | Error::InvalidInput { path, .. }
            | Error::NoRecordedForward { path } => Some(path),
            _ => None,
        }
    }
}

/// The message, as `Display` gives it: what `fn main() -> Result<(),
/// nncore::Error>` prints when it returns an error (`Error: SimpleNet.fc2
/// (Linear): expected input with 50 features, got 60`), rather than the
/// variant's fields (every message already names its cause).
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_display_grows_outwards() {
        let e = Error::FeatureMismatch {
            path: ModulePath::leaf("Linear"),
            expected: 50,
            got: 60,
        };
        assert_eq!(
            e.to_string(),
            "Linear: expected input with 50 features, got 60"
        );
        let e = e.within("fc", "Inner").within("encoder", "Outer");
        assert_eq!(
            e.to_string(),
            "Outer.encoder.fc (Linear): expected input with 50 features, got 60"
        );
        assert_eq!(e.path().unwrap().fields(), "encoder.fc");
    }
}
