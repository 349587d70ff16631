//! Reading pixel tensors and writing encoded outputs as safetensors files.

use std::collections::HashMap;
use std::path::Path;

use ndarray::Array4;

use crate::image::PreprocessSpec;
use crate::model::Outputs;
use crate::model::{DType, SafeTensors};
use crate::paths::{create_parent, write_atomic};
use crate::{Error, Result};

/// Reads a safetensors file holding exactly one NCHW f32 tensor of preprocessed pixels.
pub fn read_pixels(path: &Path) -> Result<Array4<f32>> {
    let st = SafeTensors::open(path)?;
    let mut tensors = st.tensors().iter();
    let (name, info) = match (tensors.next(), tensors.next()) {
        (Some(t), None) => t,
        _ => {
            return Err(Error::invalid(format!(
                "{}: a pixel file must hold exactly one tensor, found {}",
                path.display(),
                st.tensors().len()
            )))
        }
    };
    if info.dtype != DType::F32 || info.shape.len() != 4 {
        return Err(Error::invalid(format!(
            "{}: tensor {name:?} is {} {:?}; pixels must be one F32 tensor of rank 4 (NCHW)",
            path.display(),
            info.dtype.name(),
            info.shape
        )));
    }
    let values = DType::F32.to_f32(st.data(info)?).unwrap_or_default();
    let s = &info.shape;
    Array4::from_shape_vec((s[0], s[1], s[2], s[3]), values)
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
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
fn to_safetensors(
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

/// Writes `tensors` with `metadata` to `path` atomically, creating its folder.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, ndarray::ArrayD<f32>)],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let bytes = to_safetensors(tensors, metadata)?;
    create_parent(path)?;
    write_atomic(path, &bytes)
}

/// Writes `outputs` to `path` atomically, with `inputs` (row order) in the metadata.
pub fn write_outputs(path: &Path, outputs: &Outputs, inputs: &[String], model: &str) -> Result<()> {
    write_safetensors(path, &outputs.tensors, &metadata(inputs, model))
}
