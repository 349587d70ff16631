//! The engine of each block's session (contract §6.4): resolving the `cpu_engine` choice
//! against the dtype and what is installed, and making a session builder for a block's engine
//! (MLAS: ONNX Runtime's CPU provider as it is; CUDA; OpenVINO's CPU or GPU device).

use std::path::{Path, PathBuf};

use ort::session::builder::SessionBuilder;

use super::openvino::{self, Availability, Hint, Plugin};
use crate::export::ComputeDtype;
use crate::plan::{CpuEngine, Device, Engine};
use crate::{Error, ErrorKind, Result};

/// What the loader resolved: the CPU blocks' engine, and the OpenVINO plugin when any block
/// runs on it.
#[derive(Clone, Debug, Default)]
pub struct Engines {
    pub cpu: Engine,
    pub openvino: Option<Plugin>,
    /// The compute dtype the user asked for (bf16 is OpenVINO's precision hint on fp32 graphs).
    pub dtype: ComputeDtype,
    /// Said once at load: why `auto` chose as it did, when it is worth saying.
    pub note: Option<String>,
    /// Where the plugin was looked for, when it was needed for `xpu:N` blocks and not found
    /// (the plan stands; [`check_usable`] fails the load).
    pub missing_plugin: Option<String>,
}

/// Resolves `choice` for a plan whose blocks execute on `exec`, with `explicit` the plugin
/// path the caller named (`--openvino-ep`, YAML `openvino_ep`, the C ABI option).
///
/// `auto` is OpenVINO when its plugin is found and the dtype runs there (fp32, bf16), else
/// MLAS: int8 graphs use ONNX Runtime's own quantised kernels and fp16 on the CPU is a
/// checking mode of MLAS. A missing plugin is an error only when something asks for it:
/// `openvino`, `bf16`, an `xpu:N` block, or an explicit path.
pub fn resolve(
    choice: CpuEngine,
    dtype: ComputeDtype,
    exec: &[Device],
    explicit: Option<&Path>,
) -> Result<Engines> {
    let on_cpu = exec.contains(&Device::Cpu);
    let on_xpu = exec.iter().any(|d| matches!(d, Device::Xpu(_)));
    // What needs OpenVINO's CPU device itself (a plugin path alone may be for xpu:N blocks).
    let need_cpu = match (choice, dtype) {
        _ if !on_cpu => None,
        (_, ComputeDtype::Bf16) => Some(NeedsCpu::Bf16),
        (CpuEngine::OpenVino, _) => Some(NeedsCpu::Engine),
        _ => None,
    };
    // What needs the plugin, for the message when it is missing.
    // (An xpu:N block needs it too, but only to load: a plan on a simulated xpu stands.)
    let need = need_cpu.map(NeedsCpu::option).or(explicit
        .is_some()
        .then_some("the OpenVINO plugin path given (`openvino_ep`)"));
    if on_cpu {
        check_cpu_choice(choice, dtype)?;
    }
    let wants_openvino_cpu = on_cpu
        && match choice {
            CpuEngine::Mlas => false,
            CpuEngine::OpenVino => true,
            CpuEngine::Auto => matches!(dtype, ComputeDtype::Fp32 | ComputeDtype::Bf16),
        };
    let mlas = |note: Option<String>, missing_plugin: Option<String>| Engines {
        cpu: Engine::Mlas,
        dtype,
        note,
        missing_plugin,
        ..Default::default()
    };
    // Load OpenVINO only when some block could run on it, or when the caller named the plugin.
    if !(wants_openvino_cpu || on_xpu || explicit.is_some()) {
        return Ok(mlas(int8_note(dtype, on_cpu, explicit), None));
    }
    let plugin = match openvino::plugin(explicit) {
        Ok(Availability::Ready(p)) => p,
        Ok(Availability::Missing { looked }) => {
            return match need {
                Some(what) => Err(Error::new(
                    ErrorKind::NotFound,
                    openvino::not_found_message(&looked, what),
                )),
                None if on_xpu => Ok(mlas(None, Some(looked))),
                None => Ok(mlas(
                    Some(format!(
                        "cpu_engine auto: the OpenVINO plugin is not installed, so CPU blocks run on mlas (looked in: {looked})"
                    )),
                    None,
                )),
            };
        }
        // Found but refused: an error when asked for, else MLAS with a warning.
        Err(e) if need.is_none() => {
            tracing::warn!("{}; CPU blocks run on mlas", e.message());
            return Ok(mlas(None, None));
        }
        Err(e) => return Err(e),
    };
    let (cpu, note) = if !wants_openvino_cpu {
        (Engine::Mlas, None)
    } else if plugin.cpu().is_some() {
        (Engine::OpenVino, None)
    } else if let Some(what) = need_cpu {
        return Err(Error::invalid(what.refusal(&plugin)));
    } else {
        let note = format!(
            "cpu_engine auto: CPU blocks run on mlas, not OpenVINO: {}",
            plugin.no_cpu_reason()
        );
        (Engine::Mlas, Some(note))
    };
    Ok(Engines {
        cpu,
        openvino: Some(plugin),
        dtype,
        note,
        ..Default::default()
    })
}

