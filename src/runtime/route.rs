//! Output routing, in one place for every runner: which blocks a request runs, which layer
//! states a pass keeps, and which value yields each requested output.

use crate::export::blocks;
use crate::model::{BlockKind, Model, Output};
use crate::Result;

/// Where an output's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The state after the last layer (CLIP's `last_hidden_state`).
    State,
    /// The output of layer L-2.
    Penultimate,
    /// Every layer's output, stacked on axis 1.
    AllLayers,
    /// Output `i` of the head block.
    Head(usize),
}

/// What one request needs from a pass.
#[derive(Clone, Debug)]
pub struct Route {
    /// The requested outputs in contract order, each with its source.
    pub outputs: Vec<(Output, Source)>,
    pub layers: usize,
    /// Layers to run: all of them, or L-1 when only the penultimate state is asked for.
    pub run_layers: usize,
    pub run_head: bool,
    /// The head takes the penultimate state as a second input (LLaVA).
    pub head_takes_penult: bool,
    /// Every block after the embedding takes the pass's key mask last (naflex).
    pub masked: bool,
    keep_penult: bool,
    keep_all: bool,
}

impl Route {
    /// The route for `requested` output names (empty: the model's default set).
    pub fn new(model: &Model, requested: &[String]) -> Result<Route> {
        let wanted = model.resolve_outputs(requested)?;
        let outputs: Vec<(Output, Source)> = wanted
            .into_iter()
            .map(|o| {
                let source = match (blocks::head_output(model, o), o) {
                    (Some(i), _) => Source::Head(i),
                    (None, Output::PenultimateHiddenStates) => Source::Penultimate,
                    (None, Output::AllHiddenStates) => Source::AllLayers,
                    (None, _) => Source::State,
                };
                (o, source)
            })
            .collect();
        let has = |s: fn(&Source) -> bool| outputs.iter().any(|(_, src)| s(src));
        let run_head = has(|s| matches!(s, Source::Head(_)));
        let head_takes_penult = blocks::block_io(model, BlockKind::Head)
            .inputs
            .iter()
            .any(|i| i == Output::PenultimateHiddenStates.name());
        let layers = model.config.num_layers;
        let run_layers = if run_head || has(|s| matches!(s, Source::State | Source::AllLayers)) {
            layers
        } else {
            layers - 1
        };
        Ok(Route {
            keep_penult: has(|s| *s == Source::Penultimate) || (run_head && head_takes_penult),
            keep_all: has(|s| *s == Source::AllLayers),
            masked: model.config.kind.is_naflex(),
            outputs,
            layers,
            run_layers,
            run_head,
            head_takes_penult,
        })
    }

    /// Indices of the blocks to run, in order (`embed` is 0, the head is L+1).
    pub fn blocks(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..=self.run_layers).collect();
        if self.run_head {
            v.push(self.layers + 1);
        }
        v
    }

    /// Requested output names, in order.
    pub fn names(&self) -> Vec<String> {
        self.outputs
            .iter()
            .map(|(o, _)| o.name().to_string())
            .collect()
    }

    /// Each requested output of a finished pass as one host array, in route order;
    /// `to_host` copies one value to the host (off its GPU when it lives on one).
    pub fn collect<V>(
        &self,
        pass: &Pass<V>,
        to_host: impl Fn(&V) -> Result<ndarray::ArrayD<f32>>,
    ) -> Result<Vec<ndarray::ArrayD<f32>>> {
        self.outputs
            .iter()
            .map(|&(o, source)| {
                let values = pass
                    .values(source)
                    .ok_or_else(|| crate::Error::runtime(format!("output {o} missing")))?;
                let host = values.into_iter().map(&to_host).collect::<Result<_>>()?;
                assemble(source, host)
            })
            .collect()
    }

    /// Whether a pass must keep layer `l`'s output after the next layer has read it.
    fn keeps(&self, l: usize) -> bool {
        self.keep_all || (self.keep_penult && l + 2 == self.layers)
    }

    /// An empty pass that keeps what this route needs.
    pub fn pass<V>(&self) -> Pass<V> {
        Pass {
            keep: (0..self.layers).map(|l| self.keeps(l)).collect(),
            penult: self.layers - 2,
            mask: None,
            embed: None,
            states: Vec::new(),
            head: Vec::new(),
        }
    }
}

