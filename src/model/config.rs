//! The vision tower's hyper-parameters: from a config file beside the weights when there is
//! one that fits (ours; see `detect`), else from the family tables of contract §2.1 and §2.1b,
//! detected by which keys exist.

use std::path::Path;

use serde::Serialize;

use super::keys::Keys;
use crate::{Error, Result};

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
        mlp: Mlp::Standard,
        patch_size: 14,
        image_size: image,
        tokens: 0,
        projection_dim: Some(proj),
        registers: 0,
        rope_theta: 0.0,
        layer_norm_eps: 1e-5,
        llava,
        num_patches: 0,
        attention_pool: false,
        source: "key table".into(),
    };
    let patch_rank = keys
        .shape("vision_model.embeddings.patch_embedding.weight")
        .map_or(0, <[usize]>::len);
    let cfg = if keys.contains(&layer(47)) {
        clip("ViT-bigG/14", 1664, 48, 8192, 224, 1280)
    } else if keys.contains(&layer(30)) {
        clip("ViT-H/14", 1280, 32, 5120, 224, 1024)
    } else if keys.contains(&layer(22)) {
        if width == 1152 && patch_rank == 2 {
            // ComfyUI's clip_vision_siglip2_base_naflex.json: a Linear patch embedding.
            siglip2_so400m(keys, positions)?
        } else if width == 1152 {
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
                mlp: Mlp::Standard,
                patch_size: patch,
                image_size: image,
                tokens: 0,
                projection_dim: None,
                registers: 0,
                rope_theta: 0.0,
                layer_norm_eps: 1e-5,
                llava: false,
                num_patches: 0,
                attention_pool: false,
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
    } else if keys.contains("encoder.layer.39.layer_scale2.lambda1") {
        dinov2("DINOv2 giant/14", 1536, 40, 24, 4096, Mlp::SwiGlu)
    } else if keys.contains("encoder.layer.23.layer_scale2.lambda1") {
        dinov2("DINOv2 large/14", 1024, 24, 16, 4096, Mlp::Standard)
    } else if keys.contains("layer.0.mlp.gate_proj.weight")
        && keys.contains("layer.31.norm1.weight")
    {
        // ComfyUI's DINOV3_VITH_CONFIG: SwiGLU-gated, 1024 px.
        dinov3("DINOv3 ViT-H+/16", 1280, 32, 20, 5120, Mlp::Gated, 1024)
    } else if keys.contains("layer.23.attention.o_proj.bias") {
        // ComfyUI's dino3_large.json: plain GELU MLP, 224 px.
        dinov3("DINOv3 large/16", 1024, 24, 16, 4096, Mlp::Standard, 224)
    } else {
        return Err(Error::model(NO_FAMILY));
    };
    Ok(cfg)
}

/// SigLIP2 so400m naflex (contract §2.1b), as ComfyUI's `clip_vision_siglip2_base_naflex.json`:
/// the patch size from the `[D, 3·P²]` patch embedding, the patch count from the position
/// table (256 in the released file), the pooling head when the file has it.
fn siglip2_so400m(keys: &Keys, positions: usize) -> Result<VisionConfig> {
    let inputs = keys
        .shape("vision_model.embeddings.patch_embedding.weight")
        .and_then(|s| s.get(1).copied())
        .unwrap_or(0);
    let patch = (inputs / 3).isqrt();
    if patch == 0 || 3 * patch * patch != inputs {
        return Err(Error::model(format!(
            "vision_model.embeddings.patch_embedding.weight has {inputs} inputs; a SigLIP2 naflex patch embedding takes 3·P² (768 for P = 16)"
        )));
    }
    Ok(VisionConfig {
        family: "SigLIP2 so400m/16 naflex".into(),
        kind: Kind::Siglip2,
        hidden_size: 1152,
        num_layers: 27,
        num_heads: 16,
        intermediate_size: 4304,
        activation: Activation::GeluTanh,
        mlp: Mlp::Standard,
        patch_size: patch,
        image_size: 0,
        tokens: 0,
        projection_dim: None,
        registers: 0,
        rope_theta: 0.0,
        layer_norm_eps: 1e-5,
        llava: false,
        num_patches: positions,
        attention_pool: keys.contains(super::names::HEAD_PROBE),
        source: "key table".into(),
    })
}

