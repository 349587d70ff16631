//! ONNX Runtime: library discovery, the process environment, and the block runner.

pub mod dtype;
pub mod engine;
pub mod env;
pub mod gpu;
pub mod heap;
pub mod library;
pub mod microbatch;
pub mod openvino;
pub mod pass_input;
pub mod pipeline;
pub mod route;

pub use env::{environment, set_library_path, shutdown};
pub use pipeline::{Pipeline, StagePlan};
