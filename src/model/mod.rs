//! A CLIP Vision model file: validated header, HF-normalised keys, configuration, and the
//! list of blocks (`embed`, `layer.NN`, `head`) with the tensors and bytes each one uses.

pub mod config;
pub mod keys;
pub mod safetensors;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use config::{Activation, Kind, VisionConfig};
pub use keys::{KeyLayout, Keys, Layout, WeightRef};
pub use safetensors::{DType, SafeTensors, TensorInfo};

use crate::{Error, Result};

/// One block of the forward pass and the HF keys of the weights it uses.
#[derive(Clone, Debug, Serialize)]
pub struct Block {
    pub name: String,
    pub weights: Vec<String>,
    /// Bytes of those weights as stored in the file.
    pub bytes: u64,
}

pub struct Model {
    path: PathBuf,
    pub file: SafeTensors,
    pub keys: Keys,
    pub config: VisionConfig,
    pub blocks: Vec<Block>,
    /// LLaVA projector widths (linear_1 out, linear_2 out).
    pub projector: Option<(usize, usize)>,
}

/// The name of layer `i` of `n`: two digits, three when there are more than 99 layers.
pub fn layer_name(i: usize, n: usize) -> String {
    if n > 99 {
        format!("layer.{i:03}")
    } else {
        format!("layer.{i:02}")
    }
}

