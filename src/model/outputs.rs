//! The outputs a model can produce (contract §3), as one typed list in contract order. Every front
//! end names them by these strings; the runners route them through `runtime::route`.

use std::fmt;

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
}
