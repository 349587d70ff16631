//! ONNX Runtime: library discovery, the process environment, and the block runner.

pub mod cuda;
pub mod device;
pub mod dtype;
pub mod env;
pub mod gpu_runner;
pub mod heap;
pub mod library;
pub mod microbatch;
pub mod pinned;
pub mod pipeline;
pub mod route;
pub mod staging;

pub use env::{environment, set_library_path, shutdown};
pub use pipeline::{resolve_outputs, Outputs, Pipeline, StagePlan};
