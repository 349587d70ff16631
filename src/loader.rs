//! The loader every front end drives (CLI, YAML runs, C ABI): open a model, plan it across
//! the devices, export its graphs (or reuse them), build the sessions, encode. Loaded models
//! are kept in a process-wide registry so `eject_models` can release the others (contract §5.6).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::export::{self, ComputeDtype, Export, Granularity};
use crate::image::PixelsView;
use crate::model::folders::ModelFolders;
use crate::model::Outputs;
use crate::model::{BlockKind, Model, VisionConfig};
use crate::plan::{self, BlockSize, Device, Engine, Inventory, LoaderOptions, Plan};
use crate::runtime::engine::{self, Engines};
use crate::runtime::{gpu, openvino, Pipeline, StagePlan};
use crate::{Error, ErrorKind, Result};

/// Batch size the activation reserve of the fit check is sized for: the default one.
pub const RESERVE_BATCH: u64 = plan::DEFAULT_BATCH_SIZE as u64;

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// A path to a `.safetensors` file (or a name in the model folders, see `model::folders`).
    pub clip_vision: String,
    /// The loader inputs of contract §1 and the donor policy.
    pub loader: LoaderOptions,
    /// Replaces the device inventory for planning (`cuda:0=24GiB,cpu=64GiB`).
    pub simulate_devices: Option<String>,
    /// Root folder of exports; `None` = the default (see `export::default_graphs_root`).
    pub graphs_dir: Option<PathBuf>,
    pub granularity: Granularity,
    /// Compute precision (`int8` runs on the CPU only).
    pub dtype: ComputeDtype,
    /// Cut encodes into micro-batches of N that flow through the device segments
    /// concurrently (`--micro-batch`).
    pub micro_batch: Option<usize>,
    /// Test hook: blocks (or `all`) run with their weights fed as inputs each pass, as
    /// streamed blocks are, even when the plan keeps them resident.
    pub force_streamed: Vec<String>,
    /// Folders a model name is looked up in (contract §2.5); the default uses `COMFYUI_PATH`.
    pub model_folders: ModelFolders,
    /// The OpenVINO plugin library (or a folder holding it); `None` = searched for
    /// (`runtime::openvino::candidates`). One per process.
    pub openvino_ep: Option<PathBuf>,
}

/// Everything that makes one loaded model differ from another: two loads with equal keys
/// give the same sessions and outputs, so a loaded model may serve both (YAML runs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoadKey {
    /// The model file, canonical.
    pub file: PathBuf,
    pub device: Option<String>,
    /// `virtual_vram_gb` as bits (f64 has no `Eq`); `None` = not set.
    pub virtual_vram_gb: Option<u64>,
    pub donor_device: String,
    pub expert_mode_allocations: String,
    pub eject_models: bool,
    pub donor_policy: crate::plan::DonorPolicy,
    pub simulate_devices: Option<String>,
    pub graphs_dir: Option<PathBuf>,
    pub granularity: Granularity,
    pub dtype: ComputeDtype,
    pub micro_batch: Option<usize>,
    pub force_streamed: Vec<String>,
    pub cpu_engine: crate::plan::CpuEngine,
    pub openvino_ep: Option<PathBuf>,
}

impl LoadOptions {
    /// The cache key of these options for the resolved model `file`. Every field is named
    /// (no `..`), so a new option cannot be left out of the key by accident.
    pub fn key(&self, file: &Path) -> LoadKey {
        let LoadOptions {
            clip_vision: _,
            loader,
            simulate_devices,
            graphs_dir,
            granularity,
            dtype,
            micro_batch,
            force_streamed,
            // Only used to find the file, which the key holds.
            model_folders: _,
            openvino_ep,
        } = self;
        let LoaderOptions {
            device,
            virtual_vram_gb,
            donor_device,
            expert_mode_allocations,
            eject_models,
            donor_policy,
            cpu_engine,
        } = loader;
        LoadKey {
            file: std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf()),
            device: device.clone(),
            virtual_vram_gb: virtual_vram_gb.map(f64::to_bits),
            donor_device: donor_device.clone(),
            expert_mode_allocations: expert_mode_allocations.clone(),
            eject_models: *eject_models,
            donor_policy: *donor_policy,
            simulate_devices: simulate_devices.clone(),
            graphs_dir: graphs_dir.clone(),
            granularity: *granularity,
            dtype: *dtype,
            micro_batch: *micro_batch,
            force_streamed: force_streamed.clone(),
            cpu_engine: *cpu_engine,
            openvino_ep: openvino_ep.clone(),
        }
    }
}

