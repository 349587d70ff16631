//! The command line's flags (clap definitions) and help texts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use distorch_vision::export::{ComputeDtype, Granularity};
use distorch_vision::image::Crop;
use distorch_vision::job::batch::{EncodeJob, OutFormat, DEFAULT_DECODE_THREADS};
use distorch_vision::loader::LoadOptions;
use distorch_vision::model::folders::ModelFolders;
use distorch_vision::plan::{CpuEngine, DonorPolicy, LoaderOptions, DEFAULT_BATCH_SIZE};
use distorch_vision::{Error, Result};

use super::flags;

pub(crate) const ABOUT_LONG: &str = "\
CLIP Vision encoders (the .safetensors files of ComfyUI's models/clip_vision) split into one
ONNX Runtime session per block, placed across GPUs and the CPU by a DisTorch2 planner.";

pub(crate) const LOGGING_HELP: &str = "\
Logging (on stderr):
  -v / -vv / -vvv     info / debug / trace;  -q errors only (no progress or summaries either)
  DISTORCH_LOG=FILTER a tracing filter, e.g. `info` or `warn,distorch_vision=debug`
  RUST_LOG=FILTER     used when DISTORCH_LOG is not set
  Precedence: -v/-q, then DISTORCH_LOG, then RUST_LOG, then `warn,ort=error`. ONNX Runtime's own
  messages (target `ort`) stay at warn or quieter unless the filter names `ort`, e.g.
  DISTORCH_LOG=info,ort=info.

Errors: exit status 1 and one `error: ...` line on stderr (2 for a bad command line). With --json
the error is also printed on stdout as one object: {\"error\": {\"kind\": ..., \"message\": ...}}.

Environment: COMFYUI_PATH (model folder root), ORT_DYLIB_PATH (ONNX Runtime library),
DISTORCH_OPENVINO_EP (OpenVINO plugin library), DISTORCH_THREADS (CPU threads, default every core).";

#[derive(Parser)]
#[command(
    name = "distorch-vision",
    version,
    about = "CLIP Vision encoders as per-block ONNX Runtime sessions, placed across GPUs and the CPU",
    long_about = ABOUT_LONG,
    after_help = LOGGING_HELP
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    #[command(flatten)]
    pub(crate) folders: FolderArgs,
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
}

/// -v / -q (global).
#[derive(Args, Clone)]
#[command(next_help_heading = "Logging")]
pub(crate) struct Verbosity {
    /// More log output on stderr: -v info, -vv debug, -vvv trace (wins over DISTORCH_LOG / RUST_LOG).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Less output on stderr: errors only (no warnings, progress or summaries).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: u8,
}

/// Where model names are looked up (contract §2.5).
#[derive(Args, Clone)]
#[command(next_help_heading = "Model folders")]
pub(crate) struct FolderArgs {
    /// ComfyUI folder whose models/clip_vision holds models (default: env COMFYUI_PATH).
    #[arg(long, global = true)]
    pub(crate) comfyui: Option<PathBuf>,
    /// An extra_model_paths.yaml (default: <comfyui>/extra_model_paths.yaml when present).
    #[arg(long, global = true)]
    pub(crate) extra_model_paths: Option<PathBuf>,
}

impl FolderArgs {
    pub(crate) fn folders(&self) -> ModelFolders {
        ModelFolders::new(self.comfyui.clone(), self.extra_model_paths.clone())
    }
}

#[derive(Args, Clone)]
#[command(next_help_heading = "Runtime")]
pub(crate) struct Common {
    /// Root folder of exported graphs (default: DISTORCH_GRAPHS_DIR, else graphs/ of the checkout this program was built in, else ~/.cache/distorch-vision/graphs).
    #[arg(long)]
    pub(crate) graphs_dir: Option<PathBuf>,
    /// ONNX Runtime's library, 1.31 or newer: the file or its folder (default: ORT_DYLIB_PATH, the checkout's .runtime/, this program's folder, the onnxruntime package of the Python environment it is installed in, then python3's).
    #[arg(long)]
    pub(crate) ort_library: Option<PathBuf>,
}

