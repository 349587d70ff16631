//! `--micro-batch N`: the input is cut into micro-batches of N images that flow through the
//! pipeline's device segments concurrently — one thread per segment (a maximal run of
//! consecutive blocks on one exec device), bounded channels between them — so while
//! segment k runs micro-batch m, segment k+1 runs micro-batch m-1.
//!
//! The machinery is device-agnostic and tested on the CPU (where a plan has one segment,
//! tests cut it into several with `max_segment_blocks`). On GPUs each segment thread hands
//! its blocks to that GPU's worker thread (`gpu::worker`), so each GPU is still driven by one
//! thread. The overlap actually achieved on GPUs is UNVERIFIED (no GPU here).

use std::sync::mpsc;

use ndarray::ArrayD;
use ort::value::DynValue;

use super::pass_input::PassInput;
use super::pipeline::Pipeline;
use super::route::{Pass, Route};
use crate::image::{Grid, Pixels, PixelsView};
use crate::model::{BlockKind, Outputs};
use crate::{Error, Result};

/// One micro-batch in flight.
struct Flight {
    pixels: Option<Pixels>,
    /// naflex: the micro-batch's grids, to pad its token outputs with.
    grids: Option<Vec<Grid>>,
    pass: Pass<DynValue>,
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

fn step(p: &Pipeline, route: &Route, stage: usize, f: &mut Flight) -> Result<()> {
    if p.stage_kind(stage) != BlockKind::Embed {
        return p.advance(route, stage, &mut f.pass, &mut Vec::new());
    }
    let px = f
        .pixels
        .take()
        .ok_or_else(|| Error::runtime("micro-batch pixels missing"))?;
    let input = PassInput::new(px.view())?;
    f.pass.mask = input.mask;
    let mut embed = input.embed;
    p.advance(route, stage, &mut f.pass, &mut embed)
}

/// Encodes `pixels` (checked by the caller: `ClipVision::encode`) in micro-batches of `micro`
/// images, pipelined across the device segments. Same outputs as [`Pipeline::encode`].
pub fn encode<'a>(
    p: &Pipeline,
    pixels: impl Into<PixelsView<'a>>,
    outputs: &[String],
    micro: usize,
    max_segment_blocks: Option<usize>,
) -> Result<Outputs> {
    let pixels = pixels.into();
    let route = Route::new(p.model(), outputs)?;
    let active = route.blocks();
    let segs = segments(p, &active, max_segment_blocks);
    let micro = micro.max(1);

    let results: Vec<Result<Flight>> = std::thread::scope(|scope| {
        let (first_tx, mut rx) = mpsc::sync_channel::<Result<Flight>>(2);
        for seg in &segs {
            let (tx, next_rx) = mpsc::sync_channel::<Result<Flight>>(2);
            let route = &route;
            scope.spawn(move || {
                for item in rx {
                    let item = item.and_then(|mut f| {
                        for &s in seg {
                            step(p, route, s, &mut f)?;
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
        let route = &route;
        let feeder = scope.spawn(move || {
            for chunk in pixels.chunks(micro) {
                let f = Flight {
                    grids: chunk.grids().map(<[Grid]>::to_vec),
                    pixels: Some(chunk.to_owned()),
                    pass: route.pass(),
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

    let mut parts: Vec<Vec<ArrayD<f32>>> = vec![Vec::new(); route.outputs.len()];
    for r in results {
        let f = r?;
        let out = route.collect(&f.pass, |v| p.extract_host(v))?;
        for (i, t) in p
            .pad_outputs(out, f.grids.as_deref())
            .into_iter()
            .enumerate()
        {
            parts[i].push(t);
        }
    }
    Outputs::from_batches(route.names(), parts, pixels.grids())
}
