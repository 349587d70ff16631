//! Tensor names normalised to the Hugging Face layout (contract §2.2–§2.3). An open_clip file
//! is mapped onto HF names without copying: `in_proj_weight` rows become three views into
//! the file, and `proj` is marked as stored transposed.

use std::collections::BTreeMap;

use super::safetensors::{SafeTensors, TensorInfo};

/// How a 2-D weight is laid out in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[out, in]`, as `torch.nn.Linear` stores it.
    OutIn,
    /// `[in, out]` (open_clip's `proj`).
    InOut,
}

/// A tensor under its HF name: where its bytes are and how they are laid out.
#[derive(Clone, Debug)]
pub struct WeightRef {
    /// The key in the file (an open_clip key for open_clip files).
    pub file_key: String,
    /// Dtype, logical HF shape, and absolute byte range in the file.
    pub info: TensorInfo,
    pub layout: Layout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLayout {
    HuggingFace,
    OpenClip,
}

pub struct Keys {
    pub layout: KeyLayout,
    map: BTreeMap<String, WeightRef>,
}

impl Keys {
    pub fn from_file(st: &SafeTensors) -> Keys {
        let tensors = st.tensors();
        if tensors.contains_key("visual.transformer.resblocks.0.attn.in_proj_weight") {
            Keys {
                layout: KeyLayout::OpenClip,
                map: open_clip(tensors),
            }
        } else {
            let map = tensors
                .iter()
                .map(|(k, info)| {
                    (
                        k.clone(),
                        WeightRef {
                            file_key: k.clone(),
                            info: info.clone(),
                            layout: Layout::OutIn,
                        },
                    )
                })
                .collect();
            Keys {
                layout: KeyLayout::HuggingFace,
                map,
            }
        }
    }
    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
    pub fn get(&self, key: &str) -> Option<&WeightRef> {
        self.map.get(key)
    }
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.map.get(key).map(|w| &w.info.shape[..])
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &WeightRef)> {
        self.map.iter()
    }
}

fn open_clip(tensors: &BTreeMap<String, TensorInfo>) -> BTreeMap<String, WeightRef> {
    let mut map = BTreeMap::new();
    let mut put = |hf: String, file_key: &str, info: TensorInfo, layout: Layout| {
        map.insert(
            hf,
            WeightRef {
                file_key: file_key.to_string(),
                info,
                layout,
            },
        );
    };
    for (key, info) in tensors {
        let Some(rest) = key.strip_prefix("visual.") else {
            continue;
        };
        let simple = |hf: &str| Some(Mapped::One(format!("vision_model.{hf}")));
        let mapped = match rest {
            "class_embedding" => simple("embeddings.class_embedding"),
            "conv1.weight" => simple("embeddings.patch_embedding.weight"),
            "conv1.bias" => simple("embeddings.patch_embedding.bias"),
            "positional_embedding" => simple("embeddings.position_embedding.weight"),
            "ln_pre.weight" => simple("pre_layrnorm.weight"),
            "ln_pre.bias" => simple("pre_layrnorm.bias"),
            "ln_post.weight" => simple("post_layernorm.weight"),
            "ln_post.bias" => simple("post_layernorm.bias"),
            "proj" => {
                let mut t = info.clone();
                t.shape.reverse();
                put("visual_projection.weight".into(), key, t, Layout::InOut);
                None
            }
            _ => resblock(rest),
        };
        match mapped {
            Some(Mapped::One(hf)) => put(hf, key, info.clone(), Layout::OutIn),
            Some(Mapped::InProj(layer, suffix)) => {
                // Rows are q, k, v in that order: three contiguous thirds of the tensor.
                let rows = info.shape.first().copied().unwrap_or(0);
                if rows % 3 != 0 || info.shape.is_empty() {
                    // Left unmapped: the shape check then reports the missing q/k/v keys.
                    continue;
                }
                let third = info.nbytes / 3;
                for (i, name) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                    let mut t = info.clone();
                    t.shape[0] = rows / 3;
                    t.offset = info.offset + third * i as u64;
                    t.nbytes = third;
                    put(
                        format!("vision_model.encoder.layers.{layer}.self_attn.{name}.{suffix}"),
                        key,
                        t,
                        Layout::OutIn,
                    );
                }
            }
            None => {}
        }
    }
    map
}

enum Mapped {
    One(String),
    InProj(usize, &'static str),
}

fn resblock(rest: &str) -> Option<Mapped> {
    let rest = rest.strip_prefix("transformer.resblocks.")?;
    let (idx, tail) = rest.split_once('.')?;
    let layer: usize = idx.parse().ok()?;
    let hf_tail = match tail {
        "attn.in_proj_weight" => return Some(Mapped::InProj(layer, "weight")),
        "attn.in_proj_bias" => return Some(Mapped::InProj(layer, "bias")),
        "ln_1.weight" => "layer_norm1.weight",
        "ln_1.bias" => "layer_norm1.bias",
        "ln_2.weight" => "layer_norm2.weight",
        "ln_2.bias" => "layer_norm2.bias",
        "mlp.c_fc.weight" => "mlp.fc1.weight",
        "mlp.c_fc.bias" => "mlp.fc1.bias",
        "mlp.c_proj.weight" => "mlp.fc2.weight",
        "mlp.c_proj.bias" => "mlp.fc2.bias",
        "attn.out_proj.weight" => "self_attn.out_proj.weight",
        "attn.out_proj.bias" => "self_attn.out_proj.bias",
        _ => return None,
    };
    Some(Mapped::One(format!(
        "vision_model.encoder.layers.{layer}.{hf_tail}"
    )))
}