/// Bytes the fit check keeps free for one batch of activations on each executing device.
pub fn activation_reserve(model: &Model) -> u64 {
    activation_bytes(&model.config, RESERVE_BATCH)
}

/// An upper estimate of the f32 activations one transformer layer holds at once for `batch`
/// images (contract §5.3): per image four `[T,D]` hidden states, two `[T,I]` MLP activations
/// (before and after the activation function) and two `[heads,T,T]` attention maps (scores
/// and probabilities). The fit check's reserve and `bench`'s RSS budget both use it.
pub fn activation_bytes(c: &VisionConfig, batch: u64) -> u64 {
    let (t, d, i, h) = (
        c.tokens as u64,
        c.hidden_size as u64,
        c.intermediate_size as u64,
        c.num_heads as u64,
    );
    // Saturating: a hostile config must not wrap around to a tiny reserve.
    let per_image = (4 * t * d)
        .saturating_add(2u64.saturating_mul(t).saturating_mul(i))
        .saturating_add(2u64.saturating_mul(h).saturating_mul(t).saturating_mul(t));
    per_image.saturating_mul(batch.saturating_mul(4))
}

/// The inventory for planning: simulated when asked, else what this machine has.
pub fn inventory(simulate: Option<&str>) -> Result<Inventory> {
    match simulate {
        Some(spec) if !spec.trim().is_empty() => Inventory::simulate(spec),
        _ => Ok(Inventory::detect()),
    }
}

/// Whether the loader options name an Intel GPU anywhere (then the inventory needs the
/// OpenVINO plugin's devices).
fn mentions_xpu(loader: &LoaderOptions) -> bool {
    let named = |s: &str| s.to_ascii_lowercase().contains("xpu");
    loader.device.as_deref().is_some_and(named)
        || named(&loader.donor_device)
        || named(&loader.expert_mode_allocations)
}

/// The inventory for planning `loader`'s options: [`inventory`], plus the Intel GPUs the
/// OpenVINO plugin (found from `openvino_ep`) lists when the options name an `xpu` device on
/// a real (not simulated) inventory. A missing plugin is an error then, naming where it looked.
pub fn inventory_for(
    simulate: Option<&str>,
    loader: &LoaderOptions,
    openvino_ep: Option<&Path>,
) -> Result<Inventory> {
    let mut inv = inventory(simulate)?;
    if !inv.simulated && mentions_xpu(loader) {
        add_xpus(&mut inv, openvino_ep, "an xpu:N device")?;
    }
    Ok(inv)
}

/// This machine's devices with the Intel GPUs of the OpenVINO plugin when it is found (loading
/// ONNX Runtime and OpenVINO then); a missing or failing plugin only leaves them out.
pub fn detected_inventory() -> Inventory {
    let mut inv = Inventory::detect();
    if openvino::find(None).is_ok() {
        if let Err(e) = add_xpus(&mut inv, None, "listing Intel GPUs") {
            tracing::debug!("Intel GPUs not listed: {e}");
        }
    }
    inv
}

/// Adds the Intel GPUs the OpenVINO plugin lists to `inv`.
pub fn add_xpus(inv: &mut Inventory, openvino_ep: Option<&Path>, needed_for: &str) -> Result<()> {
    match openvino::plugin(openvino_ep)? {
        openvino::Availability::Ready(p) => {
            for d in &p.devices {
                if let Some(n) = d.xpu {
                    inv.add_xpu(n, &d.name, d.total_bytes);
                }
            }
            Ok(())
        }
        openvino::Availability::Missing { looked } => Err(Error::new(
            ErrorKind::NotFound,
            openvino::not_found_message(&looked, needed_for),
        )),
    }
}

/// Plans `model` from its header alone. CPU blocks are named with the MLAS engine; see
/// [`plan_with_engines`] for the engines a load resolves.
pub fn plan_model(model: &Model, loader: &LoaderOptions, inv: &Inventory) -> Result<Plan> {
    let blocks: Vec<BlockSize> = model
        .blocks
        .iter()
        .map(|b| BlockSize::new(b.kind, b.bytes))
        .collect();
    plan::plan(&blocks, loader, inv, activation_reserve(model))
}

