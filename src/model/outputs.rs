//! The outputs a model can produce (contract §3), as one typed list in contract order, which of
//! them a request asks for, and the encoded tensors (`Outputs`). Every front end names them by
//! these strings; the runners route them through `runtime::route`.

use std::fmt;

use ndarray::{ArrayD, Axis};

use crate::image::Grid;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Output {
    LastHiddenState,
    ImageEmbeds,
    PenultimateHiddenStates,
    /// LLaVA files only.
    MmProjected,
    /// Every layer's output, no norm, stacked `[B, L, T, D]`: computed only on request.
    AllHiddenStates,
}

impl Output {
    /// Every output, in contract §3 order.
    pub const ALL: [Output; 5] = [
        Output::LastHiddenState,
        Output::ImageEmbeds,
        Output::PenultimateHiddenStates,
        Output::MmProjected,
        Output::AllHiddenStates,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Output::LastHiddenState => "last_hidden_state",
            Output::ImageEmbeds => "image_embeds",
            Output::PenultimateHiddenStates => "penultimate_hidden_states",
            Output::MmProjected => "mm_projected",
            Output::AllHiddenStates => "all_hidden_states",
        }
    }

    pub fn from_name(name: &str) -> Option<Output> {
        Output::ALL.into_iter().find(|o| o.name() == name)
    }

    /// Large outputs left out of the default set: produced only when named.
    pub fn on_request_only(self) -> bool {
        self == Output::AllHiddenStates
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The outputs of a model that has `mm_projected` (LLaVA files) or not: every output of
/// contract §3 that applies, in its order (`all_hidden_states` included: on request).
pub fn available(mm_projected: bool) -> Vec<Output> {
    Output::ALL
        .into_iter()
        .filter(|&o| o != Output::MmProjected || mm_projected)
        .collect()
}

/// The requested output names checked against `available` (duplicates dropped, contract
/// order); empty means the default set: all but the on-request ones.
pub fn resolve_outputs(available: &[Output], requested: &[String]) -> Result<Vec<Output>> {
    if requested.is_empty() {
        return Ok(available
            .iter()
            .copied()
            .filter(|o| !o.on_request_only())
            .collect());
    }
    let mut out = Vec::new();
    for r in requested {
        let r = r.trim();
        let o = Output::from_name(r)
            .filter(|o| available.contains(o))
            .ok_or_else(|| {
                let valid: Vec<&str> = available.iter().map(|o| o.name()).collect();
                Error::invalid(format!(
                    "unknown output {r:?} for this model (valid: {})",
                    valid.join(", ")
                ))
            })?;
        if !out.contains(&o) {
            out.push(o);
        }
    }
    out.sort();
    Ok(out)
}

/// Encoded outputs, each `[B, …]` f32, in contract §3 order.
#[derive(Debug, Default, Clone)]
pub struct Outputs {
    pub tensors: Vec<(String, ArrayD<f32>)>,
    /// naflex models: each image's patch grid (`spatial_shapes`). Token outputs hold
    /// `num_patches` rows per image, of which the first `rows · cols` are its patches in
    /// row-major order and the rest zero.
    pub grids: Option<Vec<Grid>>,
}

impl Outputs {
    pub fn get(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The outputs `names` from the batches they were encoded in: `batches[i]` holds output
    /// `i` of each batch, in row order; `grids` are a naflex input's, all rows.
    pub fn from_batches(
        names: Vec<String>,
        batches: Vec<Vec<ArrayD<f32>>>,
        grids: Option<&[Grid]>,
    ) -> Result<Outputs> {
        let tensors = names
            .into_iter()
            .zip(batches)
            .map(|(name, parts)| {
                let t = concat_rows(parts).map_err(|e| e.context(&name))?;
                Ok((name, t))
            })
            .collect::<Result<_>>()?;
        Ok(Outputs {
            tensors,
            grids: grids.map(<[Grid]>::to_vec),
        })
    }

    /// The outputs of consecutive encodes (same names, in order) joined along the rows, grids
    /// included.
    pub fn concat(parts: Vec<Outputs>) -> Result<Outputs> {
        let Some(first) = parts.first() else {
            return Err(Error::runtime("encode returned no output"));
        };
        let names: Vec<String> = first.tensors.iter().map(|(n, _)| n.clone()).collect();
        let grids = parts
            .iter()
            .map(|p| p.grids.clone())
            .collect::<Option<Vec<_>>>()
            .map(|g| g.concat());
        let mut batches: Vec<Vec<ArrayD<f32>>> = vec![Vec::with_capacity(parts.len()); names.len()];
        for part in parts {
            for (i, (_, t)) in part.tensors.into_iter().enumerate() {
                batches
                    .get_mut(i)
                    .ok_or_else(|| Error::runtime("batches with other outputs"))?
                    .push(t);
            }
        }
        Outputs::from_batches(names, batches, grids.as_deref())
    }
}

/// The rows of `parts` stacked into one array (`[B1 + B2 + …, …]`); a single part is moved,
/// not copied.
pub fn concat_rows(mut parts: Vec<ArrayD<f32>>) -> Result<ArrayD<f32>> {
    if parts.len() == 1 {
        return Ok(parts.pop().unwrap_or_default());
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    ndarray::concatenate(Axis(0), &views)
        .map_err(|e| Error::runtime(format!("joining the rows of {} batches: {e}", parts.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_spec_order() {
        let names: Vec<&str> = Output::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(
            names,
            [
                "last_hidden_state",
                "image_embeds",
                "penultimate_hidden_states",
                "mm_projected",
                "all_hidden_states"
            ]
        );
        for o in Output::ALL {
            assert_eq!(Output::from_name(o.name()), Some(o));
        }
        assert_eq!(Output::from_name("hidden_states"), None);
        assert!(Output::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn requests_resolve_in_contract_order_and_name_the_valid_choices() {
        let clip = available(false);
        assert!(!clip.contains(&Output::MmProjected));
        let defaults = resolve_outputs(&clip, &[]).unwrap();
        assert!(!defaults.contains(&Output::AllHiddenStates));
        let asked: Vec<String> = ["image_embeds", " last_hidden_state", "image_embeds"]
            .map(String::from)
            .into();
        assert_eq!(
            resolve_outputs(&clip, &asked).unwrap(),
            [Output::LastHiddenState, Output::ImageEmbeds]
        );
        let e = resolve_outputs(&clip, &["mm_projected".to_string()]).unwrap_err();
        assert!(e.message().contains("valid: last_hidden_state"), "{e}");
    }

    #[test]
    fn rows_of_batches_are_stacked_in_order() {
        let a = ndarray::ArrayD::from_shape_vec(vec![1, 2], vec![1.0, 2.0]).unwrap();
        let b = ndarray::ArrayD::from_shape_vec(vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]).unwrap();
        let t = concat_rows(vec![a.clone(), b]).unwrap();
        assert_eq!(t.shape(), [3, 2]);
        assert_eq!(
            t.iter().copied().collect::<Vec<_>>(),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        assert_eq!(concat_rows(vec![a.clone()]).unwrap(), a);
        let c = ndarray::ArrayD::from_shape_vec(vec![1, 3], vec![0.0; 3]).unwrap();
        assert!(concat_rows(vec![a, c]).is_err());
    }
}
