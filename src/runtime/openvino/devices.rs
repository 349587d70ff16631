//! The plugin registered with the process's environment (once: ONNX Runtime keeps one
//! registration per name for the environment's life) and the devices it lists.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::memory::DeviceType;
use ort::AsPointer;
use serde::Serialize;

use super::library;
use crate::runtime::environment;
use crate::{Error, Result};

/// The name the plugin's devices carry (`EpDevice_EpName`). The plugin also makes factories
/// for OpenVINO's meta devices (`OpenVINOExecutionProvider.AUTO`, ...), which are left out:
/// a block runs on one named device.
pub const EP_NAME: &str = "OpenVINOExecutionProvider";
/// The name the library is registered under in the environment.
const REGISTRATION: &str = "distorch-vision-openvino";

/// What kind of device OpenVINO runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cpu,
    Gpu,
    Npu,
}

/// One device the plugin lists.
#[derive(Clone, Debug, Serialize)]
pub struct OvDevice {
    /// OpenVINO's name of it: `CPU`, `GPU`, `GPU.1`, `NPU`.
    pub ov_device: String,
    pub kind: Kind,
    /// `xpu:N` for the Nth GPU in the plugin's order; `None` for the CPU and NPUs.
    pub xpu: Option<u32>,
    /// `FULL_DEVICE_NAME`, or the OpenVINO name when the plugin gives none.
    pub name: String,
    /// `OPTIMIZATION_CAPABILITIES`: the precisions it computes in (`BF16 FP32 FP16 INT8 ...`).
    pub capabilities: Vec<String>,
    /// Device memory from `GPU_DEVICE_TOTAL_MEM_SIZE` (GPUs), when the plugin reports it.
    pub total_bytes: Option<u64>,
    /// Every metadata entry the plugin gives, as it gives them.
    pub metadata: BTreeMap<String, String>,
}

/// Intel's PCI vendor id. The plugin (onnxruntime-ep-openvino 1.8.1, `ov_factory.cc`
/// `GetSupportedDevices`) offers a device only when ONNX Runtime's hardware device carries it:
/// on an AMD CPU it registers and lists nothing.
const INTEL_VENDOR_ID: u32 = 0x8086;

/// This machine's CPU as ONNX Runtime describes it to plugins.
#[derive(Clone, Debug, Serialize)]
pub struct HostCpu {
    pub vendor: String,
    pub vendor_id: u32,
}

impl HostCpu {
    /// Whether the plugin offers a CPU of this vendor (Intel's only).
    pub fn plugin_serves_it(&self) -> bool {
        self.vendor_id == INTEL_VENDOR_ID
    }
}

/// ONNX Runtime's CPU device (its CPU provider's hardware device); no plugin needed.
pub fn host_cpu() -> Option<HostCpu> {
    let env = environment().ok()?;
    let cpu = env
        .devices()
        .map(|d| d.hardware_device())
        .find(|h| h.ty() == DeviceType::CPU)?;
    // SAFETY: a live hardware device of the environment.
    let vendor_id = unsafe { (ort::api().HardwareDevice_VendorId)(cpu.ptr()) };
    Some(HostCpu {
        vendor: cpu.vendor().unwrap_or("unknown").to_string(),
        vendor_id,
    })
}

/// The plugin, registered.
#[derive(Clone, Debug, Serialize)]
pub struct Plugin {
    pub path: PathBuf,
    pub devices: Vec<OvDevice>,
    /// The CPU the plugin was offered (it takes only Intel's).
    pub host_cpu: Option<HostCpu>,
}