/// The loader inputs of contract §1, with the same names.
#[derive(Args, Clone)]
#[command(next_help_heading = "Loader (placement across devices)")]
pub(crate) struct LoaderArgs {
    /// Compute device: `cpu`, `cuda:N`, or `xpu:N` (Intel GPU N, through OpenVINO) (default: cuda:0 when a CUDA GPU exists, else cpu).
    #[arg(long)]
    pub(crate) device: Option<String>,
    /// GiB of weights to move off the compute device onto --donor-device (0.0–128.0) [default: 4].
    #[arg(long, allow_negative_numbers = true)]
    virtual_vram_gb: Option<f64>,
    /// Where moved weights live.
    #[arg(long, default_value_t = LoaderOptions::default().donor_device)]
    pub(crate) donor_device: String,
    /// Explicit allocation, e.g. `cuda:0,60%;cuda:1,30%;cpu,10%` or `cuda:0,4gb;cpu,*`.
    #[arg(long, default_value_t = LoaderOptions::default().expert_mode_allocations)]
    pub(crate) expert_mode_allocations: String,
    /// Release other loaded models from the compute device first (true/false).
    #[arg(long, default_value_t = LoaderOptions::default().eject_models, action = clap::ArgAction::Set)]
    pub(crate) eject_models: bool,
    /// CPU-homed blocks on a GPU compute device: `stream` their weights, or `execute` on the CPU.
    #[arg(long, default_value_t = LoaderOptions::default().donor_policy, value_parser = flags::typed::<DonorPolicy>())]
    pub(crate) donor_policy: DonorPolicy,
    /// Replace the device inventory for planning: `cuda:0=24GiB,cuda:1=12GiB/10GiB,xpu:0=16GiB,cpu=64GiB` (total[/free]).
    #[arg(long)]
    pub(crate) simulate_devices: Option<String>,
    /// What runs the CPU blocks: `auto` (OpenVINO when its plugin is found and the dtype runs there, else mlas), `mlas` (ONNX Runtime's own) or `openvino`.
    #[arg(long, default_value_t = LoaderOptions::default().cpu_engine, value_parser = flags::typed::<CpuEngine>())]
    pub(crate) cpu_engine: CpuEngine,
    /// The OpenVINO plugin library, or a folder holding it (default: DISTORCH_OPENVINO_EP, the checkout's .runtime/openvino/, the onnxruntime_ep_openvino Python package).
    #[arg(long, value_name = "PATH")]
    pub(crate) openvino_ep: Option<PathBuf>,
}

impl LoaderArgs {
    /// The planner's options of these flags.
    pub(crate) fn options(&self) -> LoaderOptions {
        LoaderOptions {
            device: self.device.clone(),
            virtual_vram_gb: self.virtual_vram_gb,
            donor_device: self.donor_device.clone(),
            expert_mode_allocations: self.expert_mode_allocations.clone(),
            eject_models: self.eject_models,
            donor_policy: self.donor_policy,
            cpu_engine: self.cpu_engine,
        }
    }