/// Why a file is not a vision tower of any known family: the keys looked for, one family a clause.
pub const NO_FAMILY: &str = "no known CLIP Vision family matches this file. Looked for: CLIP and SigLIP, vision_model.encoder.layers.{47,30,22}.layer_norm1.weight (or open_clip's visual.transformer.resblocks.* layout); DINOv2, encoder.layer.{39,23}.layer_scale2.lambda1; DINOv3, layer.0.mlp.gate_proj.weight with layer.31.norm1.weight, or layer.23.attention.o_proj.bias. For other sizes, put a Hugging Face config.json beside the weights";

/// A DINOv3 row of contract §2.1b: patch 16, 4 registers, RoPE base 100, eps 1e-5.
fn dinov3(
    family: &str,
    d: usize,
    layers: usize,
    heads: usize,
    i: usize,
    mlp: Mlp,
    image: usize,
) -> VisionConfig {
    VisionConfig {
        family: family.into(),
        kind: Kind::Dinov3,
        hidden_size: d,
        num_layers: layers,
        num_heads: heads,
        intermediate_size: i,
        activation: if mlp == Mlp::Gated {
            Activation::Silu
        } else {
            Activation::Gelu
        },
        mlp,
        patch_size: 16,
        image_size: image,
        tokens: 0,
        projection_dim: None,
        registers: 4,
        rope_theta: 100.0,
        layer_norm_eps: 1e-5,
        llava: false,
        num_patches: 0,
        attention_pool: false,
        source: "key table".into(),
    }
}

/// A DINOv2 row of contract §2.1b: 518 px, patch 14, eps 1e-6, exact gelu in the plain MLP.
fn dinov2(family: &str, d: usize, layers: usize, heads: usize, i: usize, mlp: Mlp) -> VisionConfig {
    VisionConfig {
        family: family.into(),
        kind: Kind::Dinov2,
        hidden_size: d,
        num_layers: layers,
        num_heads: heads,
        intermediate_size: i,
        activation: Activation::Gelu,
        mlp,
        patch_size: 14,
        image_size: 518,
        tokens: 0,
        projection_dim: None,
        registers: 0,
        rope_theta: 0.0,
        layer_norm_eps: 1e-6,
        llava: false,
        num_patches: 0,
        attention_pool: false,
        source: "key table".into(),
    }
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
        "siglip2_vision_model" | "siglip2" => return siglip2_config(vision, keys, &bad),
        "dinov2" => return dinov2_config(vision, &bad),
        "dinov3_vit" | "dinov3" => return dinov3_config(vision, &bad),
        "" if keys.contains("vision_model.embeddings.class_embedding") => Kind::Clip,
        "" => Kind::Siglip,
        other => {
            return Err(bad(format!(
                "model_type {other:?} is not a vision tower (valid: clip_vision_model, siglip_vision_model, siglip2_vision_model, clip, siglip, siglip2, dinov2, dinov3_vit)"
            )))
        }
    };
    let int = |name: &str, default: usize| json_int(vision, name, default, &bad);
    // Defaults are those of transformers' CLIPVisionConfig / SiglipVisionConfig.
    let (act_default, patch_default, proj_default, eps_default) = match kind {
        Kind::Clip => ("quick_gelu", 32, Some(512), 1e-5),
        Kind::Siglip | Kind::Siglip2 | Kind::Dinov2 | Kind::Dinov3 => {
            ("gelu_pytorch_tanh", 16, None, 1e-5)
        }
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
        Kind::Siglip | Kind::Siglip2 | Kind::Dinov2 | Kind::Dinov3 => None,
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
                Kind::Siglip2 => "SigLIP2 naflex",
                Kind::Dinov2 => "DINOv2",
                Kind::Dinov3 => "DINOv3",
            }
        ),
        kind,
        hidden_size: int("hidden_size", 768)?,
        num_layers: int("num_hidden_layers", 12)?,
        num_heads: int("num_attention_heads", 12)?,
        intermediate_size: int("intermediate_size", 3072)?,
        activation: Activation::parse(act).map_err(|e| e.context(path.display()))?,
        mlp: Mlp::Standard,
        patch_size: int("patch_size", patch_default)?,
        image_size: int("image_size", 224)?,
        tokens: 0,
        projection_dim,
        registers: 0,
        rope_theta: 0.0,
        layer_norm_eps: eps,
        llava: llava && kind == Kind::Clip,
        num_patches: 0,
        attention_pool: false,
        source: "config.json".into(),
    })
}

