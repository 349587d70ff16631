//! A session on one OpenVINO device: the plugin's device appended with
//! `SessionOptionsAppendExecutionProvider_V2`, OpenVINO's own settings in `load_config`, and no
//! CPU fallback (a node OpenVINO cannot run fails the build instead of running on MLAS unseen).

use std::path::Path;

use ort::session::builder::SessionBuilder;

use super::devices::{OvDevice, EP_NAME};
use crate::runtime::environment;
use crate::{Error, Result};

/// OpenVINO's `INFERENCE_PRECISION_HINT`. Always set: without it OpenVINO computes in bf16 on
/// CPUs with AMX or AVX512_BF16 and in f16 on GPUs, which would silently change fp32 results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    F32,
    Bf16,
    F16,
}

impl Hint {
    pub fn as_str(self) -> &'static str {
        match self {
            Hint::F32 => "f32",
            Hint::Bf16 => "bf16",
            Hint::F16 => "f16",
        }
    }
}

/// The `load_config` JSON for `device`: the precision hint, the thread count of the MLAS path
/// (CPU), one stream for the latency of one batch at a time, and the compiled-model cache.
pub fn load_config(device: &OvDevice, hint: Hint, threads: usize, cache: Option<&Path>) -> String {
    let mut cfg = serde_json::Map::new();
    cfg.insert("INFERENCE_PRECISION_HINT".into(), hint.as_str().into());
    cfg.insert("PERFORMANCE_HINT".into(), "LATENCY".into());
    if device.kind == super::devices::Kind::Cpu {
        cfg.insert("INFERENCE_NUM_THREADS".into(), threads.to_string().into());
        cfg.insert("NUM_STREAMS".into(), "1".into());
    }
    if let Some(dir) = cache {
        cfg.insert("CACHE_DIR".into(), dir.display().to_string().into());
    }
    serde_json::json!({ device.ov_device.clone(): cfg }).to_string()
}

/// Appends `device` to `builder` with [`load_config`].
pub fn register(
    builder: SessionBuilder,
    device: &OvDevice,
    hint: Hint,
    cache: Option<&Path>,
) -> Result<SessionBuilder> {
    let env = environment()?;
    let ort_device = env
        .devices()
        .find(|d| {
            d.ep().ok() == Some(EP_NAME)
                && super::devices::ov_device_of(d).as_deref() == Some(device.ov_device.as_str())
        })
        .ok_or_else(|| {
            Error::runtime(format!(
                "the OpenVINO plugin no longer lists device {}",
                device.ov_device
            ))
        })?;
    let config = load_config(device, hint, crate::runtime::env::threads(), cache);
    let options = vec![(format!("{EP_NAME}.load_config"), config)];
    let builder = builder
        .with_devices([ort_device], Some(&options))
        .map_err(|e| Error::runtime(format!("OpenVINO device {}: {e}", device.ov_device)))?;
    Ok(builder.with_disable_cpu_fallback()?)
}

#[cfg(test)]
mod tests {
    use super::super::devices::Kind;
    use super::*;

    fn dev(ov: &str, kind: Kind) -> OvDevice {
        OvDevice {
            ov_device: ov.into(),
            kind,
            xpu: None,
            name: ov.into(),
            capabilities: vec![],
            total_bytes: None,
            metadata: Default::default(),
        }
    }

    #[test]
    fn the_load_config_always_names_the_precision() {
        let cpu = load_config(
            &dev("CPU", Kind::Cpu),
            Hint::F32,
            2,
            Some(Path::new("/g/c")),
        );
        let v: serde_json::Value = serde_json::from_str(&cpu).unwrap();
        assert_eq!(v["CPU"]["INFERENCE_PRECISION_HINT"], "f32");
        assert_eq!(v["CPU"]["INFERENCE_NUM_THREADS"], "2");
        assert_eq!(v["CPU"]["CACHE_DIR"], "/g/c");
        let gpu = load_config(&dev("GPU.1", Kind::Gpu), Hint::F16, 2, None);
        let v: serde_json::Value = serde_json::from_str(&gpu).unwrap();
        assert_eq!(v["GPU.1"]["INFERENCE_PRECISION_HINT"], "f16");
        assert!(v["GPU.1"].get("INFERENCE_NUM_THREADS").is_none());
        assert!(v["GPU.1"].get("CACHE_DIR").is_none());
    }
}