    /// What loading `model` with these flags and `common`'s takes; the caller adds the rest.
    pub(crate) fn load_options(&self, model: &str, common: &Common) -> LoadOptions {
        LoadOptions {
            clip_vision: model.to_string(),
            loader: self.options(),
            simulate_devices: self.simulate_devices.clone(),
            graphs_dir: common.graphs_dir.clone(),
            openvino_ep: self.openvino_ep.clone(),
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
pub(crate) enum Command {
    /// List the devices this process sees (GPUs through the CUDA driver, Intel GPUs through the OpenVINO plugin, and the CPU).
    #[command(
        after_help = "Examples:\n  distorch-vision devices\n  distorch-vision devices --json --simulate-devices cuda:0=24GiB,cuda:1=12GiB/10GiB"
    )]
    Devices {
        /// Print the inventory, the CUDA provider's and the OpenVINO plugin's status as one JSON object.
        #[arg(long)]
        json: bool,
        /// Show a simulated inventory instead: `cuda:0=24GiB,cuda:1=12GiB/10GiB,cpu=64GiB` (total[/free]).
        #[arg(long, value_name = "SPEC")]
        simulate_devices: Option<String>,
        /// The OpenVINO plugin library, or a folder holding it (default: searched for, see `encode --help`).
        #[arg(long, value_name = "PATH")]
        openvino_ep: Option<PathBuf>,
    },
    /// Plan a model's placement across devices (reads only the header and config).
    #[command(
        after_help = "Examples:\n  distorch-vision plan --model clip_vision_h.safetensors --comfyui ~/ComfyUI\n  distorch-vision plan --model m.safetensors --expert-mode-allocations 'cuda:0,60%;cpu,*' --simulate-devices cuda:0=8GiB"
    )]
    Plan {
        /// The model: a .safetensors path, or a name in the model folders (see `models`).
        #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
        model: String,
        #[command(flatten)]
        loader: LoaderArgs,
        /// The compute dtype the plan is for (it decides the CPU engine `auto` picks): fp32, int8, fp16, bf16.
        #[arg(long, default_value_t = ComputeDtype::default(), value_parser = flags::typed::<ComputeDtype>(), help_heading = "Compute")]
        dtype: ComputeDtype,
        /// Print the plan as JSON (contract §5.4) instead of a table.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Show a model's family, configuration, dtypes and blocks.
    #[command(
        after_help = "Example:\n  distorch-vision inspect --model sigclip_vision_patch14_384.safetensors --comfyui ~/ComfyUI"
    )]
    Inspect {
        /// The model: a .safetensors path, or a name in the model folders (see `models`).
        #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
        model: String,
        /// Print everything as one JSON object.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Write one ONNX graph per block (and a manifest) for a model.
    #[command(
        after_help = "Example:\n  distorch-vision export --model clip_vision_h.safetensors --out /tmp/vit-h-graphs"
    )]
    Export {
        /// The model: a .safetensors path, or a name in the model folders (see `models`).
        #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
        model: String,
        /// Output folder (default: <graphs-dir>/<model-id>/).
        #[arg(long, help_heading = "Output")]
        out: Option<PathBuf>,
        /// `blocks` (default) or `whole` (also one whole-model graph).
        #[arg(long, default_value_t = Granularity::default(), value_parser = flags::typed::<Granularity>(), help_heading = "Output")]
        granularity: Granularity,
        #[command(flatten)]
        common: Common,
    },
    /// Encode images (or preprocessed pixels) into embeddings; sharded with --shard-size or a folder --out.
    #[command(
        after_help = "Examples:\n  distorch-vision encode --model clip_vision_h --comfyui ~/ComfyUI --images photos/ --out emb.safetensors\n  distorch-vision encode --model m.safetensors --images photos/ --out shards/ --shard-size 1024 --resume\n  distorch-vision encode --model m.safetensors --pixels px.safetensors --out emb.safetensors --outputs image_embeds --json"
    )]
    Encode(EncodeArgs),
    /// Decode and preprocess images into one NCHW `pixel_values` tensor (safetensors).
    #[command(
        after_help = "Example:\n  distorch-vision preprocess --model m.safetensors --images photos/ --out px.safetensors\n  distorch-vision encode --model m.safetensors --pixels px.safetensors --out emb.safetensors"
    )]
    Preprocess {
        /// The model whose image size and mean/std to use: a path, or a name in the model folders.
        #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
        model: String,
        /// Image files and folders (folders expand recursively, sorted).
        #[arg(long, num_args = 1.., required = true)]
        images: Vec<PathBuf>,
        /// `center` (default) or `none` (stretch).
        #[arg(long, default_value_t = Crop::default(), value_parser = flags::typed::<Crop>())]
        crop: Crop,
        /// Output safetensors file holding `pixel_values` [N,3,S,S] f32 (input of `encode --pixels`;
        /// sources and preprocessing in its metadata).
        #[arg(long)]
        out: PathBuf,
        /// Abort on an unreadable image instead of skipping it (and listing it).
        #[arg(long)]
        strict: bool,
    },
    /// Run the jobs of a YAML file in order, after checking them all (see examples/).
    #[command(
        after_help = "Examples:\n  distorch-vision run examples/encode_folder.yaml\n  distorch-vision run examples/multi_job.yaml --json"
    )]
    Run {
        /// The YAML run file: one job (a mapping) or `jobs: [...]`; paths in it are relative to it.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print one JSON object on stdout: {"jobs": [{"job", "encoded", ...}]}.
        #[arg(long, help_heading = "Output")]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List the clip_vision models in the model folders (--comfyui, COMFYUI_PATH, extra_model_paths.yaml).
    ///
    /// Only files that look like a vision tower are listed (read from the header), with their
    /// family. When none is found, the folders searched are named and the exit status is 1.
    #[command(
        after_help = "Examples:\n  distorch-vision models --comfyui ~/ComfyUI\n  distorch-vision models --extra-model-paths ~/ComfyUI/extra_model_paths.yaml --json"
    )]
    Models {
        /// Print {"folders", "searched", "models", "skipped"} as JSON (models with name, path, bytes, family).
        #[arg(long)]
        json: bool,
    },
    /// List exported graphs and remove those of a model, of deleted models, or all of them.
    ///
    /// An export's weights.safetensors is a hard link to the model file, so deleting a model
    /// frees no disk while an export of it exists. Without --model, --missing or --all this only
    /// lists. Exports are made again when a model is next used.
    #[command(after_help = "Examples:
  distorch-vision clean
  distorch-vision clean --model clip_vision_h.safetensors
  distorch-vision clean --missing
  distorch-vision clean --all --graphs-dir /tmp/graphs")]
    Clean {
        /// Remove the exports of this model: a name in the model folders or a path, or the file
        /// name of a model already deleted.
        #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
        model: Option<String>,
        /// Remove the exports whose model file no longer exists.
        #[arg(long)]
        missing: bool,
        /// Remove every export in the graphs folder.
        #[arg(long)]
        all: bool,
        /// The graphs folder (default: graphs/ of the checkout, else ~/.cache/distorch-vision/graphs; env DISTORCH_GRAPHS_DIR).
        #[arg(long)]
        graphs_dir: Option<PathBuf>,
        /// Print {"graphs_dir", "exports", "removed", "freed_bytes"} as JSON.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Throughput of the block pipeline against one whole-model session on the same weights.
    #[command(
        after_help = "Example:\n  distorch-vision bench --model m.safetensors --device cpu --batch-size 8 --iters 5"
    )]
    Bench(BenchArgs),
}