type Json = serde_json::Map<String, serde_json::Value>;

fn json_int(o: &Json, name: &str, default: usize, bad: &dyn Fn(String) -> Error) -> Result<usize> {
    match o.get(name) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| bad(format!("{name} must be a positive integer, got {v}"))),
    }
}

fn json_bool(o: &Json, name: &str, default: bool, bad: &dyn Fn(String) -> Error) -> Result<bool> {
    match o.get(name) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad(format!("{name} must be true or false, got {v}"))),
    }
}

/// A finite number (`NaN`/`inf` are refused).
fn json_f64(o: &Json, name: &str, default: f64, bad: &dyn Fn(String) -> Error) -> Result<f64> {
    match o.get(name) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| bad(format!("{name} must be a number, got {v}"))),
    }
}

/// A Hugging Face `Siglip2VisionConfig` (`model_type: siglip2_vision_model`, or a full
/// `siglip2` config's `vision_config`): defaults as in transformers but the layer norm epsilon,
/// 1e-5 as ComfyUI uses (contract §2.1). `vision_use_head: false`, or a file without
/// `vision_model.head.*`, leaves `image_embeds` out.
fn siglip2_config(o: &Json, keys: &Keys, bad: &dyn Fn(String) -> Error) -> Result<VisionConfig> {
    let int = |name: &str, default: usize| json_int(o, name, default, bad);
    if int("num_channels", 3)? != 3 {
        return Err(bad(format!(
            "num_channels = {} is not supported (valid: 3, RGB)",
            int("num_channels", 3)?
        )));
    }
    let act = match o.get("hidden_act") {
        None => "gelu_pytorch_tanh",
        Some(v) => v
            .as_str()
            .ok_or_else(|| bad(format!("hidden_act must be a string, got {v}")))?,
    };
    // Absent: the head is used when the file has it (ComfyUI's files may lack it).
    let has_head = keys.contains(super::names::HEAD_PROBE);
    let use_head = match o.get("vision_use_head") {
        None | Some(serde_json::Value::Null) => has_head,
        Some(_) => json_bool(o, "vision_use_head", true, bad)?,
    };
    if use_head && !has_head {
        return Err(bad(format!(
            "vision_use_head is true but the file has no {} (set it to false to load the tower without its pooling head)",
            super::names::HEAD_PROBE
        )));
    }
    Ok(VisionConfig {
        family: "SigLIP2 naflex (config.json)".into(),
        kind: Kind::Siglip2,
        hidden_size: int("hidden_size", 768)?,
        num_layers: int("num_hidden_layers", 12)?,
        num_heads: int("num_attention_heads", 12)?,
        intermediate_size: int("intermediate_size", 3072)?,
        activation: Activation::parse(act).map_err(|e| bad(e.to_string()))?,
        mlp: Mlp::Standard,
        patch_size: int("patch_size", 16)?,
        image_size: 0,
        tokens: 0,
        projection_dim: None,
        registers: 0,
        rope_theta: 0.0,
        layer_norm_eps: json_f64(o, "layer_norm_eps", 1e-5, bad)? as f32,
        llava: false,
        num_patches: int("num_patches", 256)?,
        attention_pool: use_head,
        source: "config.json".into(),
    })
}