impl Model {
    /// Opens and validates a model: reads the header and `config.json`, never the weights.
    pub fn open(path: &Path) -> Result<Model> {
        let file = SafeTensors::open(path)?;
        let keys = Keys::from_file(&file);
        let config = config::detect(path, &keys).map_err(|e| e.context(path.display()))?;
        let mut model = Model {
            path: path.to_path_buf(),
            file,
            keys,
            config,
            blocks: Vec::new(),
            projector: None,
        };
        model.blocks = model.check_and_list_blocks()?;
        Ok(model)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn weight(&self, key: &str) -> &WeightRef {
        // Every key a block lists was checked to exist in `check_and_list_blocks`.
        self.keys
            .get(key)
            .expect("block weights are validated at open")
    }

    pub fn model_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.bytes).sum()
    }

    /// Bytes of the block weights at 4 bytes an element: what fp32 sessions hold, whatever
    /// the file's dtype.
    pub fn fp32_weight_bytes(&self) -> u64 {
        self.blocks
            .iter()
            .flat_map(|b| &b.weights)
            .map(|k| 4 * self.weight(k).info.shape.iter().product::<usize>() as u64)
            .sum()
    }

    /// Checks every tensor the family needs (presence, shape, float dtype) and groups them into blocks.
    fn check_and_list_blocks(&mut self) -> Result<Vec<Block>> {
        let c = &self.config;
        let (d, i_sz, p) = (c.hidden_size, c.intermediate_size, c.patch_size);
        let clip = c.kind == config::Kind::Clip;
        let mut blocks = Vec::new();

        let mut embed: Vec<(String, Vec<usize>)> = vec![
            (
                "vision_model.embeddings.patch_embedding.weight".into(),
                vec![d, 3, p, p],
            ),
            (
                "vision_model.embeddings.position_embedding.weight".into(),
                vec![c.tokens, d],
            ),
        ];
        if clip {
            embed.push(("vision_model.embeddings.class_embedding".into(), vec![d]));
            embed.push(("vision_model.pre_layrnorm.weight".into(), vec![d]));
            embed.push(("vision_model.pre_layrnorm.bias".into(), vec![d]));
        } else {
            embed.push((
                "vision_model.embeddings.patch_embedding.bias".into(),
                vec![d],
            ));
        }
        blocks.push(("embed".to_string(), embed));

        for l in 0..c.num_layers {
            let pre = format!("vision_model.encoder.layers.{l}.");
            let mut w = Vec::new();
            for ln in ["layer_norm1", "layer_norm2"] {
                w.push((format!("{pre}{ln}.weight"), vec![d]));
                w.push((format!("{pre}{ln}.bias"), vec![d]));
            }
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                w.push((format!("{pre}self_attn.{proj}.weight"), vec![d, d]));
                w.push((format!("{pre}self_attn.{proj}.bias"), vec![d]));
            }
            w.push((format!("{pre}mlp.fc1.weight"), vec![i_sz, d]));
            w.push((format!("{pre}mlp.fc1.bias"), vec![i_sz]));
            w.push((format!("{pre}mlp.fc2.weight"), vec![d, i_sz]));
            w.push((format!("{pre}mlp.fc2.bias"), vec![d]));
            blocks.push((layer_name(l, c.num_layers), w));
        }

        let mut head = vec![
            ("vision_model.post_layernorm.weight".to_string(), vec![d]),
            ("vision_model.post_layernorm.bias".to_string(), vec![d]),
        ];
        if clip {
            let proj = c.projection_dim.unwrap_or(0);
            head.push(("visual_projection.weight".into(), vec![proj, d]));
        }
        if c.llava {
            let o1 = self
                .keys
                .shape("multi_modal_projector.linear_1.weight")
                .and_then(|s| s.first().copied())
                .unwrap_or(0);
            let o2 = self
                .keys
                .shape("multi_modal_projector.linear_2.weight")
                .and_then(|s| s.first().copied())
                .unwrap_or(0);
            head.push(("multi_modal_projector.linear_1.weight".into(), vec![o1, d]));
            head.push(("multi_modal_projector.linear_1.bias".into(), vec![o1]));
            head.push(("multi_modal_projector.linear_2.weight".into(), vec![o2, o1]));
            head.push(("multi_modal_projector.linear_2.bias".into(), vec![o2]));
            self.projector = Some((o1, o2));
        }
        blocks.push(("head".to_string(), head));

        let path = self.path.display();
        blocks
            .into_iter()
            .map(|(name, weights)| {
                let mut bytes = 0;
                for (key, shape) in &weights {
                    let w = self.keys.get(key).ok_or_else(|| {
                        let layout = match self.keys.layout {
                            KeyLayout::OpenClip => " (open_clip layout, after renaming)",
                            KeyLayout::HuggingFace => "",
                        };
                        Error::model(format!(
                            "{path}: missing tensor {key}{layout} with shape {shape:?}, needed by block {name} of {}",
                            self.config.family
                        ))
                    })?;
                    if w.info.shape != *shape || shape.contains(&0) {
                        return Err(Error::model(format!(
                            "{path}: tensor {} has shape {:?}, expected {shape:?} for {}",
                            w.file_key, w.info.shape, self.config.family
                        )));
                    }
                    if !w.info.dtype.is_weight_float() {
                        return Err(Error::model(format!(
                            "{path}: tensor {} has dtype {}, expected F32, F16 or BF16",
                            w.file_key,
                            w.info.dtype.name()
                        )));
                    }
                    bytes += w.info.nbytes;
                }
                Ok(Block {
                    name,
                    weights: weights.into_iter().map(|(k, _)| k).collect(),
                    bytes,
                })
            })
            .collect()
    }

    /// A weight's values as f32 in the layout stored in the file (reads the data).
    pub fn weight_f32(&self, key: &str) -> Result<Vec<f32>> {
        let w = self
            .keys
            .get(key)
            .ok_or_else(|| Error::model(format!("missing tensor {key}")))?;
        let bytes = self.file.data(&w.info)?;
        w.info.dtype.to_f32(bytes).ok_or_else(|| {
            Error::model(format!(
                "tensor {key} is {}, not a float",
                w.info.dtype.name()
            ))
        })
    }

    /// Counts of weight bytes by dtype, for `inspect`.
    pub fn dtype_summary(&self) -> Vec<(&'static str, usize, u64)> {
        let mut by: std::collections::BTreeMap<&'static str, (usize, u64)> = Default::default();
        for b in &self.blocks {
            for k in &b.weights {
                let info = &self.weight(k).info;
                let e = by.entry(info.dtype.name()).or_default();
                e.0 += 1;
                e.1 += info.nbytes;
            }
        }
        by.into_iter().map(|(k, (n, b))| (k, n, b)).collect()
    }

    /// A content hash of the whole file (xxh3-128, hex): the identity of an export. Read in
    /// chunks rather than through the map, so hashing leaves no pages in our resident set.
    pub fn content_id(&self) -> Result<String> {
        use std::io::Read;
        let mut f = std::fs::File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(&self.path, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(format!("{:032x}", h.digest128()))
    }

    /// Checks that `shape` is `[B, 3, S, S]` pixels for this model.
    pub fn check_pixels(&self, shape: &[usize]) -> Result<()> {
        let s = self.config.image_size;
        if shape.len() != 4 || shape[0] == 0 || shape[1] != 3 || shape[2] != s || shape[3] != s {
            return Err(Error::invalid(format!(
                "pixel tensor has shape {shape:?}; this model needs [B, 3, {s}, {s}] (NCHW, B ≥ 1)"
            )));
        }
        Ok(())
    }

    /// Outputs this model produces, in SPEC §3 order.
    pub fn output_names(&self) -> Vec<&'static str> {
        let mut v = vec![
            "last_hidden_state",
            "image_embeds",
            "penultimate_hidden_states",
        ];
        if self.config.llava {
            v.push("mm_projected");
        }
        v
    }
}