/// A count that must be at least 1 (images per batch, threads, rows per shard).
fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("0 is not allowed; valid: a whole number of at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "{s:?} is not a whole number; valid: a whole number of at least 1"
        )),
    }
}

/// Options of the GPU path.
#[derive(Args, Clone)]
#[command(next_help_heading = "GPU")]
pub(crate) struct GpuArgs {
    /// Cut the images into micro-batches of N that flow through the device segments concurrently.
    #[arg(long, value_parser = at_least_one)]
    pub(crate) micro_batch: Option<usize>,
}

/// Flags of `encode`.
#[derive(Args)]
pub(crate) struct EncodeArgs {
    /// The model: a .safetensors path, or a name in the model folders (see `models`).
    #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
    pub(crate) model: String,
    /// Image files and folders (folders expand recursively, sorted).
    #[arg(long, num_args = 1.., conflicts_with = "pixels", required_unless_present = "pixels", help_heading = "Input")]
    pub(crate) images: Vec<PathBuf>,
    /// A safetensors file with one NCHW f32 tensor, used as is.
    #[arg(long, help_heading = "Input")]
    pub(crate) pixels: Option<PathBuf>,
    /// `center` (default) or `none` (stretch).
    #[arg(long, default_value_t = Crop::default(), value_parser = flags::typed::<Crop>(), help_heading = "Input")]
    pub(crate) crop: Crop,
    /// Output file (or, with --format npy, a folder), or a folder of shards (sharded mode).
    #[arg(long, help_heading = "Output")]
    pub(crate) out: PathBuf,
    /// `safetensors`, or `npy`: --out x.npy writes one .npy (one output; row sources in
    /// x.sources.json), another --out a folder of <output>.npy and sources.json.
    /// Default: npy when --out ends in .npy, else safetensors.
    #[arg(long, value_parser = flags::typed::<OutFormat>(), help_heading = "Output")]
    pub(crate) format: Option<OutFormat>,
    /// Comma-separated outputs (default: all the model has but all_hidden_states, which is
    /// computed only when named here).
    #[arg(long, value_delimiter = ',', help_heading = "Output")]
    pub(crate) outputs: Vec<String>,
    /// Print the summary as one JSON object on stdout (encoded, skipped, outputs, seconds, ...).
    #[arg(long, help_heading = "Output")]
    pub(crate) json: bool,
    /// Rows per shard; turns on sharded mode (--out is then a folder).
    #[arg(long, value_parser = at_least_one, help_heading = "Sharded mode")]
    pub(crate) shard_size: Option<usize>,
    /// Sharded mode: skip images already in finished shards of --out (same model, outputs, crop and dtype).
    #[arg(long, help_heading = "Sharded mode")]
    pub(crate) resume: bool,
    /// Abort on an unreadable image instead of skipping it (and listing it).
    #[arg(long, help_heading = "Input")]
    pub(crate) strict: bool,
    /// Sharded mode: image decoder threads.
    #[arg(long, default_value_t = DEFAULT_DECODE_THREADS, value_parser = at_least_one, help_heading = "Sharded mode")]
    pub(crate) decode_threads: usize,
    /// Test hook: sleep this many milliseconds after each encoded batch.
    #[arg(long, default_value_t = 0, hide = true)]
    pub(crate) throttle_ms: u64,
    #[command(flatten)]
    pub(crate) loader: LoaderArgs,
    /// Images per forward pass (more uses more activation memory).
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE, value_parser = at_least_one, help_heading = "Compute")]
    pub(crate) batch_size: usize,
    /// Test hook: run these blocks (comma-separated, or `all`) with their weights fed as inputs each pass.
    #[arg(long, value_delimiter = ',', hide = true)]
    pub(crate) stream_blocks: Vec<String>,
    /// Compute precision: `fp32` (default, the reference), `int8` (CPU, approximate), `fp16` (for GPUs; runs on the CPU only to check results), `bf16` (OpenVINO on CPUs with AMX or AVX512_BF16; approximate, fast).
    #[arg(long, default_value_t = ComputeDtype::default(), value_parser = flags::typed::<ComputeDtype>(), help_heading = "Compute")]
    pub(crate) dtype: ComputeDtype,
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    pub(crate) gpu: GpuArgs,
}