/// A Hugging Face `Dinov2Config` (defaults as in transformers). The MLP width comes from
/// `mlp_ratio` as `Dinov2MLP` / `Dinov2SwiGLUFFN` compute it.
fn dinov2_config(o: &Json, bad: &dyn Fn(String) -> Error) -> Result<VisionConfig> {
    let int = |name: &str, default: usize| json_int(o, name, default, bad);
    let flag = |name: &str, default: bool| json_bool(o, name, default, bad);
    let number = |name: &str, default: f64| json_f64(o, name, default, bad);
    if !flag("qkv_bias", true)? {
        return Err(bad(
            "qkv_bias = false is not supported (DINOv2 files carry query/key/value biases)".into(),
        ));
    }
    let hidden = int("hidden_size", 768)?;
    let ratio = number("mlp_ratio", 4.0)?;
    if !(ratio > 0.0 && ratio <= 64.0) {
        return Err(bad(format!("mlp_ratio = {ratio} is out of range (0, 64]")));
    }
    let plain = (hidden as f64 * ratio) as usize;
    let swiglu = flag("use_swiglu_ffn", false)?;
    let (mlp, intermediate) = if swiglu {
        // Two thirds of the plain width, rounded up to a multiple of 8.
        (
            Mlp::SwiGlu,
            ((plain as f64 * 2.0 / 3.0) as usize).div_ceil(8) * 8,
        )
    } else {
        (Mlp::Standard, plain)
    };
    let act = match o.get("hidden_act") {
        None => "gelu",
        Some(v) => v
            .as_str()
            .ok_or_else(|| bad(format!("hidden_act must be a string, got {v}")))?,
    };
    Ok(VisionConfig {
        family: "DINOv2 (config.json)".into(),
        kind: Kind::Dinov2,
        hidden_size: hidden,
        num_layers: int("num_hidden_layers", 12)?,
        num_heads: int("num_attention_heads", 12)?,
        intermediate_size: intermediate,
        activation: Activation::parse(act).map_err(|e| bad(e.to_string()))?,
        mlp,
        patch_size: int("patch_size", 14)?,
        image_size: int("image_size", 224)?,
        tokens: 0,
        projection_dim: None,
        registers: 0,
        rope_theta: 0.0,
        layer_norm_eps: number("layer_norm_eps", 1e-6)? as f32,
        llava: false,
        num_patches: 0,
        attention_pool: false,
        source: "config.json".into(),
    })
}