impl Plugin {
    /// Why the plugin lists no CPU device, for messages.
    pub fn no_cpu_reason(&self) -> String {
        match &self.host_cpu {
            Some(c) if !c.plugin_serves_it() => format!(
                "the plugin offers Intel devices only, and ONNX Runtime reports this CPU as {}'s (vendor id {:#06x})",
                c.vendor, c.vendor_id
            ),
            _ => format!(
                "the plugin lists no CPU device (its devices: {})",
                self.device_list()
            ),
        }
    }
    pub fn cpu(&self) -> Option<&OvDevice> {
        self.devices.iter().find(|d| d.kind == Kind::Cpu)
    }
    pub fn xpu(&self, n: u32) -> Option<&OvDevice> {
        self.devices.iter().find(|d| d.xpu == Some(n))
    }
    /// `CPU, GPU.0 (xpu:0)` for messages.
    pub fn device_list(&self) -> String {
        let list: Vec<String> = self
            .devices
            .iter()
            .map(|d| match d.xpu {
                Some(n) => format!("{} (xpu:{n})", d.ov_device),
                None => d.ov_device.clone(),
            })
            .collect();
        if list.is_empty() {
            "none".into()
        } else {
            list.join(", ")
        }
    }
}

/// Whether the plugin is here.
#[derive(Clone, Debug)]
pub enum Availability {
    Ready(Plugin),
    /// Not found; every place looked in.
    Missing {
        looked: String,
    },
}

enum Registration {
    NotYet,
    Registered(PathBuf),
    /// Registering this file failed (kept, so every later call says the same at no cost).
    Failed(PathBuf, String),
}

static STATE: Mutex<Registration> = Mutex::new(Registration::NotYet);

/// The plugin found from `explicit` (see [`library::candidates`]), registered with the
/// environment on first use. `Missing` when no file is found; `Err` when a file is found and
/// ONNX Runtime refuses it, or when another file is already registered in this process.
pub fn plugin(explicit: Option<&Path>) -> Result<Availability> {
    let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let path = match &*st {
        Registration::Registered(p) => {
            if let Some(e) = explicit {
                let want = library::find(Some(e)).unwrap_or_else(|_| e.to_path_buf());
                if !same_file(&want, p) {
                    return Err(Error::invalid(format!(
                        "openvino_ep: the OpenVINO plugin is already loaded from {} in this process; it cannot be switched to {}",
                        p.display(),
                        want.display()
                    )));
                }
            }
            p.clone()
        }
        Registration::Failed(p, msg) => {
            return Err(Error::runtime(format!(
                "the OpenVINO plugin {} could not be registered with ONNX Runtime: {msg}",
                p.display()
            )))
        }
        Registration::NotYet => {
            let path = match library::find(explicit) {
                Ok(p) => p,
                Err(looked) => return Ok(Availability::Missing { looked }),
            };
            let env = environment()?;
            // ONNX Runtime's environment is one per process, shared by every copy of this
            // library in it (the CLI's or a host's rlib beside a dlopen()ed plugin): another copy
            // may have registered the plugin under this name already, which is as good. (The
            // name is this library's own; the devices cannot tell, as on a CPU the plugin does
            // not serve it lists none.)
            let keep = super::KeepLocale::new();
            let registered = env.register_ep_library(REGISTRATION, &path).or_else(|e| {
                let by_another_copy = e.to_string().contains("already registered");
                if by_another_copy {
                    Ok(())
                } else {
                    Err(e)
                }
            });
            drop(keep);
            if let Err(e) = registered {
                let msg = e.to_string();
                *st = Registration::Failed(path.clone(), msg.clone());
                return Err(Error::runtime(format!(
                    "the OpenVINO plugin {} could not be registered with ONNX Runtime {}: {msg}",
                    path.display(),
                    crate::runtime::library::ORT_VERSION
                )));
            }
            tracing::debug!("OpenVINO plugin registered from {}", path.display());
            // Releasing OpenVINO's sessions from inside a host's dlclose() of this library
            // crashed at exit (tests/c_host `dlclose`): once it is in, this library stays
            // loaded until the process exits, where the usual exit-time shutdown releases it.
            crate::paths::pin_own_library();
            *st = Registration::Registered(path.clone());
            path
        }
    };
    drop(st);
    Ok(Availability::Ready(Plugin {
        devices: list_devices()?,
        host_cpu: host_cpu(),
        path,
    }))
}

