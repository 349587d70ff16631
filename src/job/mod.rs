//! Jobs: output files, batch encoding and YAML runs.

pub mod batch;
pub mod interrupt;
pub mod out_guard;
pub mod output;
pub mod summary;
pub mod yaml;
