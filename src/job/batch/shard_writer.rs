//! Encoded rows into shards: a shard fills to `shard_size` rows, is written atomically, and only
//! then listed in the index (itself rewritten atomically), so a killed run leaves whole shards.

use std::path::Path;

use ndarray::ArrayD;

use super::shard_index::{shard_name, ShardEntry, ShardIndex};
use crate::image::Grid;
use crate::job::output;
use crate::model::outputs::concat_rows;
use crate::Result;

/// The shard being filled.
#[derive(Default)]
struct OpenShard {
    sources: Vec<String>,
    keys: Vec<String>,
    outputs: Vec<(String, Vec<ArrayD<f32>>)>,
    /// naflex: the rows' grids.
    grids: Option<Vec<Grid>>,
}

impl OpenShard {
    fn push(&mut self, res: crate::model::Outputs, sources: Vec<String>, keys: Vec<String>) {
        self.keys.extend(keys);
        if let Some(g) = res.grids {
            self.grids.get_or_insert_with(Vec::new).extend(g);
        }
        if self.outputs.is_empty() {
            self.outputs = res.tensors.into_iter().map(|(n, t)| (n, vec![t])).collect();
        } else {
            for ((_, acc), (_, t)) in self.outputs.iter_mut().zip(res.tensors) {
                acc.push(t);
            }
        }
        self.sources.extend(sources);
    }
}

/// The shards of one run and its index.
pub(super) struct ShardWriter<'a> {
    dir: &'a Path,
    /// The model as the user named it, recorded in each shard.
    model_label: &'a str,
    /// The folder's index: finished shards (earlier runs' too) and skipped images.
    pub index: ShardIndex,
    open: OpenShard,
    /// Shards this run wrote.
    pub written: usize,
}

impl<'a> ShardWriter<'a> {
    pub fn new(dir: &'a Path, model_label: &'a str, index: ShardIndex) -> Self {
        ShardWriter {
            dir,
            model_label,
            index,
            open: OpenShard::default(),
            written: 0,
        }
    }

    /// Rows in the shard being filled.
    pub fn open_rows(&self) -> usize {
        self.open.sources.len()
    }

    /// Adds an encoded batch (`sources` and their canonical `keys` in row order).
    pub fn push(&mut self, res: crate::model::Outputs, sources: Vec<String>, keys: Vec<String>) {
        self.open.push(res, sources, keys);
    }

    /// Writes the shard being filled, when it has rows, and lists it in the index.
    pub fn finish_shard(&mut self) -> Result<()> {
        if self.open.sources.is_empty() {
            return Ok(());
        }
        let shard = std::mem::take(&mut self.open);
        write_shard(self.dir, &mut self.index, shard, self.model_label)?;
        self.written += 1;
        Ok(())
    }
}

fn write_shard(
    dir: &Path,
    index: &mut ShardIndex,
    shard: OpenShard,
    model_label: &str,
) -> Result<()> {
    // The next number no listed shard uses (a damaged shard dropped on resume leaves a gap).
    let mut n = index.shards.len();
    while index.shards.iter().any(|s| s.file == shard_name(n)) {
        n += 1;
    }
    let file = shard_name(n);
    let mut tensors = Vec::with_capacity(shard.outputs.len());
    for (name, parts) in shard.outputs {
        let t = concat_rows(parts).map_err(|e| e.context(format!("shard {file}: {name}")))?;
        tensors.push((name, t));
    }
    let mut meta = output::metadata(&shard.sources, model_label);
    meta.insert("shard".to_string(), n.to_string());
    output::write_safetensors(&dir.join(&file), &tensors, shard.grids.as_deref(), &meta)?;
    index.rows += shard.sources.len();
    index.shards.push(ShardEntry {
        file,
        rows: shard.sources.len(),
        sources: shard.sources,
        keys: shard.keys,
    });
    index.write(dir)
}