/// Unregisters the plugin from `env` when this library registered it (called by
/// `runtime::env::shutdown` after the sessions are released, before the environment goes).
/// So the plugin goes while this library, whose logger the environment calls, is loaded.
pub(crate) fn unregister(env: &ort::environment::Environment) {
    let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if !matches!(*st, Registration::Registered(_)) {
        return;
    }
    let name = std::ffi::CString::new(REGISTRATION).expect("no NUL in the name");
    // SAFETY: a live environment and a NUL-terminated name; the sessions using the plugin
    // were released before.
    let status = unsafe {
        (ort::api().UnregisterExecutionProviderLibrary)(env.ptr().cast_mut(), name.as_ptr())
    };
    match crate::runtime::env::check_status(status, "unregistering the OpenVINO plugin") {
        Ok(()) => *st = Registration::NotYet,
        Err(e) => tracing::warn!("{e}"),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The plugin's devices in the environment's order, GPUs numbered as `xpu:N` in that order.
fn list_devices() -> Result<Vec<OvDevice>> {
    let env = environment()?;
    let mut out = Vec::new();
    let mut gpus = 0;
    for d in env.devices() {
        if d.ep().ok() != Some(EP_NAME) {
            continue;
        }
        let metadata = key_values(ort_metadata(&d));
        let kind = match d.hardware_device().ty() {
            DeviceType::CPU => Kind::Cpu,
            DeviceType::GPU => Kind::Gpu,
            DeviceType::NPU => Kind::Npu,
            _ => continue,
        };
        let xpu = (kind == Kind::Gpu).then(|| {
            gpus += 1;
            gpus - 1
        });
        let ov_device = metadata
            .get("ov_device")
            .cloned()
            .unwrap_or_else(|| format!("{kind:?}").to_uppercase());
        out.push(OvDevice {
            name: metadata
                .get("FULL_DEVICE_NAME")
                .cloned()
                .unwrap_or_else(|| ov_device.clone()),
            capabilities: metadata
                .get("OPTIMIZATION_CAPABILITIES")
                .map(|c| c.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            total_bytes: metadata
                .get("GPU_DEVICE_TOTAL_MEM_SIZE")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&b| b > 0),
            ov_device,
            kind,
            xpu,
            metadata,
        });
    }
    Ok(out)
}

/// The OpenVINO device name (`ov_device` metadata) of one of the environment's devices.
pub(super) fn ov_device_of(d: &ort::device::Device<'_>) -> Option<String> {
    key_values(ort_metadata(d)).remove("ov_device")
}

/// The EP metadata of one device (owned by ONNX Runtime; valid while the environment is).
fn ort_metadata(d: &ort::device::Device<'_>) -> *const ort::sys::OrtKeyValuePairs {
    // SAFETY: `d` is a live device of the environment.
    unsafe { (ort::api().EpDevice_EpMetadata)(d.ptr()) }
}

/// Copies an `OrtKeyValuePairs` into a map (null = empty).
fn key_values(kvps: *const ort::sys::OrtKeyValuePairs) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if kvps.is_null() {
        return out;
    }
    let (mut keys, mut values, mut n) = (std::ptr::null(), std::ptr::null(), 0usize);
    // SAFETY: ONNX Runtime fills two arrays of `n` NUL-terminated strings owned by `kvps`.
    unsafe {
        (ort::api().GetKeyValuePairs)(kvps, &mut keys, &mut values, &mut n);
        if keys.is_null() || values.is_null() {
            return out;
        }
        for i in 0..n {
            let (k, v) = (*keys.add(i), *values.add(i));
            if k.is_null() || v.is_null() {
                continue;
            }
            out.insert(
                CStr::from_ptr(k).to_string_lossy().into_owned(),
                CStr::from_ptr(v).to_string_lossy().into_owned(),
            );
        }
    }
    out
}

/// The plugin's status for `devices`: where it was loaded from and its devices, or why not.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub found: bool,
    pub library: Option<String>,
    pub devices: Vec<OvDevice>,
    /// Why it cannot be used, or why it lists no devices.
    pub reason: Option<String>,
}

