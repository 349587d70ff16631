//! Reading pixel tensors and writing encoded outputs as safetensors files.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{Array3, Array4};

use crate::image::naflex::spatial_shapes;
use crate::image::{Grid, Pixels, PreprocessSpec};
use crate::model::{DType, Outputs, SafeTensors, TensorInfo};
use crate::paths::{create_parent, write_atomic};
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

/// Metadata of a pixels file recording how it was made (size, crop, mean, std; a naflex
/// model's patch size and patch count instead of the size).
pub fn pixels_metadata(spec: &PreprocessSpec) -> HashMap<String, String> {
    let json = |v: &[f32; 3]| serde_json::to_string(v).unwrap_or_default();
    let mut meta = HashMap::from([
        ("crop".to_string(), spec.crop.as_str().to_string()),
        ("mean".to_string(), json(&spec.mean)),
        ("std".to_string(), json(&spec.std)),
    ]);
    match spec.patching {
        Some(p) => {
            meta.insert("patch_size".to_string(), p.patch_size.to_string());
            meta.insert("num_patches".to_string(), p.num_patches.to_string());
        }
        None => {
            meta.insert("image_size".to_string(), spec.size.to_string());
        }
    }
    meta
}

/// How the preprocessing recorded in a pixels file differs from `want` (the model's), one
/// line per difference; empty when it matches or the file records none (made elsewhere).
/// The crop is not compared: a model does not decide it.
pub fn pixels_mismatch(path: &Path, want: &PreprocessSpec) -> Result<Vec<String>> {
    let st = SafeTensors::open(path)?;
    let meta = st.metadata();
    let mut diff = Vec::new();
    if let Some(size) = meta.get("image_size") {
        if want.patching.is_some() || size.trim() != want.size.to_string() {
            diff.push(format!("image size {size}, the model takes {}", want.size));
        }
    }
    let (patch, count) = want
        .patching
        .map_or((0, 0), |p| (p.patch_size, p.num_patches));
    for (key, have) in [("patch_size", patch), ("num_patches", count)] {
        if let Some(v) = meta.get(key) {
            if v.trim() != have.to_string() {
                diff.push(format!("{key} {v}, the model's is {have}"));
            }
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

/// The name of a naflex batch's grids in every file this program writes (pixels, outputs,
/// shards): `[B, 2]` I64, rows then columns, as Hugging Face's processor names them.
pub const SPATIAL_SHAPES: &str = "spatial_shapes";

/// Serialises tensors (f32), a naflex batch's grids (as the I64 [`SPATIAL_SHAPES`]) and string
/// metadata into safetensors bytes.
fn to_safetensors(
    tensors: &[(String, ndarray::ArrayD<f32>)],
    grids: Option<&[Grid]>,
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut data: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let bytes = t.iter().flat_map(|v| v.to_le_bytes()).collect();
            (
                name.clone(),
                safetensors::Dtype::F32,
                t.shape().to_vec(),
                bytes,
            )
        })
        .collect();
    if let Some(g) = grids {
        let bytes = spatial_shapes(g)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        data.push((
            SPATIAL_SHAPES.to_string(),
            safetensors::Dtype::I64,
            vec![g.len(), 2],
            bytes,
        ));
    }
    let views = data
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::runtime(format!("safetensors: {e}")))?;
    safetensors::serialize(views, Some(metadata.clone()))
        .map_err(|e| Error::runtime(format!("safetensors: {e}")))
}

/// The metadata of every safetensors file this program writes: the sources of the rows in
/// order (`inputs`, a JSON list), the model as the user named it, and the producer.
pub fn metadata(inputs: &[String], model: &str) -> HashMap<String, String> {
    HashMap::from([
        (
            "inputs".to_string(),
            serde_json::to_string(inputs).unwrap_or_default(),
        ),
        ("model".to_string(), model.to_string()),
        (
            "producer".to_string(),
            format!("distorch-vision {}", env!("CARGO_PKG_VERSION")),
        ),
    ])
}

/// Writes `tensors` (and a naflex batch's `grids`) with `metadata` to `path` atomically,
/// creating its folder.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, ndarray::ArrayD<f32>)],
    grids: Option<&[Grid]>,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let bytes = to_safetensors(tensors, grids, metadata)?;
    create_parent(path)?;
    write_atomic(path, &bytes)
}

/// Writes `outputs` to `path` atomically, with `inputs` (row order) in the metadata and a
/// naflex model's grids as [`SPATIAL_SHAPES`].
pub fn write_outputs(path: &Path, outputs: &Outputs, inputs: &[String], model: &str) -> Result<()> {
    write_safetensors(
        path,
        &outputs.tensors,
        outputs.grids.as_deref(),
        &metadata(inputs, model),
    )
}
