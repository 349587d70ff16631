//! The loader every front end drives (CLI, YAML runs, C ABI): open a model, export its
//! graphs (or reuse them), build the sessions, encode.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::ArrayView4;

use crate::export::{self, Export, Granularity};
use crate::model::Model;
use crate::runtime::{Outputs, Pipeline, SessionOptions};
use crate::{Error, ErrorKind, Result};

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// A path to a `.safetensors` file.
    pub clip_vision: String,
    /// Root folder of exports; `None` = the default (see `export::default_graphs_root`).
    pub graphs_dir: Option<PathBuf>,
    pub granularity: Granularity,
    pub session: SessionOptions,
}

pub struct ClipVision {
    model: Arc<Model>,
    pipeline: Pipeline,
}

/// Resolves `clip_vision` to a model file.
pub fn resolve_model(clip_vision: &str) -> Result<PathBuf> {
    let p = Path::new(clip_vision);
    if clip_vision.trim().is_empty() {
        return Err(Error::invalid(
            "clip_vision is empty: give a .safetensors path",
        ));
    }
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    Err(Error::new(
        ErrorKind::NotFound,
        format!("model {clip_vision:?} not found (no such file)"),
    ))
}

impl ClipVision {
    pub fn load(opts: &LoadOptions) -> Result<ClipVision> {
        let path = resolve_model(&opts.clip_vision)?;
        let model = Arc::new(Model::open(&path)?);
        let export = export::export(&model, None, opts.graphs_dir.as_deref(), opts.granularity)?;
        let pipeline = Pipeline::build(model.clone(), export, &opts.session)?;
        Ok(ClipVision { model, pipeline })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub fn export(&self) -> &Export {
        self.pipeline.export()
    }
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn encode(
        &self,
        pixels: ArrayView4<f32>,
        outputs: &[String],
        batch_size: usize,
    ) -> Result<Outputs> {
        self.pipeline.encode(pixels, outputs, batch_size)
    }
}
