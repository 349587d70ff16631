//! The family tables of contract §2.1 and §2.1b: a tower's hyper-parameters from which keys
//! its file has and their shapes, when no config file fits.

use super::{Activation, Kind, Mlp, VisionConfig};
use crate::model::keys::Keys;
use crate::{Error, Result};

pub(super) fn from_table(keys: &Keys, llava: bool) -> Result<VisionConfig> {
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
            so400m(family, Kind::Siglip, patch, image)
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
        num_patches: positions,
        attention_pool: keys.contains(crate::model::names::HEAD_PROBE),
        ..so400m("SigLIP2 so400m/16 naflex", Kind::Siglip2, patch, 0)
    })
}

/// SigLIP so400m's tower, which SigLIP2's naflex file shares: 27 layers of width 1152, a
/// patch of `patch` pixels, images of `image` (0 for naflex).
fn so400m(family: &str, kind: Kind, patch: usize, image: usize) -> VisionConfig {
    VisionConfig {
        family: family.into(),
        kind,
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
}

/// Why a file is not a vision tower of any known family: the keys looked for, one family a clause.
const NO_FAMILY: &str = "no known CLIP Vision family matches this file. Looked for: CLIP and SigLIP, vision_model.encoder.layers.{47,30,22}.layer_norm1.weight (or open_clip's visual.transformer.resblocks.* layout); DINOv2, encoder.layer.{39,23}.layer_scale2.lambda1; DINOv3, layer.0.mlp.gate_proj.weight with layer.31.norm1.weight, or layer.23.attention.o_proj.bias. For other sizes, put a Hugging Face config.json beside the weights";

/// A DINOv3 row of contract §2.1b: patch 16, 4 registers, RoPE base 100, eps 1e-5.
pub(super) fn dinov3(
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
pub(super) fn dinov2(
    family: &str,
    d: usize,
    layers: usize,
    heads: usize,
    i: usize,
    mlp: Mlp,
) -> VisionConfig {
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