/// What asked for OpenVINO's CPU device, for the refusal where the plugin lists none (an
/// invalid choice on this machine, like bf16 on a CPU without a bf16 unit).
#[derive(Clone, Copy)]
enum NeedsCpu {
    Bf16,
    Engine,
}

impl NeedsCpu {
    /// The option that asked, as the library names it.
    fn option(self) -> &'static str {
        match self {
            NeedsCpu::Bf16 => "`dtype=bf16`",
            NeedsCpu::Engine => "`cpu_engine=openvino`",
        }
    }

    fn refusal(self, plugin: &Plugin) -> String {
        let (what, instead) = match self {
            NeedsCpu::Bf16 => (
                "dtype: bf16",
                "dtypes that work here: fp32 (the reference) and int8 (approximate, faster), both on mlas",
            ),
            NeedsCpu::Engine => (
                "cpu_engine: openvino",
                "use `cpu_engine=mlas`, or `cpu_engine=auto`, which picks mlas here",
            ),
        };
        format!(
            "{what} runs on OpenVINO's CPU device, which the OpenVINO plugin ({}) does not offer here: {}; {instead}",
            plugin.path.display(),
            plugin.no_cpu_reason()
        )
    }
}

/// Refuses a CPU engine and dtype that do not run together, and bf16 on a CPU without a bf16
/// unit.
fn check_cpu_choice(choice: CpuEngine, dtype: ComputeDtype) -> Result<()> {
    let refused = match (choice, dtype) {
        (CpuEngine::Mlas, ComputeDtype::Bf16) => "dtype: bf16 runs on OpenVINO's CPU device, but cpu_engine is mlas (use `cpu_engine=openvino` or `cpu_engine=auto`, or `dtype=fp32` or `dtype=int8` on mlas)",
        (CpuEngine::OpenVino, ComputeDtype::Int8) => "cpu_engine: openvino does not run the int8 graphs (ONNX Runtime's own quantised MatMul); use `cpu_engine=mlas` or `cpu_engine=auto` for int8, or `dtype=bf16` for OpenVINO's fast path",
        (CpuEngine::OpenVino, ComputeDtype::Fp16) => "cpu_engine: openvino does not run fp16 on the CPU (fp16 is for GPUs); use `dtype=fp32` or `dtype=bf16` on openvino, or `cpu_engine=mlas`",
        _ if dtype == ComputeDtype::Bf16 => return super::dtype::bf16_cpu().map(drop),
        _ => return Ok(()),
    };
    Err(Error::invalid(refused))
}

/// Checks that `device` can run here with `engines` (before any export or session work): an
/// `xpu:N` needs the plugin, listing Intel GPU N. CUDA devices are `gpu::check_usable`'s.
pub fn check_usable(device: Device, engines: &Engines) -> Result<()> {
    let Device::Xpu(n) = device else {
        return Ok(());
    };
    let Some(plugin) = &engines.openvino else {
        let looked = engines.missing_plugin.as_deref().unwrap_or("nowhere");
        return Err(Error::new(
            ErrorKind::NotFound,
            openvino::not_found_message(looked, &format!("device {device}")),
        ));
    };
    if plugin.xpu(n).is_none() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "device {device}: the OpenVINO plugin ({}) lists no Intel GPU {n} on this machine (its devices: {}); a plan on a simulated {device} runs only where that GPU exists",
                plugin.path.display(),
                plugin.device_list()
            ),
        ));
    }
    Ok(())
}

/// On an Intel CPU with AMX and the plugin installed, int8 is not the most accurate choice at
/// its speed (BENCHMARKS.md: bf16 ran at 0.93× int8's speed, cosine 0.99998 against 0.9998):
/// say so. Not said elsewhere: without AMX bf16 was not measured that fast, and the plugin
/// offers no device on other vendors' CPUs.
fn int8_note(dtype: ComputeDtype, on_cpu: bool, explicit: Option<&Path>) -> Option<String> {
    if dtype != ComputeDtype::Int8 || !on_cpu || super::dtype::bf16_cpu().ok()? != "AMX" {
        return None;
    }
    openvino::host_cpu().filter(|c| c.plugin_serves_it())?;
    openvino::find(explicit).ok()?;
    Some(
        "dtype int8 runs on mlas; this CPU has AMX and the OpenVINO plugin is installed, where `dtype=bf16` ran about as fast as int8 and much closer to fp32"
            .to_string(),
    )
}

