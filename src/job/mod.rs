//! Jobs: output files (and, with the batch-encoding issue, YAML runs and sharded writers).

pub mod output;