/// A Hugging Face `DINOv3ViTConfig` (defaults as in transformers). Only the bias layout of the
/// released checkpoints (no key bias, every other linear biased) is supported.
fn dinov3_config(o: &Json, bad: &dyn Fn(String) -> Error) -> Result<VisionConfig> {
    let int = |name: &str, default: usize| json_int(o, name, default, bad);
    let flag = |name: &str, default: bool| json_bool(o, name, default, bad);
    for (name, want) in [
        ("query_bias", true),
        ("key_bias", false),
        ("value_bias", true),
        ("proj_bias", true),
        ("mlp_bias", true),
    ] {
        if flag(name, want)? != want {
            return Err(bad(format!(
                "{name} = {} is not supported (DINOv3 files have {name} = {want})",
                !want
            )));
        }
    }
    let number = |name: &str, default: f64| json_f64(o, name, default, bad);
    let gated = flag("use_gated_mlp", false)?;
    let act = match o.get("hidden_act") {
        None => "gelu",
        Some(v) => v
            .as_str()
            .ok_or_else(|| bad(format!("hidden_act must be a string, got {v}")))?,
    };
    Ok(VisionConfig {
        family: "DINOv3 (config.json)".into(),
        kind: Kind::Dinov3,
        hidden_size: int("hidden_size", 384)?,
        num_layers: int("num_hidden_layers", 12)?,
        num_heads: int("num_attention_heads", 6)?,
        intermediate_size: int("intermediate_size", 1536)?,
        activation: Activation::parse(act).map_err(|e| bad(e.to_string()))?,
        mlp: if gated { Mlp::Gated } else { Mlp::Standard },
        patch_size: int("patch_size", 16)?,
        image_size: int("image_size", 224)?,
        tokens: 0,
        projection_dim: None,
        registers: int("num_register_tokens", 0)?,
        rope_theta: number("rope_theta", 100.0)? as f32,
        layer_norm_eps: number("layer_norm_eps", 1e-5)? as f32,
        llava: false,
        num_patches: 0,
        attention_pool: false,
        source: "config.json".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dino(json: serde_json::Value) -> Result<VisionConfig> {
        let o = json.as_object().unwrap().clone();
        dinov2_config(&o, &|m| Error::model(m))
    }

    #[test]
    fn dinov2_config_json_sizes_follow_transformers() {
        // facebook/dinov2-giant: SwiGLU with 2/3 of 4·1536, rounded up to a multiple of 8.
        let g = dino(
            serde_json::json!({"model_type": "dinov2", "hidden_size": 1536,
            "num_hidden_layers": 40, "num_attention_heads": 24, "mlp_ratio": 4,
            "use_swiglu_ffn": true, "image_size": 518}),
        )
        .unwrap();
        assert_eq!((g.mlp, g.intermediate_size), (Mlp::SwiGlu, 4096));
        assert_eq!((g.patch_size, g.layer_norm_eps), (14, 1e-6));
        // Defaults of Dinov2Config (base size), plain MLP.
        let b = dino(serde_json::json!({"model_type": "dinov2"})).unwrap();
        assert_eq!((b.hidden_size, b.num_layers, b.num_heads), (768, 12, 12));
        assert_eq!(
            (b.mlp, b.intermediate_size, b.image_size),
            (Mlp::Standard, 3072, 224)
        );
        assert_eq!(b.activation, Activation::Gelu);
        assert_eq!(b.kind, Kind::Dinov2);
        // A fractional ratio truncates as Python's int() does.
        let f = dino(serde_json::json!({"hidden_size": 100, "mlp_ratio": 2.5})).unwrap();
        assert_eq!(f.intermediate_size, 250);
    }

    #[test]
    fn dinov2_config_json_errors_name_the_field() {
        let e = dino(serde_json::json!({"qkv_bias": false})).unwrap_err();
        assert!(e.message().contains("qkv_bias"), "{e}");
        let e = dino(serde_json::json!({"mlp_ratio": "four"})).unwrap_err();
        assert!(e.message().contains("mlp_ratio"), "{e}");
        let e = dino(serde_json::json!({"mlp_ratio": -1})).unwrap_err();
        assert!(e.message().contains("mlp_ratio"), "{e}");
        let e = dino(serde_json::json!({"use_swiglu_ffn": "yes"})).unwrap_err();
        assert!(e.message().contains("use_swiglu_ffn"), "{e}");
        let e = dino(serde_json::json!({"hidden_act": "relu6"})).unwrap_err();
        assert!(e.message().contains("relu6"), "{e}");
    }

    #[test]
    fn dinov3_config_json_defaults_and_bias_layout() {
        let o = |v: serde_json::Value| v.as_object().unwrap().clone();
        let bad = |m: String| Error::model(m);
        let c = dinov3_config(&o(serde_json::json!({"model_type": "dinov3_vit"})), &bad).unwrap();
        assert_eq!((c.hidden_size, c.num_layers, c.num_heads), (384, 12, 6));
        assert_eq!(
            (c.intermediate_size, c.registers, c.patch_size),
            (1536, 0, 16)
        );
        assert_eq!(
            (c.mlp, c.activation, c.rope_theta),
            (Mlp::Standard, Activation::Gelu, 100.0)
        );
        let g = dinov3_config(
            &o(serde_json::json!({"use_gated_mlp": true, "hidden_act": "silu", "num_register_tokens": 4})),
            &bad,
        )
        .unwrap();
        assert_eq!(
            (g.mlp, g.activation, g.registers),
            (Mlp::Gated, Activation::Silu, 4)
        );
        let e = dinov3_config(&o(serde_json::json!({"key_bias": true})), &bad).unwrap_err();
        assert!(e.message().contains("key_bias"), "{e}");
        let mut c = dinov3("t", 64, 2, 4, 128, Mlp::Standard, 32);
        c.num_heads = 32; // head size 2: RoPE needs a multiple of 4
        assert!(c.validate().unwrap_err().message().contains("RoPE"));
    }

    #[test]
    fn tokens_drop_the_remainder_and_a_patch_must_fit() {
        let mut c = dinov2("t", 64, 2, 4, 128, Mlp::Standard);
        c.image_size = 384;
        c.patch_size = 14;
        c.validate().unwrap();
        assert_eq!(c.grid(), 27);
        c.image_size = 10;
        let e = c.validate().unwrap_err();
        assert!(e.message().contains("smaller than patch_size"), "{e}");
    }
}