/// The values of one pass (`V`: an ONNX Runtime value), dropping each layer state as soon as
/// nothing the route needs refers to it.
pub struct Pass<V> {
    keep: Vec<bool>,
    penult: usize,
    /// naflex: the key mask every block after the embedding takes.
    pub mask: Option<V>,
    embed: Option<V>,
    /// Output of layer `l`, while kept.
    states: Vec<Option<V>>,
    pub head: Vec<V>,
}

impl<V> Pass<V> {
    pub fn set_embed(&mut self, v: V) {
        self.embed = Some(v);
    }

    /// The current state: the last layer's output, or the embedding before any layer ran.
    pub fn current(&self) -> Option<&V> {
        match self.states.last() {
            Some(s) => s.as_ref(),
            None => self.embed.as_ref(),
        }
    }

    /// Records the output of the next layer; the state it read is dropped unless kept.
    pub fn push_layer(&mut self, v: V) {
        match self.states.len().checked_sub(1) {
            Some(prev) if !self.keep.get(prev).copied().unwrap_or(false) => {
                self.states[prev] = None
            }
            Some(_) => {}
            None => self.embed = None,
        }
        self.states.push(Some(v));
    }

    /// The output of layer L-2, once computed.
    pub fn penultimate(&self) -> Option<&V> {
        self.states.get(self.penult).and_then(Option::as_ref)
    }

    /// The value(s) of `source`: one, or every layer's output for [`Source::AllLayers`].
    pub fn values(&self, source: Source) -> Option<Vec<&V>> {
        match source {
            Source::State => self.current().map(|v| vec![v]),
            Source::Penultimate => self.penultimate().map(|v| vec![v]),
            Source::Head(i) => self.head.get(i).map(|v| vec![v]),
            Source::AllLayers => {
                if self.states.len() != self.keep.len() {
                    return None;
                }
                self.states.iter().map(Option::as_ref).collect()
            }
        }
    }
}

/// Joins the host copies of one output's values: one `[B, …]` tensor, or every layer's
/// `[B, T, D]` stacked into `[B, L, T, D]`.
pub fn assemble(
    source: Source,
    mut parts: Vec<ndarray::ArrayD<f32>>,
) -> crate::Result<ndarray::ArrayD<f32>> {
    if source != Source::AllLayers {
        return parts
            .pop()
            .filter(|_| parts.is_empty())
            .ok_or_else(|| crate::Error::runtime("an output has no value"));
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    ndarray::stack(ndarray::Axis(1), &views)
        .map_err(|e| crate::Error::runtime(format!("stacking the layer states: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(layers: usize, keep_penult: bool, keep_all: bool) -> Route {
        Route {
            outputs: vec![],
            layers,
            run_layers: layers,
            run_head: false,
            head_takes_penult: false,
            masked: false,
            keep_penult,
            keep_all,
        }
    }

    #[test]
    fn a_pass_keeps_only_what_the_route_needs() {
        let r = route(4, true, false);
        let mut p = r.pass::<usize>();
        p.set_embed(100);
        assert_eq!(p.current(), Some(&100));
        for l in 0..4 {
            p.push_layer(l);
        }
        assert_eq!(p.current(), Some(&3));
        assert_eq!(p.penultimate(), Some(&2));
        assert_eq!(p.states, vec![None, None, Some(2), Some(3)]);
        assert_eq!(p.values(Source::AllLayers), None);

        let r = route(4, false, true);
        let mut p = r.pass::<usize>();
        p.set_embed(100);
        for l in 0..4 {
            p.push_layer(l);
        }
        assert_eq!(p.values(Source::AllLayers), Some(vec![&0, &1, &2, &3]));
        assert_eq!(p.values(Source::Penultimate), Some(vec![&2]));
        assert!(p.embed.is_none());

        // Nothing kept: only the current state survives.
        let r = route(3, false, false);
        let mut p = r.pass::<usize>();
        for l in 0..3 {
            p.push_layer(l);
        }
        assert_eq!(p.states, vec![None, None, Some(2)]);
    }

    #[test]
    fn all_layers_stack_on_axis_one() {
        let a = ndarray::ArrayD::<f32>::zeros(vec![2, 5, 3]);
        let b = ndarray::ArrayD::<f32>::ones(vec![2, 5, 3]);
        let s = assemble(Source::AllLayers, vec![a, b.clone()]).unwrap();
        assert_eq!(s.shape(), &[2, 2, 5, 3]);
        assert_eq!(s[[1, 1, 4, 2]], 1.0);
        assert_eq!(s[[1, 0, 4, 2]], 0.0);
        assert_eq!(
            assemble(Source::State, vec![b]).unwrap().shape(),
            &[2, 5, 3]
        );
    }
}