impl EncodeArgs {
    /// The flags converted once: what loading the model takes, and the job to run with it.
    pub(crate) fn into_job(
        self,
        folders: ModelFolders,
        quiet: bool,
    ) -> Result<(LoadOptions, EncodeJob)> {
        let is_npy = self
            .out
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
        let default_format = if is_npy {
            OutFormat::Npy
        } else {
            OutFormat::Safetensors
        };
        let load = LoadOptions {
            granularity: Granularity::Blocks,
            force_streamed: self.stream_blocks.clone(),
            model_folders: folders,
            dtype: self.dtype,
            micro_batch: self.gpu.micro_batch,
            ..self.loader.load_options(&self.model, &self.common)
        };
        let job = EncodeJob {
            images: self.images,
            pixels: self.pixels,
            crop: self.crop,
            batch_size: self.batch_size,
            outputs: self.outputs,
            out: self.out,
            format: self.format.unwrap_or(default_format),
            shard_size: self.shard_size,
            resume: self.resume,
            strict: self.strict,
            decode_threads: self.decode_threads,
            throttle: Duration::from_millis(self.throttle_ms),
            model_label: self.model,
            progress: !quiet,
            out_label: None,
        };
        if !job.is_sharded() && job.resume {
            return Err(Error::invalid(
                "--resume applies to sharded encoding (--shard-size N, or --out FOLDER)",
            ));
        }
        Ok((load, job))
    }
}

/// Flags of `bench`.
#[derive(Args)]
pub(crate) struct BenchArgs {
    /// The model: a .safetensors path, or a name in the model folders (see `models`).
    #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
    pub(crate) model: String,
    #[command(flatten)]
    pub(crate) loader: LoaderArgs,
    /// Images per timed batch.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE, value_parser = at_least_one, help_heading = "Benchmark")]
    pub(crate) batch_size: usize,
    /// Timed iterations after one warm-up batch (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = at_least_one, help_heading = "Benchmark")]
    pub(crate) iters: usize,
    /// Skip the whole-model session (no split-overhead ratio).
    #[arg(long, help_heading = "Benchmark")]
    pub(crate) no_whole: bool,
    /// Print the report as JSON.
    #[arg(long, help_heading = "Output")]
    pub(crate) json: bool,
    /// Compute precision: `fp32` (default, the reference), `int8` (CPU, approximate), `fp16` (for GPUs; runs on the CPU only to check results), `bf16` (OpenVINO on CPUs with AMX or AVX512_BF16; approximate, fast).
    #[arg(long, default_value_t = ComputeDtype::default(), value_parser = flags::typed::<ComputeDtype>(), help_heading = "Benchmark")]
    pub(crate) dtype: ComputeDtype,
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    pub(crate) gpu: GpuArgs,
}

