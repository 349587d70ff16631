//! The vision tower's hyper-parameters: from a config file beside the weights when there is
//! one that fits (ours; see `detect`), else from the family tables of contract §2.1 and §2.1b,
//! detected by which keys exist.

use std::path::Path;

use serde::Serialize;

use super::keys::Keys;
use crate::{Error, Result};

mod json;
mod table;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Clip,
    Siglip,
    /// DINOv2 in its original key layout (contract §2.1b).
    Dinov2,
    /// DINOv3 ViT (contract §2.1b): register tokens, RoPE on the patch tokens, no position table.
    Dinov3,
    /// SigLIP2 "naflex" (contract §2.1b): a `Linear` patch embedding over flattened patches,
    /// a variable patch grid per image, the position table resized to each grid.
    Siglip2,
}

impl Kind {
    /// The token table starts with a class token (CLIP's `class_embedding`, DINOv2's `cls_token`).
    pub fn has_class_token(self) -> bool {
        matches!(self, Kind::Clip | Kind::Dinov2 | Kind::Dinov3)
    }

    /// DINOv2 and DINOv3: layer scales, the final norm over every token, the class token pooled.
    pub fn is_dino(self) -> bool {
        matches!(self, Kind::Dinov2 | Kind::Dinov3)
    }

    /// A variable token count per image (SigLIP2 naflex): the blocks take a key mask.
    pub fn is_naflex(self) -> bool {
        self == Kind::Siglip2
    }
}

/// The layers' feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mlp {
    /// `fc2(act(fc1(x)))`.
    Standard,
    /// DINOv2's SwiGLU: `weights_out(silu(a) ⊙ b)`, with `a, b` the two halves of
    /// `weights_in(x)` (each `intermediate_size` wide).
    #[serde(rename = "swiglu")]
    SwiGlu,
    /// DINOv3's gated MLP: `down_proj(act(gate_proj(x)) ⊙ up_proj(x))`, separate tensors.
    Gated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    QuickGelu,
    Gelu,
    GeluTanh,
    Silu,
}

