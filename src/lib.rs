//! distorch-vision: CLIP Vision encoders split into per-block ONNX Runtime sessions,
//! placed across GPUs and the CPU by a DisTorch2 planner.

pub mod bench;
pub mod capi;
pub mod error;
pub mod export;
pub mod image;
pub mod job;
pub mod loader;
pub mod model;
pub mod paths;
pub mod plan;
pub mod runtime;

pub use error::{Error, ErrorKind, Result};