/// The OpenVINO model cache of an export for one device and precision hint: compiled blocks
/// are kept beside their graphs. One folder per device and hint, because the plugin's cache
/// (onnxruntime-ep-openvino 1.8.1) keys a blob on the graph alone: a bf16 load after an f32
/// one imported the f32 blob and returned NaN (seen here), and the other order would give
/// fp32 results computed in bf16.
pub fn cache_dir(export_dir: &Path, ov_device: &str, hint: Hint) -> PathBuf {
    let device: String = ov_device
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    export_dir
        .join(crate::export::COMPILED_CACHE_DIR)
        .join(format!("{device}-{}", hint.as_str()))
}

/// ONNX Runtime's own CPU provider, named explicitly. `ort` gives every session builder the
/// automatic device policy `MaxEfficiency`, under which ONNX Runtime places a session with
/// no provider appended on a plugin's device when one is registered: with the OpenVINO plugin
/// loaded, "MLAS" sessions ran on OpenVINO with its default precision (bf16 on AMX CPUs), seen
/// here as fp32 outputs 0.02 off and int8 embeddings at cosine 0.9988 instead of 0.9994.
pub fn mlas(builder: SessionBuilder) -> Result<SessionBuilder> {
    let env = super::environment()?;
    let cpu: Vec<_> = env
        .devices()
        .filter(|d| d.ep().ok() == Some(CPU_EP))
        .take(1)
        .collect();
    if cpu.is_empty() {
        return Err(Error::runtime(format!(
            "ONNX Runtime lists no {CPU_EP} device"
        )));
    }
    builder
        .with_devices(cpu, None)
        .map_err(|e| Error::runtime(format!("appending {CPU_EP}: {e}")))
}

const CPU_EP: &str = "CPUExecutionProvider";

/// Registers `engine` on `builder` for a block executing on `exec`.
pub fn configure(
    builder: SessionBuilder,
    exec: Device,
    engine: Engine,
    engines: &Engines,
    export_dir: &Path,
) -> Result<SessionBuilder> {
    match engine {
        Engine::Mlas => mlas(builder),
        Engine::Cuda => super::gpu::register(builder, exec),
        Engine::OpenVino => {
            let plugin = engines.openvino.as_ref().ok_or_else(|| {
                Error::runtime("a block runs on OpenVINO, but its plugin was not loaded")
            })?;
            let (device, hint) = match exec {
                Device::Cpu => (
                    plugin.cpu(),
                    if engines.dtype == ComputeDtype::Bf16 {
                        Hint::Bf16
                    } else {
                        Hint::F32
                    },
                ),
                Device::Xpu(n) => (
                    plugin.xpu(n),
                    if engines.dtype == ComputeDtype::Fp16 {
                        Hint::F16
                    } else {
                        Hint::F32
                    },
                ),
                Device::Cuda(_) => (None, Hint::F32),
            };
            let device = device.ok_or_else(|| {
                Error::runtime(format!(
                    "the OpenVINO plugin lists no device for {} (its devices: {})",
                    exec,
                    plugin.device_list()
                ))
            })?;
            let cache = cache_dir(export_dir, &device.ov_device, hint);
            openvino::register(builder, device, hint, Some(&cache))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_combinations_name_the_library_options_not_cli_flags() {
        // Refused before any plugin is looked for, on any CPU. Python and C callers read these
        // messages as they are; the CLI shows the options as its flags (`cli/flags.rs`).
        for (choice, dtype, want) in [
            (CpuEngine::Mlas, ComputeDtype::Bf16, "`cpu_engine=openvino`"),
            (CpuEngine::OpenVino, ComputeDtype::Int8, "`cpu_engine=mlas`"),
            (CpuEngine::OpenVino, ComputeDtype::Fp16, "`dtype=fp32`"),
        ] {
            let e = resolve(choice, dtype, &[Device::Cpu], None).unwrap_err();
            let m = e.message();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{m}");
            assert!(
                m.contains(want) && !m.contains("--"),
                "{choice} {dtype}: {m}"
            );
        }
        let e = super::super::dtype::check(ComputeDtype::Bf16, &[Device::Cuda(0)]).unwrap_err();
        assert!(
            e.message().contains("`device=cpu`") && !e.message().contains("--"),
            "{e}"
        );
    }
}
