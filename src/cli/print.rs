//! How each verb prints its result: tables and reports for people (JSON goes out as is).

use distorch_vision::bench::{BenchReport, Figures};
use distorch_vision::model::folders::{Listing, ModelEntry};
use distorch_vision::model::Model;

/// `bench` as a report (one line per figure).
pub(crate) fn bench_report(r: &BenchReport) {
    println!(
        "model      {} ({}), batch {}, {} iterations, {} threads, {} on {}",
        r.model, r.family, r.batch_size, r.iters, r.threads, r.dtype, r.cpu_engine
    );
    let row = |name: &str, f: &Figures| {
        println!(
            "{name:<10} build {:>7.3} s  first output {:>7.3} s  {:>8.2} images/s  (median batch {:.3} s)",
            f.session_build_s, f.first_output_s, f.images_per_s, f.median_batch_s
        )
    };
    row("blocks", &r.blocks);
    if let Some(w) = &r.whole {
        row("whole", w);
    }
    if let Some(ratio) = r.split_ratio {
        println!("split      blocks/whole throughput = {ratio:.3}");
    }
    if let Some(g) = &r.grids {
        let grids: Vec<String> = g.iter().map(|g| g.to_string()).collect();
        println!(
            "grids      {} (naflex, padded to the largest)",
            grids.join(" ")
        );
    }
    if let Some(p) = &r.per_image {
        row("per image", p);
    }
    if let Some(ratio) = r.padded_over_per_image {
        println!("naflex     padded batch / one image at a time throughput = {ratio:.3}");
    }
    println!(
        "peak RSS   {} after the blocks, {} in all (model weights in the file: {})",
        human(r.blocks_peak_rss_bytes),
        human(r.peak_rss_bytes),
        human(r.model_bytes)
    );
    let verdict = match r.rss_verdict.as_str() {
        "within" => "within".to_string(),
        "over" => "OVER".to_string(),
        _ => format!(
            "not applicable: the model is smaller than the runtime's own {} before loading",
            human(r.baseline_rss_bytes)
        ),
    };
    println!(
        "RSS budget {} (1.25 × fp32 weights + one batch's activations): blocks {verdict}",
        human(r.rss_budget_bytes),
    );
    let blocks: Vec<String> = r
        .per_block_median_ms
        .iter()
        .map(|(n, ms)| format!("{n} {ms:.2}"))
        .collect();
    println!("per block  median ms: {}", blocks.join(", "));
    println!(
        "streamed   {} per pass{}",
        human(r.streamed_bytes_per_pass),
        r.micro_batch
            .map_or(String::new(), |m| format!(", micro-batch {m}"))
    );
    let u = &r.uploads;
    if let Some(overlap) = u.overlap() {
        let per = |x: f64| x / r.iters as f64 * 1e3;
        println!(
            "uploads    {} in {} copies; per pass: copy {:.1} ms, host waited {:.1} ms; overlap {:.0} %",
            human(u.bytes),
            u.uploads,
            per(u.copy_s),
            per(u.stall_s),
            overlap * 100.0
        );
    }
}

/// `inspect --json`: everything as one object.
pub(crate) fn inspect_json(m: &Model) -> serde_json::Value {
    let c = &m.config;
    serde_json::json!({
        "path": m.path().display().to_string(),
        "family": c.family,
        "key_layout": m.keys.layout,
        "config": c,
        "model_bytes": m.model_bytes(),
        "dtypes": m.dtype_summary().iter().map(|(d, n, b)| serde_json::json!({"dtype": d, "tensors": n, "bytes": b})).collect::<Vec<_>>(),
        "outputs": m.output_names(),
        "outputs_on_request": m.on_request_output_names(),
        "blocks": m.blocks.iter().map(|b| serde_json::json!({"name": b.kind, "bytes": b.bytes, "tensors": b.weights.len()})).collect::<Vec<_>>(),
    })
}

