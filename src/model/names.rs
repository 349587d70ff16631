//! The tensor names each family's blocks read (after key normalisation): CLIP and SigLIP
//! in the HF layout of contract §2.2, DINOv2 in its original layout and DINOv3 in the layout
//! ComfyUI's clip_vision files have (contract §2.1b, no prefix).
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
    /// The key projection has a bias (all but DINOv3).
    pub key_bias: bool,
    /// `fc1` / `up_proj`, or SwiGLU's `weights_in` (both halves in one tensor).
    pub mlp_in: String,
    /// DINOv3's gated MLP: `gate_proj`.
    pub mlp_gate: Option<String>,
    /// `fc2`, or SwiGLU's `weights_out`.
    pub mlp_out: String,
    /// DINOv2's per-channel layer scales (`lambda1` tensors, full names).
    pub scale1: Option<String>,
    pub scale2: Option<String>,
}

pub fn layer(kind: Kind, mlp: Mlp, l: usize) -> LayerNames {
    match kind {
        Kind::Clip | Kind::Siglip | Kind::Siglip2 => {
            let p = format!("vision_model.encoder.layers.{l}");
            LayerNames {
                norm1: format!("{p}.layer_norm1"),
                norm2: format!("{p}.layer_norm2"),
                query: format!("{p}.self_attn.q_proj"),
                key: format!("{p}.self_attn.k_proj"),
                value: format!("{p}.self_attn.v_proj"),
                out: format!("{p}.self_attn.out_proj"),
                key_bias: true,
                mlp_in: format!("{p}.mlp.fc1"),
                mlp_gate: None,
                mlp_out: format!("{p}.mlp.fc2"),
                scale1: None,
                scale2: None,
            }
        }
        Kind::Dinov2 => {
            let p = format!("encoder.layer.{l}");
            let (mlp_in, mlp_out) = match mlp {
                Mlp::SwiGlu => ("weights_in", "weights_out"),
                Mlp::Standard | Mlp::Gated => ("fc1", "fc2"),
            };
            LayerNames {
                norm1: format!("{p}.norm1"),
                norm2: format!("{p}.norm2"),
                query: format!("{p}.attention.attention.query"),
                key: format!("{p}.attention.attention.key"),
                value: format!("{p}.attention.attention.value"),
                out: format!("{p}.attention.output.dense"),
                key_bias: true,
                mlp_in: format!("{p}.mlp.{mlp_in}"),
                mlp_gate: None,
                mlp_out: format!("{p}.mlp.{mlp_out}"),
                scale1: Some(format!("{p}.layer_scale1.lambda1")),
                scale2: Some(format!("{p}.layer_scale2.lambda1")),
            }
        }
        Kind::Dinov3 => {
            let p = format!("layer.{l}");
            LayerNames {
                norm1: format!("{p}.norm1"),
                norm2: format!("{p}.norm2"),
                query: format!("{p}.attention.q_proj"),
                key: format!("{p}.attention.k_proj"),
                value: format!("{p}.attention.v_proj"),
                out: format!("{p}.attention.o_proj"),
                key_bias: false,
                mlp_in: format!("{p}.mlp.up_proj"),
                mlp_gate: (mlp == Mlp::Gated).then(|| format!("{p}.mlp.gate_proj")),
                mlp_out: format!("{p}.mlp.down_proj"),
                scale1: Some(format!("{p}.layer_scale1.lambda1")),
                scale2: Some(format!("{p}.layer_scale2.lambda1")),
            }
        }
    }
}

/// True for a linear layer inside a transformer layer (int8 mode quantises exactly these).
pub fn is_layer_linear(prefix: &str) -> bool {
    ["vision_model.encoder.layers.", "encoder.layer.", "layer."]
        .iter()
        .any(|p| prefix.starts_with(p))
}

/// Tensors of the `embed` block.
pub struct EmbedNames {
    pub patch_weight: &'static str,
    pub patch_bias: Option<&'static str>,
    pub class_token: Option<&'static str>,
    /// DINOv3's register tokens `[1, R, D]`, after the class token.
    pub registers: Option<&'static str>,
    /// The position table (DINOv3 has none: RoPE).
    pub positions: Option<&'static str>,
    /// CLIP's `pre_layrnorm` prefix.
    pub pre_norm: Option<&'static str>,
}

pub fn embed(kind: Kind) -> EmbedNames {
    match kind {
        Kind::Clip => EmbedNames {
            patch_weight: "vision_model.embeddings.patch_embedding.weight",
            patch_bias: None,
            class_token: Some("vision_model.embeddings.class_embedding"),
            registers: None,
            positions: Some("vision_model.embeddings.position_embedding.weight"),
            pre_norm: Some("vision_model.pre_layrnorm"),
        },
        // SigLIP2 naflex: the same names, but the patch embedding is a `Linear` `[D, 3·P²]`.
        Kind::Siglip | Kind::Siglip2 => EmbedNames {
            patch_weight: "vision_model.embeddings.patch_embedding.weight",
            patch_bias: Some("vision_model.embeddings.patch_embedding.bias"),
            class_token: None,
            registers: None,
            positions: Some("vision_model.embeddings.position_embedding.weight"),
            pre_norm: None,
        },
        Kind::Dinov2 => EmbedNames {
            patch_weight: "embeddings.patch_embeddings.projection.weight",
            patch_bias: Some("embeddings.patch_embeddings.projection.bias"),
            class_token: Some("embeddings.cls_token"),
            registers: None,
            positions: Some("embeddings.position_embeddings"),
            pre_norm: None,
        },
        Kind::Dinov3 => EmbedNames {
            patch_weight: "embeddings.patch_embeddings.weight",
            patch_bias: Some("embeddings.patch_embeddings.bias"),
            class_token: Some("embeddings.cls_token"),
            registers: Some("embeddings.register_tokens"),
            positions: None,
            pre_norm: None,
        },
    }
}

/// Prefix of the final norm in the `head` block.
pub fn head_norm(kind: Kind) -> &'static str {
    match kind {
        Kind::Clip | Kind::Siglip | Kind::Siglip2 => "vision_model.post_layernorm",
        Kind::Dinov2 => "layernorm",
        Kind::Dinov3 => "norm",
    }
}

/// SigLIP2's attention-pooling head (`Siglip2MultiheadAttentionPoolingHead`): a learned probe
/// `[1, 1, D]` attends over the tokens (`nn.MultiheadAttention`, packed `in_proj` `[3D, D]`),
/// then `x + mlp(layernorm(x))`.
pub const HEAD_PROBE: &str = "vision_model.head.probe";
/// q, k and v stacked in that order, `[3D, D]` and `[3D]`.
pub const HEAD_IN_PROJ_WEIGHT: &str = "vision_model.head.attention.in_proj_weight";
pub const HEAD_IN_PROJ_BIAS: &str = "vision_model.head.attention.in_proj_bias";
pub const HEAD_OUT_PROJ: &str = "vision_model.head.attention.out_proj";
pub const HEAD_NORM: &str = "vision_model.head.layernorm";
pub const HEAD_MLP_IN: &str = "vision_model.head.mlp.fc1";
pub const HEAD_MLP_OUT: &str = "vision_model.head.mlp.fc2";
