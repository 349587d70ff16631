//! Reading pixel tensors and writing encoded outputs as safetensors files.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{Array3, Array4};

use crate::image::{Grid, Pixels, PreprocessSpec};
use crate::model::{DType, SafeTensors, TensorInfo};
use crate::paths::write_atomic;
use crate::runtime::Outputs;
use crate::{Error, Result};

/// Reads preprocessed pixels from a safetensors file: exactly one NCHW f32 tensor (square
/// models), or a naflex batch as Hugging Face's processor and `preprocess` write it:
/// `pixel_values` `[B, T, 3·P²]` (F32), `spatial_shapes` `[B, 2]` (I64 or I32, rows then
/// columns) and optionally `pixel_attention_mask` `[B, T]`, which must then mark exactly each
/// grid's patches.
pub fn read_pixels(path: &Path) -> Result<Pixels> {
    let st = SafeTensors::open(path)?;
    let bad = |msg: String| Error::invalid(format!("{}: {msg}", path.display()));
    let tensors = st.tensors();
    if tensors.contains_key(SPATIAL_SHAPES) {
        return read_patches(&st).map_err(|e| e.context(path.display()));
    }
    let mut all = tensors.iter();
    let (name, info) = match (all.next(), all.next()) {
        (Some(t), None) => t,
        _ => {
            return Err(bad(format!(
                "a pixel file must hold exactly one tensor (NCHW pixels), or pixel_values with spatial_shapes (naflex patches); found {}",
                tensors.len()
            )))
        }
    };
    if info.dtype != DType::F32 || info.shape.len() != 4 {
        return Err(bad(format!(
            "tensor {name:?} is {} {:?}; pixels must be one F32 tensor of rank 4 (NCHW)",
            info.dtype.name(),
            info.shape
        )));
    }
    let values = DType::F32.to_f32(st.data(info)?).unwrap_or_default();
    let s = &info.shape;
    Array4::from_shape_vec((s[0], s[1], s[2], s[3]), values)
        .map(Pixels::Square)
        .map_err(|e| bad(e.to_string()))
}

const PIXEL_VALUES: &str = "pixel_values";
const SPATIAL_SHAPES: &str = "spatial_shapes";
const PIXEL_MASK: &str = "pixel_attention_mask";

/// The naflex layout of [`read_pixels`].
fn read_patches(st: &SafeTensors) -> Result<Pixels> {
    let tensors = st.tensors();
    let get = |name: &str| {
        tensors.get(name).ok_or_else(|| {
            Error::invalid(format!(
                "naflex pixels need {PIXEL_VALUES} [B, T, 3·P²] (F32) and {SPATIAL_SHAPES} [B, 2]; {name} is missing"
            ))
        })
    };
    let (pv, ss) = (get(PIXEL_VALUES)?, get(SPATIAL_SHAPES)?);
    if let Some(extra) = tensors
        .keys()
        .find(|k| ![PIXEL_VALUES, SPATIAL_SHAPES, PIXEL_MASK].contains(&k.as_str()))
    {
        return Err(Error::invalid(format!(
            "unexpected tensor {extra:?} beside naflex pixels (valid: {PIXEL_VALUES}, {SPATIAL_SHAPES}, {PIXEL_MASK})"
        )));
    }
    if pv.dtype != DType::F32 || pv.shape.len() != 3 {
        return Err(Error::invalid(format!(
            "{PIXEL_VALUES} is {} {:?}; naflex pixels are F32 [B, T, 3·P²]",
            pv.dtype.name(),
            pv.shape
        )));
    }
    let b = pv.shape[0];
    let shapes = integers(st, ss, SPATIAL_SHAPES)?;
    if ss.shape != [b, 2] {
        return Err(Error::invalid(format!(
            "{SPATIAL_SHAPES} has shape {:?}; with {b} images it must be [{b}, 2] (rows, cols)",
            ss.shape
        )));
    }
    let grids = shapes
        .chunks_exact(2)
        .map(|g| {
            let side = |v: i64| usize::try_from(v).ok().filter(|&v| v > 0);
            match (side(g[0]), side(g[1])) {
                (Some(r), Some(c)) => Ok(Grid::new(r, c)),
                _ => Err(Error::invalid(format!(
                    "{SPATIAL_SHAPES} holds ({}, {}); a grid needs at least one patch a side",
                    g[0], g[1]
                ))),
            }
        })
        .collect::<Result<Vec<Grid>>>()?;
    if let Some(m) = tensors.get(PIXEL_MASK) {
        let mask = integers(st, m, PIXEL_MASK)?;
        let t = pv.shape[1];
        let want = grids
            .iter()
            .flat_map(|g| (0..t).map(move |j| i64::from(j < g.patches())));
        if m.shape != [b, t] || !mask.iter().copied().eq(want) {
            return Err(Error::invalid(format!(
                "{PIXEL_MASK} does not mark exactly the patches of {SPATIAL_SHAPES} (each image's first rows·cols of {t})"
            )));
        }
    }
    let values = DType::F32.to_f32(st.data(pv)?).unwrap_or_default();
    let s = &pv.shape;
    let values = Array3::from_shape_vec((s[0], s[1], s[2]), values)
        .map_err(|e| Error::invalid(e.to_string()))?;
    Ok(Pixels::Patches { values, grids })
}