impl Command {
    /// Whether the user asked for JSON output.
    pub(crate) fn json(&self) -> bool {
        match self {
            Command::Devices { json, .. }
            | Command::Plan { json, .. }
            | Command::Inspect { json, .. }
            | Command::Run { json, .. }
            | Command::Models { json }
            | Command::Clean { json, .. } => *json,
            Command::Encode(e) => e.json,
            Command::Bench(b) => b.json,
            Command::Export { .. } | Command::Preprocess { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_and_verb_is_described_and_every_verb_has_an_example() {
        let cli = Cli::command();
        let mut missing = Vec::new();
        for sub in cli.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            if sub.get_about().is_none() {
                missing.push(format!("{}: no description", sub.get_name()));
            }
            let example = sub.get_after_help().map(|h| h.to_string());
            if !example.is_some_and(|h| h.contains("distorch-vision ")) {
                missing.push(format!("{}: no example", sub.get_name()));
            }
            for arg in sub.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !arg.is_hide_set() && !builtin && arg.get_help().is_none() {
                    missing.push(format!("{} {}: no help", sub.get_name(), arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn loader_flags_default_to_the_library_defaults() {
        let cli = Cli::try_parse_from(["distorch-vision", "plan", "--model", "m"]).unwrap();
        let Command::Plan { loader, .. } = cli.command else {
            panic!("not plan")
        };
        let (got, want) = (loader.options(), LoaderOptions::default());
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        // The one default a doc comment spells out (an unset flag must stay `None`).
        let plan = Cli::command();
        let plan = plan.find_subcommand("plan").unwrap();
        let vram = plan
            .get_arguments()
            .find(|a| a.get_id() == "virtual_vram_gb")
            .unwrap();
        let help = vram.get_help().unwrap().to_string();
        let default = format!(
            "[default: {}]",
            distorch_vision::plan::DEFAULT_VIRTUAL_VRAM_GB
        );
        assert!(help.contains(&default), "{help}");
    }

    #[test]
    fn every_option_library_messages_name_has_a_flag() {
        let cli = Cli::command();
        for name in [
            "comfyui_path",
            "extra_model_paths",
            "device",
            "dtype",
            "micro_batch",
            "resume",
            "strict",
            "format",
            "outputs",
            "shard_size",
            "granularity",
        ] {
            let flag = flags::with_flags(&cli, &format!("`{name}`"));
            assert!(flag.starts_with("--"), "{name}: {flag}");
        }
    }

    #[test]
    fn typed_flags_parse_with_the_types_own_message_and_flags_in_it() {
        let e = Cli::try_parse_from(["dv", "export", "--model", "m", "--granularity", "layers"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("invalid value 'layers' for '--granularity <GRANULARITY>': --granularity \"layers\" is not valid"),
            "{e}"
        );
        let ok = Cli::try_parse_from(["dv", "plan", "--model", "m", "--donor-policy", "execute"]);
        assert!(ok.is_ok());
    }

    #[test]
    fn encode_and_bench_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from([
            "distorch-vision",
            "encode",
            "--model",
            "m",
            "--images",
            "a",
            "--out",
            "o",
        ])
        .unwrap();
        let Command::Encode(e) = cli.command else {
            panic!("not encode")
        };
        let job = distorch_vision::job::batch::EncodeJob::default();
        assert_eq!(
            (e.batch_size, e.decode_threads, e.crop, e.dtype),
            (
                job.batch_size,
                job.decode_threads,
                job.crop,
                ComputeDtype::default()
            )
        );
        let cli = Cli::try_parse_from(["distorch-vision", "bench", "--model", "m"]).unwrap();
        let Command::Bench(b) = cli.command else {
            panic!("not bench")
        };
        assert_eq!(b.batch_size, DEFAULT_BATCH_SIZE);
    }
}