impl Activation {
    fn parse(s: &str) -> Result<Activation> {
        match s {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_pytorch_tanh" | "gelu_tanh" | "gelu_new" => Ok(Activation::GeluTanh),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(Error::model(format!(
                "hidden_act {other:?} is not supported (valid: quick_gelu, gelu, gelu_pytorch_tanh, silu)"
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
    /// Width of the MLP's hidden layer (for SwiGLU: of each half).
    pub intermediate_size: usize,
    pub activation: Activation,
    pub mlp: Mlp,
    pub patch_size: usize,
    pub image_size: usize,
    /// Tokens: ⌊S/P⌋² patches, plus the class token (CLIP, DINOv2, DINOv3) and registers.
    pub tokens: usize,
    /// CLIP `visual_projection` width.
    pub projection_dim: Option<usize>,
    /// DINOv3's register tokens, after the class token.
    pub registers: usize,
    /// DINOv3's RoPE base; 0 for the families with a position table.
    pub rope_theta: f32,
    pub layer_norm_eps: f32,
    /// The file carries LLaVA's `multi_modal_projector`.
    pub llava: bool,
    /// SigLIP2 naflex: the most patches an image is cut into (the position table's rows, a
    /// square); 0 for the fixed-size families.
    #[serde(skip_serializing_if = "is_zero")]
    pub num_patches: usize,
    /// SigLIP2 naflex: the file's attention-pooling head (`vision_model.head.*`) gives
    /// `image_embeds`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub attention_pool: bool,
    /// "config.json" or "key table".
    pub source: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    pub fn mean_std(&self) -> ([f32; 3], [f32; 3]) {
        match self.kind {
            Kind::Clip => (crate::image::CLIP_MEAN, crate::image::CLIP_STD),
            Kind::Siglip | Kind::Siglip2 => (crate::image::SIGLIP_MEAN, crate::image::SIGLIP_STD),
            Kind::Dinov2 | Kind::Dinov3 => {
                (crate::image::IMAGENET_MEAN, crate::image::IMAGENET_STD)
            }
        }
    }

    /// The preprocessing this model takes (contract §4): its image size and the family's
    /// mean/std, with `crop` (the caller's choice; a model does not decide it); for a naflex
    /// model its patching (contract §4b), where `crop` has no effect.
    pub fn preprocess_spec(&self, crop: crate::image::Crop) -> crate::image::PreprocessSpec {
        let (mean, std) = self.mean_std();
        crate::image::PreprocessSpec {
            size: self.image_size as u32,
            mean,
            std,
            crop,
            patching: self.patching(),
        }
    }

    /// How a naflex model cuts images into patches; `None` for fixed-size towers.
    pub fn patching(&self) -> Option<crate::image::Patching> {
        self.kind.is_naflex().then_some(crate::image::Patching {
            patch_size: self.patch_size,
            num_patches: self.num_patches,
        })
    }

    /// Patches per side: the stride-P convolution drops a remainder of S (contract §2.1). For
    /// naflex, the side of the square position table.
    pub fn grid(&self) -> usize {
        if self.kind.is_naflex() {
            return self.num_patches.isqrt();
        }
        self.image_size / self.patch_size
    }

    fn validate(&self) -> Result<()> {
        // Generous bounds (bigG is 1664 wide, 48 layers, 8192 MLP; SigLIP 512 px) that keep
        // every size computed from them far from overflow.
        // naflex towers have no fixed image size; their patch count is bounded instead.
        let (size_name, size, size_max) = if self.kind.is_naflex() {
            ("num_patches", self.num_patches, 1 << 16)
        } else {
            ("image_size", self.image_size, 4096)
        };
        let positive = [
            ("hidden_size", self.hidden_size, 1 << 16),
            ("num_hidden_layers", self.num_layers, 1000),
            ("num_attention_heads", self.num_heads, 1 << 10),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            ("patch_size", self.patch_size, 1 << 10),
            (size_name, size, size_max),
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
        if self.kind.is_naflex() && self.grid().pow(2) != self.num_patches {
            return Err(Error::model(format!(
                "num_patches = {} is not a square: the position table is a square grid",
                self.num_patches
            )));
        }
        // S need not be a multiple of P (so400m/14-384: 27 patches, 6 pixels dropped).
        if !self.kind.is_naflex() && self.image_size < self.patch_size {
            return Err(Error::model(format!(
                "image_size {} is smaller than patch_size {}: no patch fits",
                self.image_size, self.patch_size
            )));
        }
        if self.registers > 64 {
            return Err(Error::model(format!(
                "num_register_tokens = {} is out of range (0..=64)",
                self.registers
            )));
        }
        let rope_ok = self.rope_theta.is_finite() && self.rope_theta > 1.0;
        if self.kind == Kind::Dinov3 && (self.head_dim() % 4 != 0 || !rope_ok) {
            return Err(Error::model(format!(
                "DINOv3 RoPE needs a head size divisible by 4 and rope_theta > 1 (head size {}, rope_theta {})",
                self.head_dim(),
                self.rope_theta
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
        let mut cfg = json::from_config_json(&sidecar, keys, llava)?;
        finish(&mut cfg).map_err(|e| e.context(sidecar.display()))?;
        // Name the file that was read, in the family shown and in shape errors.
        cfg.source = file_name(&sidecar);
        cfg.family = cfg.family.replace("config.json", &cfg.source);
        cfg
    } else {
        let folder = weights.with_file_name("config.json");
        if folder.is_file() {
            let fitted = json::from_config_json(&folder, keys, llava).and_then(|mut cfg| {
                finish(&mut cfg).map_err(|e| e.context(folder.display()))?;
                fits(&cfg, keys).map_err(|e| e.context(folder.display()))?;
                Ok(cfg)
            });
            match fitted {
                Ok(cfg) => cfg,
                Err(why) => match table::from_table(keys, llava) {
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
            table::from_table(keys, llava)?
        }
    };
    finish(&mut cfg)?;
    Ok(cfg)
}

/// Validates ranges, then sets the token count (which divides by the patch size): for naflex,
/// the most an image has.
fn finish(cfg: &mut VisionConfig) -> Result<()> {
    cfg.validate()?;
    cfg.tokens = cfg.grid().pow(2) + usize::from(cfg.kind.has_class_token()) + cfg.registers;
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
    let patch_shape = if cfg.kind.is_naflex() {
        vec![d, 3 * p * p]
    } else {
        vec![d, 3, p, p]
    };
    let mut want: Vec<(String, Vec<usize>)> = vec![
        (
            "vision_model.embeddings.patch_embedding.weight".into(),
            patch_shape,
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
    if (cfg.kind == Kind::Clip && !class)
        || (matches!(cfg.kind, Kind::Siglip | Kind::Siglip2) && class)
    {
        return Err(Error::model(format!(
            "it describes a {:?} tower, but the file {} a class token",
            cfg.kind,
            if class { "has" } else { "lacks" }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_drop_the_remainder_and_a_patch_must_fit() {
        let mut c = table::dinov2("t", 64, 2, 4, 128, Mlp::Standard);
        c.image_size = 384;
        c.patch_size = 14;
        c.validate().unwrap();
        assert_eq!(c.grid(), 27);
        c.image_size = 10;
        let e = c.validate().unwrap_err();
        assert!(e.message().contains("smaller than patch_size"), "{e}");
    }
}