/// [`plan_model`], then the engines resolved for the plan (`cpu_engine` against the dtype and
/// the installed plugin), named on its blocks.
pub fn plan_with_engines(
    model: &Model,
    loader: &LoaderOptions,
    inv: &Inventory,
    dtype: ComputeDtype,
    openvino_ep: Option<&Path>,
) -> Result<(Plan, Engines)> {
    let mut plan = plan_model(model, loader, inv)?;
    let engines = engine::resolve(loader.cpu_engine, dtype, &plan.exec_devices(), openvino_ep)?;
    plan.set_cpu_engine(engines.cpu);
    Ok((plan, engines))
}

/// What a model needs to (re)build its sessions.
struct Shared {
    id: u64,
    model: Arc<Model>,
    export: Export,
    plan: Plan,
    stages: Vec<StagePlan>,
    engines: Engines,
    micro_batch: Option<usize>,
    /// `None` while ejected; rebuilt on the next encode.
    pipeline: RwLock<Option<Arc<Pipeline>>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static REGISTRY: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<Weak<Shared>>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A loaded model. Cheap to share across threads; dropping the last handle frees it.
pub struct ClipVision {
    shared: Arc<Shared>,
}

impl ClipVision {
    pub fn load(opts: &LoadOptions) -> Result<ClipVision> {
        let path = opts.model_folders.resolve(&opts.clip_vision)?;
        let model = Arc::new(Model::open(&path)?);
        let sim = opts.simulate_devices.as_deref();
        let ov = opts.openvino_ep.as_deref();
        let inv = || load_inventory(sim, &opts.loader, ov);
        let plan_it =
            |inv: &Inventory| plan_with_engines(&model, &opts.loader, inv, opts.dtype, ov);
        // contract §5.6: the fit check counts what ejecting frees. Plan first against what the
        // loaded models hold; only a plan that does not fit ejects before checking again, so
        // a load that fails for another reason (a bad option) leaves the others loaded.
        let (plan, engines) = match plan_it(&inv()?) {
            Err(e) if e.kind() == ErrorKind::DoesNotFit && opts.loader.eject_models => {
                let compute = plan::compute_device(&opts.loader, &inv()?)?;
                if eject_others(compute) == 0 {
                    return Err(e);
                }
                crate::runtime::heap::release_free();
                plan_it(&inv()?)?
            }
            r => r?,
        };
        for w in &plan.warnings {
            tracing::warn!("plan: {w}");
        }
        if let Some(n) = &engines.note {
            tracing::info!("{n}");
        }
        if let Some(w) = crate::runtime::dtype::check(opts.dtype, &plan.exec_devices())? {
            tracing::warn!("{w}");
        }
        // Fail before any export or session work when a device cannot run here.
        for d in plan.exec_devices() {
            gpu::check_usable(d)?;
            engine::check_usable(d, &engines)?;
        }
        // The test hook's block names are checked like any name from outside.
        let layers = model.config.num_layers;
        let mut forced_kinds = Vec::new();
        for name in opts.force_streamed.iter().filter(|b| *b != "all") {
            forced_kinds
                .push(BlockKind::parse(name, layers).map_err(|e| e.context("stream_blocks"))?);
        }
        let all_forced = opts.force_streamed.iter().any(|b| b == "all");
        let forced = |kind: BlockKind| all_forced || forced_kinds.contains(&kind);
        let stages: Vec<StagePlan> = plan
            .blocks
            .iter()
            .map(|b| StagePlan {
                exec: b.exec,
                engine: b.engine,
                streamed: b.home != b.exec || forced(b.kind),
            })
            .collect();
        if opts.dtype == ComputeDtype::Int8 && stages.iter().any(|s| s.streamed) {
            return Err(Error::invalid(
                "dtype: int8 has no streamed-weights variant; use `dtype=fp32`",
            ));
        }
        if opts.micro_batch == Some(0) {
            return Err(Error::invalid("`micro_batch` must be at least 1"));
        }
        if let Some(m) = opts.micro_batch {
            if !stages.iter().any(|s| s.exec.is_gpu()) {
                tracing::warn!(
                    "micro_batch {m}: every block of this plan runs on the CPU, where micro-batches only cut each batch smaller (they overlap GPU device segments); the results are the same, usually slower"
                );
            }
        }
        let export = export::export_with(
            &model,
            None,
            opts.graphs_dir.as_deref(),
            opts.granularity,
            opts.dtype,
        )?;
        if opts.loader.eject_models {
            eject_others(plan.compute_device);
        }
        let pipeline = Pipeline::build(model.clone(), export.clone(), &stages, &engines)?;
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            model,
            export,
            plan,
            stages,
            engines,
            micro_batch: opts.micro_batch,
            pipeline: RwLock::new(Some(Arc::new(pipeline))),
        });
        crate::runtime::env::on_shutdown_release(release_all_sessions);
        let mut reg = registry();
        reg.retain(|w| w.strong_count() > 0);
        reg.push(Arc::downgrade(&shared));
        Ok(ClipVision { shared })
    }

    pub fn id(&self) -> u64 {
        self.shared.id
    }
    pub fn model(&self) -> &Model {
        &self.shared.model
    }
    pub fn export(&self) -> &Export {
        &self.shared.export
    }
    pub fn plan(&self) -> &Plan {
        &self.shared.plan
    }
    /// The engines its sessions run on (the CPU engine, the OpenVINO plugin if loaded).
    pub fn engines(&self) -> &Engines {
        &self.shared.engines
    }
    /// The engine of its CPU-executed blocks.
    pub fn cpu_engine(&self) -> Engine {
        self.shared.engines.cpu
    }
    /// True while the model's sessions are loaded (false after another model ejected it).
    pub fn is_loaded(&self) -> bool {
        self.shared.is_loaded()
    }

    /// The sessions, rebuilt first if another model ejected them.
    pub fn pipeline(&self) -> Result<Arc<Pipeline>> {
        if let Some(p) = self
            .shared
            .pipeline
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(p.clone());
        }
        let mut slot = self
            .shared
            .pipeline
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        if crate::runtime::env::is_shut_down() {
            return Err(Error::runtime(crate::runtime::env::SHUT_DOWN_MESSAGE));
        }
        tracing::info!(
            "model {} was ejected from {}; reloading its sessions",
            self.model().path().display(),
            self.plan().compute_device
        );
        let s = &self.shared;
        let p = Arc::new(Pipeline::build(
            s.model.clone(),
            s.export.clone(),
            &s.stages,
            &s.engines,
        )?);
        *slot = Some(p.clone());
        Ok(p)
    }

    /// Encodes square pixels `[B, 3, S, S]` (an `ArrayView4`) or, for a naflex model, patches
    /// with their grids (a [`PixelsView`]), in batches of `batch_size`.
    pub fn encode<'a>(
        &self,
        pixels: impl Into<PixelsView<'a>>,
        outputs: &[String],
        batch_size: usize,
    ) -> Result<Outputs> {
        // The one check of the input's shape: every front end comes through here.
        let pixels = pixels.into();
        self.model().check_input(&pixels)?;
        let p = self.pipeline()?;
        match self.shared.micro_batch {
            Some(m) => crate::runtime::microbatch::encode(&p, pixels, outputs, m, None),
            None => p.encode(pixels, outputs, batch_size),
        }
    }
}

