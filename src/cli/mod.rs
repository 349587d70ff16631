//! The command line: flags, logging, one function per verb, output helpers.

pub mod args;
pub mod cmd;
pub mod flags;
pub mod logging;
pub mod print;
