//! OpenVINO as an ONNX Runtime plugin execution provider (contract §6.4): PyPI's
//! `onnxruntime-ep-openvino` loaded into the stock `onnxruntime` with
//! `RegisterExecutionProviderLibrary`, its devices from `GetEpDevices`, and sessions on one of
//! them through `SessionOptionsAppendExecutionProvider_V2` (`ort`'s `register_ep_library`,
//! `Environment::devices` and `SessionBuilder::with_devices`).
//!
//! - `library`: finding the plugin file.
//! - `devices`: registering it once per process; the devices it lists (CPU, Intel GPUs as
//!   `xpu:N`, NPUs) with their capabilities and memory.
//! - `session`: a session on one OpenVINO device, with the precision hint always set.
//! - `locale`: the host's C locale kept across calls into OpenVINO (which sets it to "C").
//!
//! UNVERIFIED: Intel GPUs (`xpu:N`) have not run here (no Intel GPU on the development
//! machine): the GPU listing, its memory key and the GPU `load_config` follow the plugin's
//! and OpenVINO's documented names.

mod devices;
mod library;
mod locale;
mod session;

pub(crate) use devices::unregister;
pub use devices::{
    host_cpu, plugin, status, Availability, HostCpu, Kind, OvDevice, Plugin, Status, EP_NAME,
};
pub use library::{
    candidates, find, not_found_message, ENV_VAR, INSTALL_HINT, PLUGIN_LIB, PLUGIN_VERSION,
};
pub(crate) use locale::{build_lock, KeepLocale};
pub use session::{load_config, register, Hint};
