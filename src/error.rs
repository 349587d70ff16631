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

impl ErrorKind {
    /// Every kind, in the order of their C status codes.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::Io,
        ErrorKind::InvalidModel,
        ErrorKind::DoesNotFit,
        ErrorKind::Runtime,
    ];

    /// The kind's one name: the `kind` of the CLI's `--json` errors; in capitals after
    /// `DV_ERR_`, the name of its C status code (`capi::status_of`), which Python's
    /// `DistorchError.kind` reads back.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Io => "io",
            ErrorKind::InvalidModel => "invalid_model",
            ErrorKind::DoesNotFit => "does_not_fit",
            ErrorKind::Runtime => "runtime",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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

/// Deserializes a value through its `FromStr`, so a file accepts exactly what the command line
/// does and a bad value gets the same message (naming the valid choices). Reading the string
/// inside a visitor matters: serde_yaml then adds the value's own line and column to the error,
/// and its key path, so a message's own `field: ` prefix is left out (`crop: crop: ...`).
pub(crate) fn deserialize_parsed<'de, T, D>(
    d: D,
    expecting: &'static str,
    field: &'static str,
) -> std::result::Result<T, D::Error>
where
    T: std::str::FromStr<Err = Error>,
    D: serde::Deserializer<'de>,
{
    struct Parsed<T>(&'static str, &'static str, std::marker::PhantomData<T>);
    impl<T: std::str::FromStr<Err = Error>> serde::de::Visitor<'_> for Parsed<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<T, E> {
            s.parse().map_err(|e: Error| {
                let m = e
                    .message
                    .strip_prefix(self.1)
                    .and_then(|m| m.strip_prefix(": "));
                E::custom(m.unwrap_or(&e.message))
            })
        }
    }
    d.deserialize_str(Parsed(expecting, field, std::marker::PhantomData))
}

impl<R> From<ort::Error<R>> for Error {
    fn from(e: ort::Error<R>) -> Self {
        Error::runtime(format!("ONNX Runtime: {e}"))
    }
}