impl ClipVision {
    /// Like [`ClipVision::encode`], with the images cut into micro-batches of `micro` that
    /// flow through the plan's device segments concurrently (`runtime::microbatch`).
    pub fn encode_micro<'a>(
        &self,
        pixels: impl Into<PixelsView<'a>>,
        outputs: &[String],
        micro: usize,
    ) -> Result<Outputs> {
        let pixels = pixels.into();
        self.model().check_input(&pixels)?;
        let p = self.pipeline()?;
        crate::runtime::microbatch::encode(&p, pixels, outputs, micro, None)
    }
}

impl Shared {
    fn is_loaded(&self) -> bool {
        self.pipeline
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn uses(&self, d: Device) -> bool {
        self.plan.blocks.iter().any(|b| b.home == d || b.exec == d)
    }
}

/// The inventory a load plans against. A real device's free memory already falls as this
/// process loads models; a simulated one knows nothing of them, so the resident bytes the
/// loaded (not ejected) models' plans put on it are taken off its free bytes.
fn load_inventory(
    simulate: Option<&str>,
    loader: &LoaderOptions,
    openvino_ep: Option<&Path>,
) -> Result<Inventory> {
    let mut inv = inventory_for(simulate, loader, openvino_ep)?;
    if inv.simulated {
        let loaded: Vec<Arc<Shared>> = registry().iter().filter_map(Weak::upgrade).collect();
        for s in loaded.iter().filter(|s| s.is_loaded()) {
            for d in &s.plan.devices {
                inv.hold(d.device, d.resident_bytes);
            }
        }
    }
    Ok(inv)
}

/// Releases the sessions of every loaded model (registered with `runtime::env::shutdown`). An encode
/// running on another thread keeps its sessions until it returns.
pub(crate) fn release_all_sessions() {
    let all: Vec<Arc<Shared>> = registry().iter().filter_map(Weak::upgrade).collect();
    for s in all {
        let taken = s.pipeline.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(taken);
    }
}

/// Releases the sessions of every loaded model that occupies `device` (the model being loaded
/// is not registered yet); returns how many were released.
fn eject_others(device: Device) -> usize {
    let others: Vec<Arc<Shared>> = registry().iter().filter_map(Weak::upgrade).collect();
    let mut released = 0;
    for s in others {
        if !s.uses(device) {
            continue;
        }
        let mut slot = s.pipeline.write().unwrap_or_else(|e| e.into_inner());
        if slot.take().is_some() {
            released += 1;
            tracing::info!(
                "eject_models: released {} from {device}",
                s.model.path().display()
            );
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vit_l14() -> VisionConfig {
        VisionConfig {
            family: "ViT-L/14".into(),
            kind: crate::model::Kind::Clip,
            hidden_size: 1024,
            num_layers: 24,
            num_heads: 16,
            intermediate_size: 4096,
            activation: crate::model::Activation::QuickGelu,
            mlp: crate::model::Mlp::Standard,
            patch_size: 14,
            image_size: 224,
            tokens: 257,
            projection_dim: Some(768),
            registers: 0,
            rope_theta: 0.0,
            layer_norm_eps: 1e-5,
            llava: false,
            num_patches: 0,
            attention_pool: false,
            source: "key table".into(),
        }
    }

    #[test]
    fn the_activation_estimate_counts_hidden_states_mlp_and_attention_maps() {
        let c = vit_l14();
        // Per image: 4·T·D + 2·T·I + 2·heads·T², in f32.
        let per_image = 4 * 257 * 1024 + 2 * 257 * 4096 + 2 * 16 * 257 * 257;
        assert_eq!(per_image, 5_271_584);
        assert_eq!(activation_bytes(&c, 1), 4 * per_image);
        assert_eq!(activation_bytes(&c, RESERVE_BATCH), 168_690_688);
        // The largest config `detect` accepts saturates instead of wrapping round to a small
        // reserve.
        let huge = VisionConfig {
            hidden_size: 1 << 16,
            num_heads: 1 << 10,
            intermediate_size: 1 << 18,
            patch_size: 1,
            image_size: 4096,
            tokens: 4096 * 4096 + 1,
            ..vit_l14()
        };
        assert_eq!(activation_bytes(&huge, RESERVE_BATCH), u64::MAX);
    }

    #[test]
    fn the_cache_key_changes_with_every_option_that_changes_the_model() {
        let file = Path::new("m.safetensors");
        let base = LoadOptions::default();
        assert_eq!(base.key(file), base.clone().key(file));
        let changed: Vec<LoadOptions> = vec![
            LoadOptions {
                dtype: ComputeDtype::Int8,
                ..base.clone()
            },
            LoadOptions {
                micro_batch: Some(2),
                ..base.clone()
            },
            LoadOptions {
                granularity: Granularity::Whole,
                ..base.clone()
            },
            LoadOptions {
                force_streamed: vec!["all".into()],
                ..base.clone()
            },
            LoadOptions {
                loader: LoaderOptions {
                    virtual_vram_gb: Some(4.0),
                    ..Default::default()
                },
                ..base.clone()
            },
            LoadOptions {
                loader: LoaderOptions {
                    donor_policy: crate::plan::DonorPolicy::Execute,
                    ..Default::default()
                },
                ..base.clone()
            },
        ];
        for c in &changed {
            assert_ne!(c.key(file), base.key(file), "{c:?}");
        }
        // The name and folders only find the file; the key holds the file itself.
        let renamed = LoadOptions {
            clip_vision: "another name".into(),
            ..base.clone()
        };
        assert_eq!(renamed.key(file), base.key(file));
    }
}