/// The status of the plugin found from `explicit`; registers it (loads OpenVINO) when found.
pub fn status(explicit: Option<&Path>) -> Status {
    match plugin(explicit) {
        Ok(Availability::Ready(p)) => Status {
            found: true,
            library: Some(p.path.display().to_string()),
            reason: p.devices.is_empty().then(|| p.no_cpu_reason()),
            devices: p.devices,
        },
        Ok(Availability::Missing { looked }) => Status {
            found: false,
            library: None,
            devices: Vec::new(),
            reason: Some(missing_reason(&looked, explicit.is_some())),
        },
        Err(e) => Status {
            found: true,
            library: None,
            devices: Vec::new(),
            reason: Some(e.message().to_string()),
        },
    }
}

/// Why `devices` shows no plugin: an optional part not installed (what it would add), or not
/// at the path the caller gave.
fn missing_reason(looked: &str, explicit: bool) -> String {
    let what = if explicit {
        "not found"
    } else {
        "not installed (optional: the openvino CPU engine, dtype bf16, Intel GPUs as xpu:N)"
    };
    format!("{what}; looked in: {looked}; {}", library::INSTALL_HINT)
}

impl Status {
    /// Lines for `devices`: one for the plugin, one per device with its capabilities.
    pub fn render(&self) -> String {
        let Some(lib) = &self.library else {
            let reason = self.reason.as_deref().unwrap_or("unknown reason");
            // Found but failing is a fault; not installed is a choice.
            return if self.found {
                format!("OpenVINO plugin: not usable: {reason}\n")
            } else {
                format!("OpenVINO plugin: {reason}\n")
            };
        };
        let mut out = format!("OpenVINO plugin: {lib}\n");
        if self.devices.is_empty() {
            let reason = self.reason.as_deref().unwrap_or("none reported");
            out.push_str(&format!("  no devices here: {reason}\n"));
        }
        for d in &self.devices {
            let place = match (d.kind, d.xpu) {
                (Kind::Cpu, _) => "cpu (--cpu-engine openvino)".to_string(),
                (Kind::Gpu, Some(n)) => format!("xpu:{n}"),
                _ => "not used".to_string(),
            };
            let mem = d
                .total_bytes
                .map(|b| format!(", {}", crate::plan::format_bytes(b)))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<8} {:<28} {}{mem}; computes in {}\n",
                d.ov_device,
                place,
                d.name,
                if d.capabilities.is_empty() {
                    "(not reported)".to_string()
                } else {
                    d.capabilities.join(" ")
                }
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_calls_a_missing_plugin_optional_and_a_failing_one_not_usable() {
        let status = |found: bool, reason: String| Status {
            found,
            library: None,
            devices: Vec::new(),
            reason: Some(reason),
        };
        let missing = status(
            false,
            missing_reason("/p (the checkout's .runtime/openvino/)", false),
        );
        let line = missing.render();
        assert!(
            line.starts_with("OpenVINO plugin: not installed (optional")
                && line.contains("/p (the checkout's")
                && line.contains("pip install onnxruntime-ep-openvino==1.8.1")
                && !line.contains("not usable"),
            "{line}"
        );
        let named = status(false, missing_reason("/x (the explicit plugin path)", true)).render();
        assert!(
            named.starts_with("OpenVINO plugin: not found; looked in: /x"),
            "{named}"
        );
        let broken = status(true, "registering it failed".into()).render();
        assert_eq!(
            broken,
            "OpenVINO plugin: not usable: registering it failed\n"
        );
    }
}
