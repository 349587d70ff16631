//! The tensor names each family's blocks read (after key normalisation): CLIP and SigLIP
//! in the HF layout of SPEC §2.2, DINOv2 in its original layout (SPEC §2.1b, no prefix).
//! The block list (what a block needs and its bytes) and the graph emitters both use these,
//! so the two never disagree.

use super::config::{Kind, Mlp};

/// Prefixes (without `.weight` / `.bias`) of one layer's tensors.
pub struct LayerNames {
    pub norm1: String,
    pub norm2: String,
    pub query: String,
    pub key: String,
    pub value: String,
    pub out: String,
    /// `fc1`, or SwiGLU's `weights_in` (both halves in one tensor).
    pub mlp_in: String,
    /// `fc2`, or SwiGLU's `weights_out`.
    pub mlp_out: String,
    /// DINOv2's per-channel layer scales (`lambda1` tensors, full names).
    pub scale1: Option<String>,
    pub scale2: Option<String>,
}

pub fn layer(kind: Kind, mlp: Mlp, l: usize) -> LayerNames {
    match kind {
        Kind::Clip | Kind::Siglip => {
            let p = format!("vision_model.encoder.layers.{l}");
            LayerNames {
                norm1: format!("{p}.layer_norm1"),
                norm2: format!("{p}.layer_norm2"),
                query: format!("{p}.self_attn.q_proj"),
                key: format!("{p}.self_attn.k_proj"),
                value: format!("{p}.self_attn.v_proj"),
                out: format!("{p}.self_attn.out_proj"),
                mlp_in: format!("{p}.mlp.fc1"),
                mlp_out: format!("{p}.mlp.fc2"),
                scale1: None,
                scale2: None,
            }
        }
        Kind::Dinov2 => {
            let p = format!("encoder.layer.{l}");
            let (mlp_in, mlp_out) = match mlp {
                Mlp::Standard => ("fc1", "fc2"),
                Mlp::SwiGlu => ("weights_in", "weights_out"),
            };
            LayerNames {
                norm1: format!("{p}.norm1"),
                norm2: format!("{p}.norm2"),
                query: format!("{p}.attention.attention.query"),
                key: format!("{p}.attention.attention.key"),
                value: format!("{p}.attention.attention.value"),
                out: format!("{p}.attention.output.dense"),
                mlp_in: format!("{p}.mlp.{mlp_in}"),
                mlp_out: format!("{p}.mlp.{mlp_out}"),
                scale1: Some(format!("{p}.layer_scale1.lambda1")),
                scale2: Some(format!("{p}.layer_scale2.lambda1")),
            }
        }
    }
}

/// True for a linear layer inside a transformer layer (int8 mode quantises exactly these).
pub fn is_layer_linear(prefix: &str) -> bool {
    prefix.starts_with("vision_model.encoder.layers.") || prefix.starts_with("encoder.layer.")
}

/// Tensors of the `embed` block.
pub struct EmbedNames {
    pub patch_weight: &'static str,
    pub patch_bias: Option<&'static str>,
    pub class_token: Option<&'static str>,
    pub positions: &'static str,
    /// CLIP's `pre_layrnorm` prefix.
    pub pre_norm: Option<&'static str>,
}

pub fn embed(kind: Kind) -> EmbedNames {
    match kind {
        Kind::Clip => EmbedNames {
            patch_weight: "vision_model.embeddings.patch_embedding.weight",
            patch_bias: None,
            class_token: Some("vision_model.embeddings.class_embedding"),
            positions: "vision_model.embeddings.position_embedding.weight",
            pre_norm: Some("vision_model.pre_layrnorm"),
        },
        Kind::Siglip => EmbedNames {
            patch_weight: "vision_model.embeddings.patch_embedding.weight",
            patch_bias: Some("vision_model.embeddings.patch_embedding.bias"),
            class_token: None,
            positions: "vision_model.embeddings.position_embedding.weight",
            pre_norm: None,
        },
        Kind::Dinov2 => EmbedNames {
            patch_weight: "embeddings.patch_embeddings.projection.weight",
            patch_bias: Some("embeddings.patch_embeddings.projection.bias"),
            class_token: Some("embeddings.cls_token"),
            positions: "embeddings.position_embeddings",
            pre_norm: None,
        },
    }
}

/// Prefix of the final norm in the `head` block.
pub fn head_norm(kind: Kind) -> &'static str {
    match kind {
        Kind::Clip | Kind::Siglip => "vision_model.post_layernorm",
        Kind::Dinov2 => "layernorm",
    }
}