/// An integer tensor's values (I64, I32 or BOOL) as i64.
fn integers(st: &SafeTensors, info: &TensorInfo, name: &str) -> Result<Vec<i64>> {
    let bytes = st.data(info)?;
    Ok(match info.dtype {
        DType::I64 => bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
            .collect(),
        DType::I32 => bytes
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes(b.try_into().unwrap_or_default())))
            .collect(),
        DType::Bool => bytes.iter().map(|&b| i64::from(b != 0)).collect(),
        other => {
            return Err(Error::invalid(format!(
                "{name} is {}; it must hold integers (I64 or I32)",
                other.name()
            )))
        }
    })
}

/// Metadata of a pixels file recording how it was made (size, crop, mean, std).
pub fn pixels_metadata(spec: &PreprocessSpec) -> HashMap<String, String> {
    let json = |v: &[f32; 3]| serde_json::to_string(v).unwrap_or_default();
    HashMap::from([
        ("image_size".to_string(), spec.size.to_string()),
        ("crop".to_string(), spec.crop.as_str().to_string()),
        ("mean".to_string(), json(&spec.mean)),
        ("std".to_string(), json(&spec.std)),
    ])
}

/// How the preprocessing recorded in a pixels file differs from `want` (the model's), one
/// line per difference; empty when it matches or the file records none (made elsewhere).
/// The crop is not compared: a model does not decide it.
pub fn pixels_mismatch(path: &Path, want: &PreprocessSpec) -> Result<Vec<String>> {
    let st = SafeTensors::open(path)?;
    let meta = st.metadata();
    let mut diff = Vec::new();
    if let Some(size) = meta.get("image_size") {
        if size.trim() != want.size.to_string() {
            diff.push(format!("image size {size}, the model takes {}", want.size));
        }
    }
    for (key, have) in [("mean", want.mean), ("std", want.std)] {
        let Some(text) = meta.get(key) else { continue };
        match serde_json::from_str::<[f32; 3]>(text) {
            Ok(v) if v.iter().zip(have).all(|(a, b)| (a - b).abs() <= 1e-6) => {}
            Ok(v) => diff.push(format!("{key} {v:?}, the model uses {have:?}")),
            Err(_) => diff.push(format!(
                "{key} {text:?} (unreadable), the model uses {have:?}"
            )),
        }
    }
    Ok(diff)
}

/// Serialises tensors (f32) with string metadata into safetensors bytes.
pub fn to_safetensors(
    tensors: &[(String, ndarray::ArrayD<f32>)],
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let bytes = t.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), t.shape().to_vec(), bytes)
        })
        .collect();
    let views = data
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::runtime(format!("safetensors: {e}")))?;
    safetensors::serialize(views, Some(metadata.clone()))
        .map_err(|e| Error::runtime(format!("safetensors: {e}")))
}

/// Writes `outputs` to `path` atomically, with `inputs` (row order) in the metadata.
pub fn write_outputs(path: &Path, outputs: &Outputs, inputs: &[String], model: &str) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert(
        "inputs".to_string(),
        serde_json::to_string(inputs).unwrap_or_default(),
    );
    meta.insert("model".to_string(), model.to_string());
    meta.insert(
        "producer".to_string(),
        format!("distorch-vision {}", env!("CARGO_PKG_VERSION")),
    );
    let bytes = to_safetensors(&outputs.tensors, &meta)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomic(path, &bytes)
}
