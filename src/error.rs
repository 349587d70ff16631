//! One error type for the whole library: a kind (which the C ABI maps to a status code)
//! and a message meant for a person, naming the bad value and what would be valid.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A value given by the caller is malformed or out of range.
    InvalidArgument,
    /// A file, model name or device does not exist.
    NotFound,
    /// Reading or writing a file failed.
    Io,
    /// A model file (safetensors or config) is broken or not a CLIP Vision model.
    InvalidModel,
    /// The plan does not fit the devices' memory.
    DoesNotFit,
    /// ONNX Runtime or CUDA is missing or refused the request.
    Runtime,
}

#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn model(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidModel, message)
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Runtime, message)
    }
    pub fn io(path: &std::path::Path, err: std::io::Error) -> Self {
        let kind = if err.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        Self::new(kind, format!("{}: {}", path.display(), err))
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Prefixes the message with what was being done, keeping the kind.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl<R> From<ort::Error<R>> for Error {
    fn from(e: ort::Error<R>) -> Self {
        Error::runtime(format!("ONNX Runtime: {e}"))
    }
}