/// `inspect` as text: family, configuration, dtypes, outputs and blocks.
pub(crate) fn inspect_text(m: &Model) {
    let c = &m.config;
    println!("model     {}", m.path().display());
    // A family read from a config file already names it: say it once.
    let family = c
        .family
        .strip_suffix(')')
        .and_then(|f| f.rsplit_once(" ("))
        .filter(|(_, label)| label.contains("config.json"))
        .map_or(c.family.as_str(), |(f, _)| f);
    println!(
        "family    {family} (from {}, {:?} keys)",
        c.source, m.keys.layout
    );
    // naflex towers take any aspect ratio: a grid of at most `num_patches` patches per image.
    let image = match c.patching() {
        Some(p) => format!("any (a grid per image, patches<={})", p.num_patches),
        None => c.image_size.to_string(),
    };
    println!(
        "config    D={} layers={} heads={} mlp={} act={:?} patch={} image={image} tokens={} proj={} eps={:e}{}{}",
        c.hidden_size, c.num_layers, c.num_heads, c.intermediate_size, c.activation, c.patch_size,
        c.tokens, c.projection_dim.map_or("-".into(), |p| p.to_string()), c.layer_norm_eps,
        if c.llava { " +LLaVA projector" } else { "" },
        if c.attention_pool { " +attention-pooling head" } else { "" }
    );
    let dtypes: Vec<String> = m
        .dtype_summary()
        .iter()
        .map(|(d, n, b)| format!("{d}: {n} tensors, {}", human(*b)))
        .collect();
    println!("dtypes    {}", dtypes.join("; "));
    println!(
        "outputs   {} (on request: {})",
        m.output_names().join(", "),
        m.on_request_output_names().join(", ")
    );
    println!(
        "blocks    {} ({} in all)",
        m.blocks.len(),
        human(m.model_bytes())
    );
    for b in &m.blocks {
        println!(
            "  {:<10} {:>12}  {:>3} tensors",
            b.kind,
            human(b.bytes),
            b.weights.len()
        );
    }
}

/// `models` as a table: name, family, size, path (and why a file cannot load).
/// Columns are as wide as their longest entry, so long names do not push the rest out of line.
pub(crate) fn models_table(listing: &Listing, quiet: bool) {
    let family = |e: &ModelEntry| e.family.as_deref().unwrap_or("(cannot load)").to_string();
    let width = |col: &dyn Fn(&ModelEntry) -> String| {
        listing
            .models
            .iter()
            .map(|e| col(e).chars().count())
            .max()
            .unwrap_or(0)
    };
    let (name_w, family_w) = (width(&|e| e.name.clone()), width(&family));
    for e in &listing.models {
        println!(
            "{:<name_w$} {:<family_w$} {:>11}  {}",
            e.name,
            family(e),
            human(e.bytes),
            e.path.display()
        );
        if let Some(p) = &e.problem {
            println!("    {p}");
        }
    }
    if !listing.skipped.is_empty() && !quiet {
        eprintln!(
            "({} other .safetensors/.sft file(s) are not vision towers and were left out; --json lists them)",
            listing.skipped.len()
        );
    }
}

/// JSON for a script: pretty-printed on stdout.
pub(crate) fn json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub(crate) fn human(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1 << 20) as f64 {
        format!("{:.2} MiB", b / (1 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b} B")
    }
}

/// `clean`: every export with what it holds, then what was removed.
pub(crate) fn exports_report(
    root: &std::path::Path,
    exports: &[distorch_vision::export::clean::ExportEntry],
    removed: &[std::path::PathBuf],
    freed: u64,
) {
    if exports.is_empty() {
        println!("no exported graphs in {}", root.display());
        return;
    }
    println!("exported graphs in {}:", root.display());
    for e in exports {
        let name = e
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let model = match (&e.model, e.model_exists) {
            (Some(m), true) => format!("model {m}"),
            (Some(m), false) => format!("model deleted: {m}"),
            (None, _) => "unfinished export".to_string(),
        };
        let weights = if e.weights_shared {
            "weights shared with the model file".to_string()
        } else {
            format!("weights {} held only here", human(e.weights_bytes))
        };
        let gone = if removed.contains(&e.dir) {
            "  [removed]"
        } else {
            ""
        };
        println!(
            "  {name}  {} {}  {model}; graphs {}, {weights}{gone}",
            e.dtype.as_deref().unwrap_or("-"),
            e.family.as_deref().unwrap_or("-"),
            human(e.graph_bytes),
        );
    }
    if removed.is_empty() {
        println!(
            "nothing removed: pass --model M, --missing (exports of deleted models) or --all to remove exports"
        );
    } else {
        println!(
            "removed {} export{}, {} freed",
            removed.len(),
            if removed.len() == 1 { "" } else { "s" },
            human(freed)
        );
    }
}
