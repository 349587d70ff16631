//! What a block of the forward pass is: the embedding, one transformer layer, or the head.
//! Its name (`embed`, `layer.NN`, `head`) names its files in an export, its row in a plan and
//! its entry in `manifest.json`; code matches on the kind, never on that name.

use std::fmt;

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// Pixels to tokens.
    Embed,
    /// Transformer layer `index` of a model with `layers` layers. The count is part of the
    /// kind because the name's width depends on it: `layer.07` of 24, `layer.007` of 120.
    Layer { index: usize, layers: usize },
    /// The final norm and projections.
    Head,
}

impl BlockKind {
    /// The block's name: `embed`, `head`, or `layer.NN` (three digits when the model has more
    /// than 99 layers).
    pub fn name(self) -> String {
        self.to_string()
    }

    /// The kind named `name` in a model of `layers` layers; only the exact names
    /// [`BlockKind::name`] gives are accepted. For names read from outside (a manifest).
    pub fn parse(name: &str, layers: usize) -> Result<BlockKind> {
        let kind = match name {
            "embed" => Some(BlockKind::Embed),
            "head" => Some(BlockKind::Head),
            _ => name
                .strip_prefix("layer.")
                .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse::<usize>().ok())
                .filter(|&index| index < layers)
                .map(|index| BlockKind::Layer { index, layers })
                // `layer.5` or `layer.005` in a 24-layer model names no block.
                .filter(|k| k.name() == name),
        };
        kind.ok_or_else(|| {
            let layer_forms = match layers {
                0 => String::new(),
                1 => format!("{}, ", BlockKind::Layer { index: 0, layers }),
                n => format!(
                    "{} to {}, ",
                    BlockKind::Layer { index: 0, layers },
                    BlockKind::Layer {
                        index: n - 1,
                        layers
                    }
                ),
            };
            let plural = if layers == 1 { "" } else { "s" };
            Error::invalid(format!(
                "unknown block {name:?} for a model of {layers} layer{plural} (valid: embed, {layer_forms}head)"
            ))
        })
    }
}

impl fmt::Display for BlockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so widths and alignment (`{:<10}`) apply as they do to strings.
        match *self {
            BlockKind::Embed => f.pad("embed"),
            BlockKind::Head => f.pad("head"),
            BlockKind::Layer { index, layers } if layers > 99 => {
                f.pad(&format!("layer.{index:03}"))
            }
            BlockKind::Layer { index, .. } => f.pad(&format!("layer.{index:02}")),
        }
    }
}

/// Serialised as its name.
impl serde::Serialize for BlockKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(index: usize, layers: usize) -> BlockKind {
        BlockKind::Layer { index, layers }
    }

    #[test]
    fn names_are_the_export_and_plan_names() {
        assert_eq!(BlockKind::Embed.name(), "embed");
        assert_eq!(BlockKind::Head.name(), "head");
        assert_eq!(layer(0, 12).name(), "layer.00");
        assert_eq!(layer(7, 24).name(), "layer.07");
        assert_eq!(layer(98, 99).name(), "layer.98");
        // Past 99 layers every layer name has three digits.
        assert_eq!(layer(7, 100).name(), "layer.007");
        assert_eq!(layer(99, 100).name(), "layer.099");
        assert_eq!(layer(119, 120).name(), "layer.119");
        assert_eq!(format!("{:<10}|", BlockKind::Head), "head      |");
        assert_eq!(format!("{:>9}", layer(3, 32)), " layer.03");
        assert_eq!(
            serde_json::to_value(layer(3, 32)).unwrap(),
            serde_json::json!("layer.03")
        );
    }

    #[test]
    fn names_round_trip() {
        for layers in [1, 2, 24, 99, 100, 120] {
            let mut kinds = vec![BlockKind::Embed, BlockKind::Head];
            kinds.extend((0..layers).map(|i| layer(i, layers)));
            for k in kinds {
                assert_eq!(BlockKind::parse(&k.name(), layers).unwrap(), k, "{k}");
            }
        }
    }

    #[test]
    fn bad_names_are_refused_with_the_valid_forms() {
        let msg = |name: &str, layers: usize| {
            BlockKind::parse(name, layers)
                .unwrap_err()
                .message()
                .to_string()
        };
        assert_eq!(
            msg("layer.24", 24),
            "unknown block \"layer.24\" for a model of 24 layers (valid: embed, layer.00 to layer.23, head)"
        );
        assert_eq!(
            msg("layer.5", 120),
            "unknown block \"layer.5\" for a model of 120 layers (valid: embed, layer.000 to layer.119, head)"
        );
        assert_eq!(
            msg("tail", 1),
            "unknown block \"tail\" for a model of 1 layer (valid: embed, layer.00, head)"
        );
        // Wrong width, signs, spaces, case and empty names name no block.
        for bad in [
            "layer.5",
            "layer.005",
            "layer.+5",
            "layer.-1",
            "layer. 5",
            "layer.",
            "layer",
            "Layer.05",
            "EMBED",
            " head",
            "",
        ] {
            assert!(BlockKind::parse(bad, 24).is_err(), "{bad:?}");
        }
        assert!(BlockKind::parse("layer.05", 120).is_err());
        assert!(BlockKind::parse("layer.100", 100).is_err());
    }
}
