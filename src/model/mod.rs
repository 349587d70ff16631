//! A CLIP Vision model file: validated header, HF-normalised keys, configuration, and the
//! list of blocks (`embed`, `layer.NN`, `head`) with the tensors and bytes each one uses.

pub mod block;
pub mod config;
pub mod folders;
pub mod keys;
pub mod names;
pub mod outputs;
pub mod safetensors;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use block::BlockKind;
pub use config::{Activation, Kind, Mlp, VisionConfig};
pub use keys::{KeyLayout, Keys, Layout, WeightRef};
pub use outputs::{Output, Outputs};
pub use safetensors::{DType, SafeTensors, TensorInfo};

use crate::{Error, Result};

/// One block of the forward pass and the HF keys of the weights it uses.
#[derive(Clone, Debug, Serialize)]
pub struct Block {
    #[serde(rename = "name")]
    pub kind: BlockKind,
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
        let mut blocks = vec![(BlockKind::Embed, self.embed_weights())];
        let layers = self.config.num_layers;
        for l in 0..layers {
            blocks.push((BlockKind::Layer { index: l, layers }, self.layer_weights(l)));
        }
        let head = self.head_weights();
        blocks.push((BlockKind::Head, head));
        blocks
            .into_iter()
            .map(|(kind, weights)| self.checked_block(kind, weights))
            .collect()
    }

    /// The embed block's tensors with their shapes.
    fn embed_weights(&self) -> Vec<(String, Vec<usize>)> {
        let c = &self.config;
        let (d, p, t) = (c.hidden_size, c.patch_size, c.tokens);
        // DINOv2 and DINOv3 keep a leading batch axis on their tables.
        let dino = c.kind.is_dino();
        let e = names::embed(c.kind);
        // naflex: a `Linear` over flattened patches, and the square table it resizes.
        let patch_shape = if c.kind.is_naflex() {
            vec![d, 3 * p * p]
        } else {
            vec![d, 3, p, p]
        };
        let mut embed: Vec<(String, Vec<usize>)> = vec![(e.patch_weight.into(), patch_shape)];
        if let Some(pos) = e.positions {
            embed.push((pos.into(), if dino { vec![1, t, d] } else { vec![t, d] }));
        }
        if let Some(r) = e.registers.filter(|_| c.registers > 0) {
            embed.push((r.into(), vec![1, c.registers, d]));
        }
        if let Some(b) = e.patch_bias {
            embed.push((b.into(), vec![d]));
        }
        if let Some(cls) = e.class_token {
            embed.push((cls.into(), if dino { vec![1, 1, d] } else { vec![d] }));
        }
        if let Some(n) = e.pre_norm {
            embed.push((format!("{n}.weight"), vec![d]));
            embed.push((format!("{n}.bias"), vec![d]));
        }
        embed
    }

    /// Layer `l`'s tensors with their shapes.
    fn layer_weights(&self, l: usize) -> Vec<(String, Vec<usize>)> {
        let c = &self.config;
        let (d, i_sz) = (c.hidden_size, c.intermediate_size);
        // SwiGLU's `weights_in` holds both halves.
        let mlp_rows = match c.mlp {
            config::Mlp::Standard | config::Mlp::Gated => i_sz,
            config::Mlp::SwiGlu => 2 * i_sz,
        };
        let n = names::layer(c.kind, c.mlp, l);
        let mut w = Vec::new();
        for ln in [&n.norm1, &n.norm2] {
            w.push((format!("{ln}.weight"), vec![d]));
            w.push((format!("{ln}.bias"), vec![d]));
        }
        for proj in [&n.query, &n.key, &n.value, &n.out] {
            w.push((format!("{proj}.weight"), vec![d, d]));
            if proj != &n.key || n.key_bias {
                w.push((format!("{proj}.bias"), vec![d]));
            }
        }
        for m in std::iter::once(&n.mlp_in).chain(&n.mlp_gate) {
            w.push((format!("{m}.weight"), vec![mlp_rows, d]));
            w.push((format!("{m}.bias"), vec![mlp_rows]));
        }
        w.push((format!("{}.weight", n.mlp_out), vec![d, i_sz]));
        w.push((format!("{}.bias", n.mlp_out), vec![d]));
        for s in [&n.scale1, &n.scale2].into_iter().flatten() {
            w.push((s.clone(), vec![d]));
        }
        w
    }

    /// The head block's tensors with their shapes; for LLaVA also notes the projector's widths.
    fn head_weights(&mut self) -> Vec<(String, Vec<usize>)> {
        let c = &self.config;
        let d = c.hidden_size;
        let norm = names::head_norm(c.kind);
        let mut head = vec![
            (format!("{norm}.weight"), vec![d]),
            (format!("{norm}.bias"), vec![d]),
        ];
        if c.kind == config::Kind::Clip {
            let proj = c.projection_dim.unwrap_or(0);
            head.push(("visual_projection.weight".into(), vec![proj, d]));
        }
        if c.attention_pool {
            let i_sz = c.intermediate_size;
            head.push((names::HEAD_PROBE.into(), vec![1, 1, d]));
            head.push((names::HEAD_IN_PROJ_WEIGHT.into(), vec![3 * d, d]));
            head.push((names::HEAD_IN_PROJ_BIAS.into(), vec![3 * d]));
            for (prefix, shape) in [
                (names::HEAD_OUT_PROJ, vec![d, d]),
                (names::HEAD_MLP_IN, vec![i_sz, d]),
                (names::HEAD_MLP_OUT, vec![d, i_sz]),
            ] {
                let rows = shape[0];
                head.push((format!("{prefix}.weight"), shape));
                head.push((format!("{prefix}.bias"), vec![rows]));
            }
            head.push((format!("{}.weight", names::HEAD_NORM), vec![d]));
            head.push((format!("{}.bias", names::HEAD_NORM), vec![d]));
        }
        if c.llava {
            let rows = |key: &str| {
                self.keys
                    .shape(key)
                    .and_then(|s| s.first().copied())
                    .unwrap_or(0)
            };
            let o1 = rows("multi_modal_projector.linear_1.weight");
            let o2 = rows("multi_modal_projector.linear_2.weight");
            head.push(("multi_modal_projector.linear_1.weight".into(), vec![o1, d]));
            head.push(("multi_modal_projector.linear_1.bias".into(), vec![o1]));
            head.push(("multi_modal_projector.linear_2.weight".into(), vec![o2, o1]));
            head.push(("multi_modal_projector.linear_2.bias".into(), vec![o2]));
            self.projector = Some((o1, o2));
        }
        head
    }

    /// Block `kind` of `weights`, each present with its shape and a float dtype.
    fn checked_block(&self, kind: BlockKind, weights: Vec<(String, Vec<usize>)>) -> Result<Block> {
        let path = self.path.display();
        let mut bytes = 0;
        for (key, shape) in &weights {
            let w = self.keys.get(key).ok_or_else(|| {
                let layout = match self.keys.layout {
                    KeyLayout::OpenClip => " (open_clip layout, after renaming)",
                    KeyLayout::HuggingFace => "",
                };
                Error::model(format!(
                    "{path}: missing tensor {key}{layout} with shape {shape:?}, needed by block {kind} of {}",
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
            kind,
            weights: weights.into_iter().map(|(k, _)| k).collect(),
            bytes,
        })
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
        if let Some(p) = self.config.patching() {
            return Err(Error::invalid(format!(
                "pixel tensor has shape {shape:?}; this SigLIP2 naflex model takes patches [B, T ≤ {}, {}] with each image's patch grid (spatial_shapes), not square pixels",
                p.num_patches,
                p.patch_len()
            )));
        }
        let s = self.config.image_size;
        if shape.len() != 4 || shape[0] == 0 || shape[1] != 3 || shape[2] != s || shape[3] != s {
            return Err(Error::invalid(format!(
                "pixel tensor has shape {shape:?}; this model needs [B, 3, {s}, {s}] (NCHW, B ≥ 1)"
            )));
        }
        Ok(())
    }

    /// Checks a batch of model inputs: square pixels as [`Model::check_pixels`], or naflex
    /// patches `[B, T, 3·P²]` (B ≥ 1, 1 ≤ T ≤ num_patches) with one grid per image that fits
    /// in T patches and in the position table's bounds.
    pub fn check_input(&self, px: &crate::image::PixelsView<'_>) -> Result<()> {
        let (values, grids) = match px {
            crate::image::PixelsView::Square(a) => return self.check_pixels(a.shape()),
            crate::image::PixelsView::Patches { values, grids } => (values, grids),
        };
        let Some(p) = self.config.patching() else {
            let s = self.config.image_size;
            return Err(Error::invalid(format!(
                "patches {:?} given; this model takes square pixels [B, 3, {s}, {s}] (NCHW)",
                values.shape()
            )));
        };
        let shape = values.shape();
        if shape[0] == 0 || shape[1] == 0 || shape[1] > p.num_patches || shape[2] != p.patch_len() {
            return Err(Error::invalid(format!(
                "patch tensor has shape {shape:?}; this model needs [B, T, {}] with B ≥ 1 and 1 ≤ T ≤ {} (flattened {}x{} RGB patches)",
                p.patch_len(),
                p.num_patches,
                p.patch_size,
                p.patch_size
            )));
        }
        if grids.len() != shape[0] {
            return Err(Error::invalid(format!(
                "{} spatial shapes for {} images; give one (rows, cols) patch grid per image",
                grids.len(),
                shape[0]
            )));
        }
        for (i, g) in grids.iter().enumerate() {
            if g.rows == 0 || g.cols == 0 || g.patches() > shape[1] {
                return Err(Error::invalid(format!(
                    "spatial shape {} of image {i}: a grid needs at least one patch a side and at most {} patches (the patch rows given)",
                    g,
                    shape[1]
                )));
            }
        }
        Ok(())
    }

    /// Every output this model can produce, in contract §3 order (`all_hidden_states` included:
    /// every family has it, on request).
    pub fn available_outputs(&self) -> Vec<Output> {
        let c = &self.config;
        outputs::available(c.llava)
            .into_iter()
            // naflex towers pool with their attention head, which a file may lack.
            .filter(|&o| o != Output::ImageEmbeds || !c.kind.is_naflex() || c.attention_pool)
            .collect()
    }

    /// The outputs produced when none are named: all but the on-request ones.
    pub fn default_outputs(&self) -> Vec<Output> {
        self.resolve_outputs(&[]).unwrap_or_default()
    }

    /// Names of the default outputs, in contract §3 order.
    pub fn output_names(&self) -> Vec<&'static str> {
        self.default_outputs().iter().map(|o| o.name()).collect()
    }

    /// Names of the outputs produced only when asked for.
    pub fn on_request_output_names(&self) -> Vec<&'static str> {
        self.available_outputs()
            .iter()
            .filter(|o| o.on_request_only())
            .map(|o| o.name())
            .collect()
    }

    /// The requested output names checked against what this model produces (duplicates
    /// dropped, contract order); empty means the default set.
    pub fn resolve_outputs(&self, requested: &[String]) -> Result<Vec<Output>> {
        outputs::resolve_outputs(&self.available_outputs(), requested)
    }

    /// As [`Model::resolve_outputs`], as names.
    pub fn resolve_output_names(&self, requested: &[String]) -> Result<Vec<String>> {
        let outputs = self.resolve_outputs(requested)?;
        Ok(outputs.iter().map(|o| o.name().to_string()).collect())
    }
}
