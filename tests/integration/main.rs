//! The integration tests that can share a process, linked into one test binary
//! (`cargo test --test integration`; one file = one module, e.g. `cargo test --test integration
//! batch::`). One binary instead of one per file saves most of the link time and disk of the
//! tests. Their tests run on parallel threads of this one process, so a test here must not
//! change process-wide state (environment variables, `dv_shutdown`), depend on what the
//! process-wide model registry holds, or need ONNX Runtime unloaded or a quiet process.
//!
//! The tests that do stay in `tests/*.rs`, one binary each: `capi_leak` (RSS measurements),
//! `capi_init_retry` (ONNX Runtime must not be loaded yet when its wrong-path `dv_init` runs),
//! `capi_ort_search` (clears `PATH` and `ORT_DYLIB_PATH`), `capi_shutdown` (`dv_shutdown` ends
//! ONNX Runtime for the process), `eject` (asserts which models the registry holds),
//! `bench_guard` (a speed ratio, measured with no other test running) and `valgrind` (slow,
//! selectable on its own).

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod batch;
mod capi_c_host;
mod capi_mirrors;
mod capi_model_info;
mod capi_plugin;
mod capi_preprocess_encoded;
mod capi_python;
mod capi_sync;
mod clean;
mod cli_ux;
mod docs_sync;
mod families;
mod gpu_path;
mod image_parity;
mod model_folders;
mod naflex;
mod openvino;
mod pipeline;
mod plan_cli;
mod plan_props;
mod scripts;
mod versions;
mod yaml_runs;
