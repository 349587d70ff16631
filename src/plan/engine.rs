//! Which engine runs a block (contract §6.4): ONNX Runtime's own CPU kernels (MLAS), OpenVINO
//! through its ONNX Runtime plugin (CPU blocks by choice, `xpu:N` blocks always), or CUDA.
//! The user chooses the CPU engine ([`CpuEngine`]); the loader resolves `auto` against what
//! is installed and the dtype, and the plan names the [`Engine`] of every block.

use std::fmt;
use std::str::FromStr;

use super::device::Device;
use crate::{Error, Result};

/// The `cpu_engine` loader option: what runs the blocks that execute on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum CpuEngine {
    /// OpenVINO when its plugin is found (and the dtype runs there), else MLAS.
    #[default]
    Auto,
    /// ONNX Runtime's own CPU execution provider.
    Mlas,
    /// OpenVINO's CPU device through the ONNX Runtime plugin; an error when it is missing.
    OpenVino,
}

const CPU_ENGINES: &str = "valid engines are \"auto\", \"mlas\" and \"openvino\"";

impl CpuEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            CpuEngine::Auto => "auto",
            CpuEngine::Mlas => "mlas",
            CpuEngine::OpenVino => "openvino",
        }
    }
}

impl fmt::Display for CpuEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CpuEngine {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(CpuEngine::Auto),
            "mlas" | "ort" | "onnxruntime" => Ok(CpuEngine::Mlas),
            "openvino" | "ov" => Ok(CpuEngine::OpenVino),
            _ => Err(Error::invalid(format!(
                "cpu_engine: {s:?} is not a CPU engine; {CPU_ENGINES}"
            ))),
        }
    }
}

impl<'de> serde::Deserialize<'de> for CpuEngine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::error::deserialize_parsed(
            d,
            "a CPU engine (\"auto\", \"mlas\" or \"openvino\")",
            "cpu_engine",
        )
    }
}

impl serde::Serialize for CpuEngine {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What runs one block, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Engine {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Mlas,
    /// OpenVINO's device for the block's exec device (CPU, or GPU N for `xpu:N`).
    OpenVino,
    /// ONNX Runtime's CUDA execution provider.
    Cuda,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Mlas => "mlas",
            Engine::OpenVino => "openvino",
            Engine::Cuda => "cuda",
        }
    }

    /// The engine of a block executing on `exec`, with `cpu` the CPU engine in force.
    pub fn for_exec(exec: Device, cpu: Engine) -> Engine {
        match exec {
            Device::Cpu => cpu,
            Device::Cuda(_) => Engine::Cuda,
            Device::Xpu(_) => Engine::OpenVino,
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Engine {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_engines_and_names_the_valid_ones() {
        assert_eq!("AUTO".parse::<CpuEngine>().unwrap(), CpuEngine::Auto);
        assert_eq!(" mlas".parse::<CpuEngine>().unwrap(), CpuEngine::Mlas);
        assert_eq!(
            "OpenVINO".parse::<CpuEngine>().unwrap(),
            CpuEngine::OpenVino
        );
        let e = "tbb".parse::<CpuEngine>().unwrap_err();
        assert!(e.message().contains("\"tbb\"") && e.message().contains("openvino"));
        assert_eq!(CpuEngine::default(), CpuEngine::Auto);
    }

    #[test]
    fn xpu_blocks_run_on_openvino_and_cuda_blocks_on_cuda() {
        for cpu in [Engine::Mlas, Engine::OpenVino] {
            assert_eq!(Engine::for_exec(Device::Cpu, cpu), cpu);
            assert_eq!(Engine::for_exec(Device::Xpu(1), cpu), Engine::OpenVino);
            assert_eq!(Engine::for_exec(Device::Cuda(0), cpu), Engine::Cuda);
        }
    }
}
