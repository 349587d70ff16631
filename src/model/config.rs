//! The vision tower's hyper-parameters: from a config file beside the weights when there is
//! one that fits (ours; see `detect`), else from the family table of SPEC §2.1, detected by
//! which keys exist.

use std::path::Path;

use serde::Serialize;

use super::keys::Keys;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Clip,
    Siglip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    QuickGelu,
    Gelu,
    GeluTanh,
}

impl Activation {
    fn parse(s: &str) -> Result<Activation> {
        match s {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_pytorch_tanh" | "gelu_tanh" | "gelu_new" => Ok(Activation::GeluTanh),
            other => Err(Error::model(format!(
                "hidden_act {other:?} is not supported (valid: quick_gelu, gelu, gelu_pytorch_tanh)"
            ))),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct VisionConfig {
    /// Family name as shown to people ("ViT-H/14", or "config.json" sizes).
    pub family: String,
    pub kind: Kind,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub activation: Activation,
    pub patch_size: usize,
    pub image_size: usize,
    /// Positions in the table: patches, plus the class token for CLIP.
    pub tokens: usize,
    /// CLIP `visual_projection` width.
    pub projection_dim: Option<usize>,
    pub layer_norm_eps: f32,
    /// The file carries LLaVA's `multi_modal_projector`.
    pub llava: bool,
    /// "config.json" or "key table".
    pub source: String,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    pub fn mean_std(&self) -> ([f32; 3], [f32; 3]) {
        match self.kind {
            Kind::Clip => (crate::image::CLIP_MEAN, crate::image::CLIP_STD),
            Kind::Siglip => (crate::image::SIGLIP_MEAN, crate::image::SIGLIP_STD),
        }
    }

    fn validate(&self) -> Result<()> {
        // Generous bounds (bigG is 1664 wide, 48 layers, 8192 MLP; SigLIP 512 px) that keep
        // every size computed from them far from overflow.
        let positive = [
            ("hidden_size", self.hidden_size, 1 << 16),
            ("num_hidden_layers", self.num_layers, 1000),
            ("num_attention_heads", self.num_heads, 1 << 10),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            ("patch_size", self.patch_size, 1 << 10),
            ("image_size", self.image_size, 4096),
        ];
        for (name, v, max) in positive {
            if v == 0 || v > max {
                return Err(Error::model(format!(
                    "{name} = {v} is out of range (1..={max})"
                )));
            }
        }
        if self.hidden_size % self.num_heads != 0 {
            return Err(Error::model(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_heads
            )));
        }
        if self.image_size % self.patch_size != 0 {
            return Err(Error::model(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        if self.num_layers < 2 {
            return Err(Error::model(format!(
                "num_hidden_layers = {} but at least 2 are needed (penultimate_hidden_states)",
                self.num_layers
            )));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            return Err(Error::model(format!(
                "layer_norm_eps = {} is out of range (0, 1)",
                self.layer_norm_eps
            )));
        }
        Ok(())
    }
}

/// Builds the configuration. Model folders are flat (one `clip_vision` folder holds many
/// models), so the choice goes: a per-model sidecar `<name>.config.json` or `<name>.json`
/// beside `<name>.safetensors` wins; a folder-wide `config.json` is used only when it fits
/// this file's tensors (else the family table, with a warning); else the family table.
pub fn detect(weights: &Path, keys: &Keys) -> Result<VisionConfig> {
    let llava = keys.contains("multi_modal_projector.linear_1.bias");
    let mut cfg = if let Some(sidecar) = sidecar(weights) {
        // Named for this file: its errors are the user's to fix, never skipped.
        let mut cfg = from_config_json(&sidecar, keys, llava)?;
        finish(&mut cfg).map_err(|e| e.context(sidecar.display()))?;
        // Name the file that was read, in the family shown and in shape errors.
        cfg.source = file_name(&sidecar);
        cfg.family = cfg.family.replace("config.json", &cfg.source);
        cfg
    } else {
        let folder = weights.with_file_name("config.json");
        if folder.is_file() {
            let fitted = from_config_json(&folder, keys, llava).and_then(|mut cfg| {
                finish(&mut cfg).map_err(|e| e.context(folder.display()))?;
                fits(&cfg, keys).map_err(|e| e.context(folder.display()))?;
                Ok(cfg)
            });
            match fitted {
                Ok(cfg) => cfg,
                Err(why) => match from_table(keys, llava) {
                    Ok(cfg) => {
                        tracing::warn!(
                            "{}: not used for {} ({why}); using the {} key table instead (a {} beside the file configures it alone)",
                            folder.display(),
                            weights.display(),
                            cfg.family,
                            sidecar_names(weights)[0]
                        );
                        cfg
                    }
                    Err(table) => {
                        return Err(Error::model(format!(
                            "{why}; without that config.json: {table}"
                        )))
                    }
                },
            }
        } else {
            from_table(keys, llava)?
        }
    };
    finish(&mut cfg)?;
    Ok(cfg)
}

/// Validates ranges, then sets the token count (which divides by the patch size).
fn finish(cfg: &mut VisionConfig) -> Result<()> {
    cfg.validate()?;
    cfg.tokens = (cfg.image_size / cfg.patch_size).pow(2) + usize::from(cfg.kind == Kind::Clip);
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `<name>.config.json` and `<name>.json` for `<name>.safetensors`, in order of preference.
fn sidecar_names(weights: &Path) -> [String; 2] {
    let stem = weights
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    [format!("{stem}.config.json"), format!("{stem}.json")]
}

/// The per-model config file beside `weights`, if there is one.
fn sidecar(weights: &Path) -> Option<std::path::PathBuf> {
    sidecar_names(weights)
        .into_iter()
        .map(|n| weights.with_file_name(n))
        .find(|p| p.is_file())
}

/// Whether a configuration describes this file: the shapes that the sizes fix (patch
/// embedding, position table, MLP width, projection), the layer count and the family's
/// class token. Names the first mismatch. A tensor the file names otherwise (another
/// family's layout) cannot be compared and is left to the block check of `Model::open`.
fn fits(cfg: &VisionConfig, keys: &Keys) -> Result<()> {
    let (d, p) = (cfg.hidden_size, cfg.patch_size);
    let layer = |i: usize| format!("vision_model.encoder.layers.{i}.mlp.fc1.weight");
    let mut want: Vec<(String, Vec<usize>)> = vec![
        (
            "vision_model.embeddings.patch_embedding.weight".into(),
            vec![d, 3, p, p],
        ),
        (
            "vision_model.embeddings.position_embedding.weight".into(),
            vec![cfg.tokens, d],
        ),
        (layer(cfg.num_layers - 1), vec![cfg.intermediate_size, d]),
    ];
    if let (Kind::Clip, Some(proj)) = (cfg.kind, cfg.projection_dim) {
        want.push(("visual_projection.weight".into(), vec![proj, d]));
    }
    for (key, shape) in want {
        if let Some(s) = keys.shape(&key).filter(|s| *s != shape.as_slice()) {
            return Err(Error::model(format!(
                "its sizes need {key} of shape {shape:?}, the file has {s:?}"
            )));
        }
    }
    let layers_named = keys.contains(&layer(0));
    if layers_named && !keys.contains(&layer(cfg.num_layers - 1)) {
        return Err(Error::model(format!(
            "it says {} layers, the file has fewer",
            cfg.num_layers
        )));
    }
    if keys.contains(&layer(cfg.num_layers)) {
        return Err(Error::model(format!(
            "it says {} layers, the file has more",
            cfg.num_layers
        )));
    }
    let class = keys.contains("vision_model.embeddings.class_embedding");
    if (cfg.kind == Kind::Clip && !class) || (cfg.kind == Kind::Siglip && class) {
        return Err(Error::model(format!(
            "it describes a {:?} tower, but the file {} a class token",
            cfg.kind,
            if class { "has" } else { "lacks" }
        )));
    }
    Ok(())
}

fn from_table(keys: &Keys, llava: bool) -> Result<VisionConfig> {
    let layer = |i: usize| format!("vision_model.encoder.layers.{i}.layer_norm1.weight");
    let width = keys
        .shape(&layer(22))
        .and_then(|s| s.first().copied())
        .unwrap_or(0);
    let positions = keys
        .shape("vision_model.embeddings.position_embedding.weight")
        .and_then(|s| s.first().copied())
        .unwrap_or(0);
    let clip = |family: &str, d, l, i, image, proj| VisionConfig {
        family: family.to_string(),
        kind: Kind::Clip,
        hidden_size: d,
        num_layers: l,
        num_heads: 16,
        intermediate_size: i,
        activation: Activation::Gelu,
        patch_size: 14,
        image_size: image,
        tokens: 0,
        projection_dim: Some(proj),
        layer_norm_eps: 1e-5,
        llava,
        source: "key table".into(),
    };
    let cfg = if keys.contains(&layer(47)) {
        clip("ViT-bigG/14", 1664, 48, 8192, 224, 1280)
    } else if keys.contains(&layer(30)) {
        clip("ViT-H/14", 1280, 32, 5120, 224, 1024)
    } else if keys.contains(&layer(22)) {
        if width == 1152 {
            let (family, patch, image) = match positions {
                729 => ("SigLIP so400m/14-384", 14, 384),
                1024 => ("SigLIP so400m/16-512", 16, 512),
                _ => {
                    return Err(Error::model(format!(
                        "width 1152 looks like SigLIP so400m, but the position table has {positions} rows (known: 729 for /14-384, 1024 for /16-512); put a config.json beside the weights"
                    )))
                }
            };
            VisionConfig {
                family: family.into(),
                kind: Kind::Siglip,
                hidden_size: 1152,
                num_layers: 27,
                num_heads: 16,
                intermediate_size: 4304,
                activation: Activation::GeluTanh,
                patch_size: patch,
                image_size: image,
                tokens: 0,
                projection_dim: None,
                layer_norm_eps: 1e-5,
                llava: false,
                source: "key table".into(),
            }
        } else {
            let mut c = if positions == 577 {
                clip("ViT-L/14-336", 1024, 24, 4096, 336, 768)
            } else {
                clip("ViT-L/14", 1024, 24, 4096, 224, 768)
            };
            c.activation = Activation::QuickGelu;
            c
        }
    } else {
        return Err(Error::model(
            "no known CLIP Vision family matches this file: looked for vision_model.encoder.layers.{47,30,22}.layer_norm1.weight (or the open_clip visual.transformer.resblocks.* layout); for other sizes put a Hugging Face config.json beside the weights",
        ));
    };
    Ok(cfg)
}

fn from_config_json(path: &Path, keys: &Keys, llava: bool) -> Result<VisionConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::model(format!("{}: {msg}", path.display()));
    let root: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let root = root
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    // A full CLIP/SigLIP/LLaVA config keeps the tower under `vision_config`.
    let (vision, parent) = match root.get("vision_config") {
        Some(v) => (
            v.as_object()
                .ok_or_else(|| bad("vision_config is not an object".into()))?,
            Some(root),
        ),
        None => (root, None),
    };
    let model_type = vision
        .get("model_type")
        .or_else(|| parent.and_then(|p| p.get("model_type")))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let kind = match model_type {
        "clip_vision_model" | "clip" | "llava" => Kind::Clip,
        "siglip_vision_model" | "siglip" => Kind::Siglip,
        "" if keys.contains("vision_model.embeddings.class_embedding") => Kind::Clip,
        "" => Kind::Siglip,
        other => {
            return Err(bad(format!(
                "model_type {other:?} is not a vision tower (valid: clip_vision_model, siglip_vision_model, clip, siglip)"
            )))
        }
    };
    let int = |name: &str, default: usize| -> Result<usize> {
        match vision.get(name) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| bad(format!("{name} must be a positive integer, got {v}"))),
        }
    };
    // Defaults are those of transformers' CLIPVisionConfig / SiglipVisionConfig.
    let (act_default, patch_default, proj_default, eps_default) = match kind {
        Kind::Clip => ("quick_gelu", 32, Some(512), 1e-5),
        Kind::Siglip => ("gelu_pytorch_tanh", 16, None, 1e-5),
    };
    let act = match vision.get("hidden_act") {
        None => act_default,
        Some(v) => v
            .as_str()
            .ok_or_else(|| bad(format!("hidden_act must be a string, got {v}")))?,
    };
    let eps = match vision.get("layer_norm_eps") {
        None => eps_default,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| bad(format!("layer_norm_eps must be a number, got {v}")))?
            as f32,
    };
    let projection_dim = match kind {
        Kind::Siglip => None,
        Kind::Clip => {
            let from = |o: &serde_json::Map<String, serde_json::Value>| {
                o.get("projection_dim").and_then(|v| v.as_u64())
            };
            let p = from(vision)
                .or_else(|| parent.and_then(from))
                .map(|v| v as usize)
                .or(proj_default);
            // The file's own projection decides when the config does not say.
            keys.shape("visual_projection.weight")
                .and_then(|s| s.first().copied())
                .or(p)
        }
    };
    Ok(VisionConfig {
        family: format!(
            "{} (config.json)",
            match kind {
                Kind::Clip if llava => "LLaVA CLIP",
                Kind::Clip => "CLIP",
                Kind::Siglip => "SigLIP",
            }
        ),
        kind,
        hidden_size: int("hidden_size", 768)?,
        num_layers: int("num_hidden_layers", 12)?,
        num_heads: int("num_attention_heads", 12)?,
        intermediate_size: int("intermediate_size", 3072)?,
        activation: Activation::parse(act).map_err(|e| e.context(path.display()))?,
        patch_size: int("patch_size", patch_default)?,
        image_size: int("image_size", 224)?,
        tokens: 0,
        projection_dim,
        layer_norm_eps: eps,
        llava: llava && kind == Kind::Clip,
        source: "config.json".into(),
    })
}
