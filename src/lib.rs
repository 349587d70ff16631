//! distorch-vision: CLIP Vision encoders split into per-block ONNX Runtime sessions,
//! placed across GPUs and the CPU by a DisTorch2 planner.

pub mod error;
pub mod image;

pub use error::{Error, ErrorKind, Result};
