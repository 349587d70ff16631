//! ONNX Runtime: library discovery, the process environment, and the block runner.

pub mod bench;
pub mod device;
pub mod env;
pub mod library;
pub mod pipeline;

pub use env::{environment, set_library_path};
pub use pipeline::{resolve_outputs, Outputs, Pipeline, StagePlan};
