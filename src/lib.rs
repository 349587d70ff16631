//! distorch-vision: CLIP Vision encoders split into per-block ONNX Runtime sessions,
//! placed across GPUs and the CPU by a DisTorch2 planner.

pub mod capi;
pub mod error;
pub mod plan;

pub use error::{Error, ErrorKind, Result};
pub mod export;
pub mod job;
pub mod loader;
pub mod model;
pub mod runtime;
