//! Jobs: output files, model folders, batch encoding and YAML runs.

pub mod batch;
pub mod interrupt;
pub mod models;
pub mod out_guard;
pub mod output;
pub mod summary;
pub mod yaml;
