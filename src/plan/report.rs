//! The plan as a table for people and as JSON (contract §5.4).

use std::fmt::Write as _;

use super::device::Device;
use super::engine::Engine;
use super::placement::Plan;
use super::units::format_bytes;

/// A maximal run of consecutive blocks with the same home and exec device.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Segment {
    /// Name of the first block.
    pub first: String,
    /// Name of the last block.
    pub last: String,
    /// Index of the first block in the plan.
    pub start: usize,
    pub count: usize,
    pub bytes: u64,
    pub home: Device,
    pub exec: Device,
    /// What runs its blocks (contract §6.4).
    pub engine: Engine,
}

impl Segment {
    /// `embed..layer.11`, or the single block's name.
    pub fn range(&self) -> String {
        if self.count == 1 {
            self.first.clone()
        } else {
            format!("{}..{}", self.first, self.last)
        }
    }
}

impl Plan {
    pub fn segments(&self) -> Vec<Segment> {
        let mut out: Vec<Segment> = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            match out.last_mut() {
                Some(s) if s.home == b.home && s.exec == b.exec && s.engine == b.engine => {
                    s.last = b.kind.name();
                    s.count += 1;
                    s.bytes = s.bytes.saturating_add(b.bytes);
                }
                _ => out.push(Segment {
                    first: b.kind.name(),
                    last: b.kind.name(),
                    start: i,
                    count: 1,
                    bytes: b.bytes,
                    home: b.home,
                    exec: b.exec,
                    engine: b.engine,
                }),
            }
        }
        out
    }

    /// Distinct exec devices, in the order blocks first use them.
    pub fn exec_devices(&self) -> Vec<Device> {
        let mut out = Vec::new();
        for b in &self.blocks {
            if !out.contains(&b.exec) {
                out.push(b.exec);
            }
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{json, Value};
        let blocks: Vec<Value> = self
            .blocks
            .iter()
            .map(|b| {
                json!({
                    "name": b.kind.name(),
                    "bytes": b.bytes,
                    "home": b.home.to_string(),
                    "exec": b.exec.to_string(),
                    "engine": b.engine.as_str(),
                })
            })
            .collect();
        let devices: Vec<Value> = self
            .devices
            .iter()
            .map(|d| {
                let mut o = json!({
                    "device": d.device.to_string(),
                    "name": d.name,
                    "total_bytes": d.total_bytes,
                    "free_bytes": d.free_bytes,
                    "assigned_bytes": d.assigned_bytes,
                    "resident_bytes": d.resident_bytes,
                    "executes": d.executes,
                });
                if let Some(b) = d.budget_bytes {
                    o["budget_bytes"] = json!(b);
                }
                if let Some(s) = d.share_percent {
                    o["share_percent"] = json!(s);
                }
                o
            })
            .collect();
        let segments: Vec<Value> = self
            .segments()
            .iter()
            .map(|s| {
                json!({
                    "first": s.first,
                    "last": s.last,
                    "count": s.count,
                    "bytes": s.bytes,
                    "home": s.home.to_string(),
                    "exec": s.exec.to_string(),
                    "engine": s.engine.as_str(),
                })
            })
            .collect();
        json!({
            "compute_device": self.compute_device.to_string(),
            "mode": self.mode.as_str(),
            "model_bytes": self.model_bytes,
            "blocks": blocks,
            "devices": devices,
            "warnings": self.warnings,
            "donor_policy": self.donor_policy.as_str(),
            "activation_reserve_bytes": self.activation_reserve_bytes,
            "segments": segments,
        })
    }

    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "compute device {}, mode {}, donor policy {}, model {} in {} blocks, activation reserve {}",
            self.compute_device,
            self.mode,
            self.donor_policy,
            format_bytes(self.model_bytes),
            self.blocks.len(),
            format_bytes(self.activation_reserve_bytes)
        );
        out.push('\n');
        let _ = writeln!(
            out,
            "{:<8}  {:>10}  {:>10}  {:>10}  {:>6}  {:>10}  {:>4}",
            "device", "total", "free", "assigned", "share", "budget", "runs"
        );
        for d in &self.devices {
            let share = if self.model_bytes > 0 {
                d.assigned_bytes as f64 / self.model_bytes as f64 * 100.0
            } else {
                0.0
            };
            let budget = match (d.budget_bytes, d.share_percent) {
                (Some(b), _) => format_bytes(b),
                (None, Some(s)) => format!("{s:.1}%"),
                (None, None) => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "{:<8}  {:>10}  {:>10}  {:>10}  {:>5.1}%  {:>10}  {:>4}",
                d.device.to_string(),
                format_bytes(d.total_bytes),
                format_bytes(d.free_bytes),
                // In the unit that fits (a 120 KiB model read "0.000" in GiB).
                if d.assigned_bytes == 0 {
                    "-".to_string()
                } else {
                    format_bytes(d.assigned_bytes)
                },
                share,
                budget,
                if d.executes { "yes" } else { "" }
            );
        }
        out.push('\n');
        let segs = self.segments();
        let range_w = segs
            .iter()
            .map(|s| s.range().chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        let _ = writeln!(
            out,
            "{:<range_w$}  {:>6}  {:<18}  {:<8}  {:>10}",
            "blocks", "count", "home -> exec", "engine", "bytes"
        );
        for s in &segs {
            let _ = writeln!(
                out,
                "{:<range_w$}  {:>6}  {:<18}  {:<8}  {:>10}",
                s.range(),
                s.count,
                format!("{} -> {}", s.home, s.exec),
                s.engine.as_str(),
                format_bytes(s.bytes)
            );
        }
        if !self.warnings.is_empty() {
            out.push_str("\nwarnings:\n");
            for w in &self.warnings {
                let _ = writeln!(out, "  - {w}");
            }
        }
        trim_lines(&out)
    }
}

/// Drops trailing spaces left by empty last columns.
fn trim_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
