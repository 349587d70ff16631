//! A Hugging Face `config.json` (CLIP, SigLIP, LLaVA, DINOv2, DINOv3) read into a
//! `VisionConfig`, each field checked and named in errors.

use std::path::Path;

use super::{Activation, Kind, Mlp, VisionConfig};
use crate::model::keys::Keys;
use crate::{Error, Result};

pub(super) fn from_config_json(path: &Path, keys: &Keys, llava: bool) -> Result<VisionConfig> {
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
    // CLIP or SigLIP here (the other kinds returned above). Defaults are those of
    // transformers' CLIPVisionConfig / SiglipVisionConfig.
    let clip = kind == Kind::Clip;
    let (act_default, patch_default, proj_default) = if clip {
        ("quick_gelu", 32, Some(512))
    } else {
        ("gelu_pytorch_tanh", 16, None)
    };
    let act = match vision.get("hidden_act") {
        None => act_default,
        Some(v) => v
            .as_str()
            .ok_or_else(|| bad(format!("hidden_act must be a string, got {v}")))?,
    };
    let eps = match vision.get("layer_norm_eps") {
        None => 1e-5,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| bad(format!("layer_norm_eps must be a number, got {v}")))?
            as f32,
    };
    let projection_dim = if clip {
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
    } else {
        None
    };
    Ok(VisionConfig {
        family: format!(
            "{} (config.json)",
            match (clip, llava) {
                (true, true) => "LLaVA CLIP",
                (true, false) => "CLIP",
                (false, _) => "SigLIP",
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
        llava: llava && clip,
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
    let has_head = keys.contains(crate::model::names::HEAD_PROBE);
    let use_head = match o.get("vision_use_head") {
        None | Some(serde_json::Value::Null) => has_head,
        Some(_) => json_bool(o, "vision_use_head", true, bad)?,
    };
    if use_head && !has_head {
        return Err(bad(format!(
            "vision_use_head is true but the file has no {} (set it to false to load the tower without its pooling head)",
            crate::model::names::HEAD_PROBE
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
        let mut c = super::super::table::dinov3("t", 64, 2, 4, 128, Mlp::Standard, 32);
        c.num_heads = 32; // head size 2: RoPE needs a multiple of 4
        assert!(c.validate().unwrap_err().message().contains("RoPE"));
    }
}
