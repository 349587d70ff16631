//! `--micro-batch N`: the input is cut into micro-batches of N images that flow through the
//! pipeline's device segments concurrently — one thread per segment (a maximal run of
//! consecutive blocks on one exec device), bounded channels between them — so while
//! segment k runs micro-batch m, segment k+1 runs micro-batch m-1.
//!
//! The machinery is device-agnostic and tested on the CPU (where a plan has one segment,
//! tests cut it into several with `max_segment_blocks`). On GPUs each segment thread hands
//! its blocks to that GPU's worker thread (`gpu_runner`), so each GPU is still driven by one
//! thread. The overlap actually achieved on GPUs is UNVERIFIED (no GPU here).

use std::sync::mpsc;

use ndarray::{ArrayD, ArrayView4, Axis};
use ort::value::{DynValue, Tensor};

use super::pipeline::{
    resolve_outputs, Outputs, Pipeline, IMAGE_EMBEDS, LAST_HIDDEN, MM_PROJECTED, PENULTIMATE,
};
use crate::model::Kind;
use crate::{Error, Result};

/// One micro-batch in flight.
struct Flight {
    pixels: Option<ndarray::Array4<f32>>,
    h: Option<DynValue>,
    penult: Option<DynValue>,
    head_out: Vec<DynValue>,
}

struct Needs {
    layers: usize,
    run_layers: usize,
    need_head: bool,
    need_penult: bool,
}

/// Contiguous runs of the blocks to run, split where the exec device changes (and after
/// `max_blocks` blocks, when given).
fn segments(p: &Pipeline, active: &[usize], max_blocks: Option<usize>) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for &i in active {
        let split = match out.last() {
            None => true,
            Some(seg) => {
                p.stage_exec(*seg.last().unwrap_or(&i)) != p.stage_exec(i)
                    || max_blocks.is_some_and(|m| seg.len() >= m.max(1))
            }
        };
        if split {
            out.push(vec![i]);
        } else if let Some(seg) = out.last_mut() {
            seg.push(i);
        }
    }
    out
}

fn step(p: &Pipeline, n: &Needs, stage: usize, f: &mut Flight) -> Result<()> {
    let head = p.stage_count() - 1;
    if stage == 0 {
        let px = f
            .pixels
            .take()
            .ok_or_else(|| Error::runtime("micro-batch pixels missing"))?;
        let input: DynValue = Tensor::from_array(px)?.into_dyn();
        f.h = Some(p.run_stage(0, vec![&input])?.remove(0));
    } else if stage == head && n.need_head {
        let h =
            f.h.as_ref()
                .ok_or_else(|| Error::runtime("state missing"))?;
        let mut args = vec![h];
        if p.stage_input_count(head) > 1 {
            args.push(
                f.penult
                    .as_ref()
                    .ok_or_else(|| Error::runtime("penultimate state missing"))?,
            );
        }
        f.head_out = p.run_stage(head, args)?;
    } else {
        let l = stage - 1;
        let h = f.h.take().ok_or_else(|| Error::runtime("state missing"))?;
        let next = p.run_stage(stage, vec![&h])?.remove(0);
        f.h = Some(next);
        if l == n.layers - 1 && n.need_penult {
            f.penult = Some(h);
        }
    }
    Ok(())
}

/// Encodes `pixels` in micro-batches of `micro` images, pipelined across the device
/// segments. Same outputs as [`Pipeline::encode`].
pub fn encode(
    p: &Pipeline,
    pixels: ArrayView4<f32>,
    outputs: &[String],
    micro: usize,
    max_segment_blocks: Option<usize>,
) -> Result<Outputs> {
    let model = p.model();
    model.check_pixels(pixels.shape())?;
    let wanted = resolve_outputs(model, outputs)?;
    let c = &model.config;
    let wants = |o: &str| wanted.iter().any(|w| w == o);
    let siglip = c.kind == Kind::Siglip;
    let need_head = wants(IMAGE_EMBEDS) || wants(MM_PROJECTED) || (siglip && wants(LAST_HIDDEN));
    let head = p.stage_count() - 1;
    let head_takes_penult = p.stage_input_count(head) > 1;
    let needs = Needs {
        layers: c.num_layers,
        run_layers: if need_head || wants(LAST_HIDDEN) {
            c.num_layers
        } else {
            c.num_layers - 1
        },
        need_head,
        need_penult: wants(PENULTIMATE) || (need_head && head_takes_penult),
    };
    let mut active: Vec<usize> = (0..=needs.run_layers).collect();
    if need_head {
        active.push(head);
    }
    let segs = segments(p, &active, max_segment_blocks);
    let micro = micro.max(1);

    let results: Vec<Result<Flight>> = std::thread::scope(|scope| {
        let (first_tx, mut rx) = mpsc::sync_channel::<Result<Flight>>(2);
        for seg in &segs {
            let (tx, next_rx) = mpsc::sync_channel::<Result<Flight>>(2);
            let needs = &needs;
            scope.spawn(move || {
                for item in rx {
                    let item = item.and_then(|mut f| {
                        for &s in seg {
                            step(p, needs, s, &mut f)?;
                        }
                        Ok(f)
                    });
                    if tx.send(item).is_err() {
                        break;
                    }
                }
            });
            rx = next_rx;
        }
        let feeder = scope.spawn(move || {
            for chunk in pixels.axis_chunks_iter(Axis(0), micro) {
                let f = Flight {
                    pixels: Some(chunk.to_owned()),
                    h: None,
                    penult: None,
                    head_out: Vec::new(),
                };
                if first_tx.send(Ok(f)).is_err() {
                    break;
                }
            }
        });
        let out: Vec<Result<Flight>> = rx.into_iter().collect();
        let _ = feeder.join();
        out
    });

    let mut parts: Vec<Vec<ArrayD<f32>>> = vec![Vec::new(); wanted.len()];
    for r in results {
        let mut f = r?;
        if needs.need_penult && f.penult.is_none() {
            f.penult = f.h.take();
        }
        for (i, name) in wanted.iter().enumerate() {
            let v = match (name.as_str(), siglip) {
                (LAST_HIDDEN, false) => f.h.as_ref(),
                (LAST_HIDDEN, true) | (IMAGE_EMBEDS, _) => f.head_out.first(),
                (PENULTIMATE, _) => f.penult.as_ref(),
                (MM_PROJECTED, _) => f.head_out.get(1),
                _ => None,
            }
            .ok_or_else(|| Error::runtime(format!("output {name} missing")))?;
            parts[i].push(p.extract_host(v)?);
        }
    }
    let mut tensors = Vec::new();
    for (name, chunks) in wanted.into_iter().zip(parts) {
        let views: Vec<_> = chunks.iter().map(|c| c.view()).collect();
        let t = ndarray::concatenate(Axis(0), &views)
            .map_err(|e| Error::runtime(format!("joining micro-batches: {e}")))?;
        tensors.push((name, t));
    }
    Ok(Outputs { tensors })
}
