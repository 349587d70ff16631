//! The expert allocation string (contract §5.2), parsed strictly.
//!
//! `entry (';' entry)*`, optional trailing `;`, whitespace ignored, case-insensitive,
//! `entry := device ',' amount`, one kind per string.

use std::collections::HashSet;
use std::fmt;

use super::device::Device;
use super::units::{parse_bytes, Decimal};
use crate::{Error, Result};

/// The kind of every entry of one allocation string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllocKind {
    /// `60%`: a share of the model's bytes.
    Ratio,
    /// `4gb`: a byte budget.
    Bytes,
    /// `0.5`: that share of the device's total memory as its budget.
    Fraction,
}

impl AllocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AllocKind::Ratio => "ratio",
            AllocKind::Bytes => "bytes",
            AllocKind::Fraction => "fraction",
        }
    }
}

impl fmt::Display for AllocKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry's amount.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// Percent of the model's bytes, as written (`60%` → `60.0`). A ratio `*` is resolved at
    /// parse time to `100 − Σ others` and appears here as a `Ratio` too (its `text` keeps the `*`).
    Ratio(f64),
    /// A byte budget.
    Bytes(u64),
    /// A share in (0, 1] of the device's total memory.
    Fraction(f64),
    /// `*` with bytes: this device takes the remainder.
    Rest,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AllocEntry {
    pub device: Device,
    pub amount: Amount,
    /// The entry as written (trimmed), for messages.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    pub kind: AllocKind,
    pub entries: Vec<AllocEntry>,
}

impl Allocation {
    /// Whether an entry was written as `*`.
    pub fn rest_index(&self) -> Option<usize> {
        self.entries.iter().position(|e| is_rest_text(&e.text))
    }
}

fn is_rest_text(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    compact.ends_with(",*")
}

const GRAMMAR: &str = "write entries \"device,amount\" separated by ';', e.g. \"cuda:0,60%;cuda:1,30%;cpu,10%\" (ratio), \"cuda:0,4gb;cpu,*\" (bytes) or \"cuda:0,0.5;cuda:1,0.25\" (fraction of each device's memory); devices are cpu or cuda:N";

/// What an amount looked like before the kinds were reconciled.
enum Raw {
    Percent(f64),
    Bytes(u64),
    Fraction(f64),
    Star,
}

fn parse_amount(amount: &str, entry: &str) -> Result<Raw> {
    let bad = |why: &str| Error::invalid(format!("allocation entry {entry:?}: {why}; {GRAMMAR}"));
    if amount.is_empty() {
        return Err(bad("the amount after the comma is missing"));
    }
    if amount == "*" {
        return Ok(Raw::Star);
    }
    if amount.starts_with('-') {
        return Err(bad(&format!(
            "amount {amount:?} is negative; amounts must be positive"
        )));
    }
    if let Some(num) = amount.strip_suffix('%') {
        let Some(dec) = Decimal::parse(num) else {
            return Err(bad(&format!(
                "{amount:?} is not a percentage such as \"60%\" or \"12.5%\""
            )));
        };
        let v = dec.to_f64();
        if !v.is_finite() {
            return Err(bad(&format!("percentage {amount:?} is too large")));
        }
        return Ok(Raw::Percent(v));
    }
    if amount.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let Some(dec) = Decimal::parse(amount) else {
            return Err(bad(&format!("{amount:?} is not a number")));
        };
        let v = dec.to_f64();
        if dec.is_zero() || !(v > 0.0 && v <= 1.0) {
            return Err(bad(&format!(
                "bare number {amount:?} must be a fraction in (0, 1] of the device's memory; for a byte budget add a unit (\"4gb\"), for a share of the model add '%'"
            )));
        }
        return Ok(Raw::Fraction(v));
    }
    match parse_bytes(amount) {
        Ok(b) => Ok(Raw::Bytes(b)),
        Err(e) => Err(bad(&format!(
            "{amount:?} is not a percentage, a size or a fraction ({})",
            e.message()
        ))),
    }
}

/// Parses an allocation string strictly (contract §5.2). See [`Amount`] for how `*` is represented.
pub fn parse_allocations(s: &str) -> Result<Allocation> {
    let raws = parse_entries(s)?;
    let (kind, star) = one_kind(&raws)?;
    let entries = if kind == AllocKind::Ratio {
        ratio_entries(s, raws, star.as_deref())?
    } else {
        raws.into_iter()
            .map(|(device, raw, text)| {
                let amount = match raw {
                    Raw::Bytes(b) => Amount::Bytes(b),
                    Raw::Fraction(f) => Amount::Fraction(f),
                    _ => Amount::Rest,
                };
                AllocEntry {
                    device,
                    amount,
                    text,
                }
            })
            .collect()
    };
    Ok(Allocation { kind, entries })
}

/// The entries of `s` (`device,amount` separated by `;`), each device once, with their text.
fn parse_entries(s: &str) -> Result<Vec<(Device, Raw, String)>> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err(Error::invalid(format!(
            "allocation string {s:?} is empty; {GRAMMAR}"
        )));
    }
    let mut pieces: Vec<&str> = s.split(';').collect();
    if pieces.len() > 1 && pieces.last().is_some_and(|p| p.trim().is_empty()) {
        pieces.pop(); // one optional trailing ';'
    }
    let mut raws: Vec<(Device, Raw, String)> = Vec::with_capacity(pieces.len());
    let mut seen: HashSet<Device> = HashSet::new();
    for piece in pieces {
        let text = piece.trim().to_string();
        let entry: String = piece
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        if entry.is_empty() {
            return Err(Error::invalid(format!(
                "allocation string {s:?} has an empty entry (two ';' in a row or a leading ';'); {GRAMMAR}"
            )));
        }
        let Some((dev_text, amount)) = entry.split_once(',') else {
            return Err(Error::invalid(format!(
                "allocation entry {text:?} has no comma; {GRAMMAR}"
            )));
        };
        if amount.contains(',') {
            return Err(Error::invalid(format!(
                "allocation entry {text:?} has more than one comma; {GRAMMAR}"
            )));
        }
        let device: Device = dev_text.parse().map_err(|e: Error| {
            Error::invalid(format!("allocation entry {text:?}: {}", e.message()))
        })?;
        if !seen.insert(device) {
            return Err(Error::invalid(format!(
                "allocation entry {text:?} lists {device} a second time; each device may appear once"
            )));
        }
        let raw = parse_amount(amount, &text)?;
        raws.push((device, raw, text));
    }
    Ok(raws)
}

/// The one kind of amount the entries use (ratio when all are `*`), and the text of the entry
/// that takes the remainder (`*`, at most one; only with ratios or bytes).
fn one_kind(raws: &[(Device, Raw, String)]) -> Result<(AllocKind, Option<String>)> {
    let mut kind: Option<(AllocKind, &str)> = None;
    let mut star: Option<&str> = None;
    for (_, raw, text) in raws {
        let k = match raw {
            Raw::Percent(_) => AllocKind::Ratio,
            Raw::Bytes(_) => AllocKind::Bytes,
            Raw::Fraction(_) => AllocKind::Fraction,
            Raw::Star => {
                if let Some(first) = star {
                    return Err(Error::invalid(format!(
                        "allocation entry {text:?} is a second '*' (after {first:?}); at most one device may take the remainder"
                    )));
                }
                star = Some(text);
                continue;
            }
        };
        match kind {
            None => kind = Some((k, text)),
            Some((k0, first)) if k0 != k => {
                return Err(Error::invalid(format!(
                    "allocation entry {text:?} is a {k} amount but {first:?} is a {k0} amount; all entries of one string must be of one kind (all '%', all sizes with units, or all fractions)"
                )));
            }
            Some(_) => {}
        }
    }
    let kind = kind.map(|(k, _)| k).unwrap_or(AllocKind::Ratio);
    if let (AllocKind::Fraction, Some(t)) = (kind, star) {
        return Err(Error::invalid(format!(
            "allocation entry {t:?}: '*' cannot be used with fractions; use it with '%' or byte sizes (e.g. \"cuda:0,4gb;cpu,*\")"
        )));
    }
    Ok((kind, star.map(str::to_string)))
}

/// Ratio entries: the percentages as given, `*` (the entry `star`) getting what is left of 100%.
fn ratio_entries(
    s: &str,
    raws: Vec<(Device, Raw, String)>,
    star: Option<&str>,
) -> Result<Vec<AllocEntry>> {
    let sum: f64 = raws
        .iter()
        .map(|(_, r, _)| match r {
            Raw::Percent(p) => *p,
            _ => 0.0,
        })
        .sum();
    if !sum.is_finite() {
        return Err(Error::invalid(format!(
            "allocation string {s:?}: the percentages are too large to add up; use shares that sum to 100%"
        )));
    }
    let rest = 100.0 - sum;
    if let Some(t) = star {
        if rest < 0.0 {
            return Err(Error::invalid(format!(
                "allocation entry {t:?} would get {rest}% because the other entries already sum to {sum}%; with '*' the others must sum to at most 100%"
            )));
        }
    } else if sum <= 0.0 {
        return Err(Error::invalid(format!(
            "allocation string {s:?}: the percentages sum to 0%; give at least one device a share above 0%"
        )));
    }
    Ok(raws
        .into_iter()
        .map(|(device, raw, text)| {
            let p = match raw {
                Raw::Percent(p) => p,
                _ => rest,
            };
            AllocEntry {
                device,
                amount: Amount::Ratio(p),
                text,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn amounts(s: &str) -> Vec<(Device, Amount)> {
        parse_allocations(s)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| (e.device, e.amount))
            .collect()
    }

    #[test]
    fn ratio_forms() {
        let a = parse_allocations("cuda:0,60%;cuda:1,30%;cpu,10%").unwrap();
        assert_eq!(a.kind, AllocKind::Ratio);
        assert_eq!(
            amounts("cuda:0,60%;cuda:1,30%;cpu,10%"),
            vec![
                (Device::Cuda(0), Amount::Ratio(60.0)),
                (Device::Cuda(1), Amount::Ratio(30.0)),
                (Device::Cpu, Amount::Ratio(10.0)),
            ]
        );
        assert_eq!(a.entries[0].text, "cuda:0,60%");
        // whitespace, case, trailing ';'
        assert_eq!(
            amounts("  CUDA : 0 , 12.5 % ;  Cpu,87.5%; "),
            vec![
                (Device::Cuda(0), Amount::Ratio(12.5)),
                (Device::Cpu, Amount::Ratio(87.5))
            ]
        );
        // not normalised at parse time
        assert_eq!(amounts("cuda:0,3%;cpu,1%")[1].1, Amount::Ratio(1.0));
        // '*' resolves to the rest
        let a = parse_allocations("cuda:0,50%;cpu,*").unwrap();
        assert_eq!(a.entries[1].amount, Amount::Ratio(50.0));
        assert_eq!(a.rest_index(), Some(1));
        assert_eq!(amounts("cpu,*;cuda:0,100%")[0].1, Amount::Ratio(0.0));
        assert_eq!(amounts("cpu,*"), vec![(Device::Cpu, Amount::Ratio(100.0))]);
        assert_eq!(amounts("cuda,100%")[0].0, Device::Cuda(0));
        assert_eq!(amounts("cuda:0,0%;cpu,5%")[0].1, Amount::Ratio(0.0));
    }

    #[test]
    fn bytes_forms() {
        let a = parse_allocations("cuda:0,4gb;cuda:1,2gb;cpu,*").unwrap();
        assert_eq!(a.kind, AllocKind::Bytes);
        assert_eq!(a.rest_index(), Some(2));
        assert_eq!(
            amounts("cuda:0,4gb;cuda:1,512MiB;cpu,*"),
            vec![
                (Device::Cuda(0), Amount::Bytes(4 << 30)),
                (Device::Cuda(1), Amount::Bytes(512 << 20)),
                (Device::Cpu, Amount::Rest),
            ]
        );
        assert_eq!(amounts("cuda:0,1.5g;")[0].1, Amount::Bytes(3 << 29));
        assert_eq!(amounts("cpu,*;cuda:0,1g")[0].1, Amount::Rest);
    }

    #[test]
    fn fraction_forms() {
        let a = parse_allocations("cuda:0,0.5;cuda:1,1;cpu,.25").unwrap();
        assert_eq!(a.kind, AllocKind::Fraction);
        assert_eq!(
            a.entries.iter().map(|e| e.amount).collect::<Vec<_>>(),
            vec![
                Amount::Fraction(0.5),
                Amount::Fraction(1.0),
                Amount::Fraction(0.25)
            ]
        );
        assert_eq!(a.rest_index(), None);
        assert_eq!(amounts("cpu,1.0")[0].1, Amount::Fraction(1.0));
    }

    fn err(s: &str) -> String {
        let e = parse_allocations(s).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{s}");
        e.message().to_string()
    }

    #[test]
    fn errors_quote_the_entry() {
        let cases: &[(&str, &str, &str)] = &[
            ("", "\"\"", "empty"),
            ("  ", "\"  \"", "empty"),
            (";", "\";\"", "empty entry"),
            ("cuda:0,50%;;cpu,50%", "cuda:0,50%;;cpu,50%", "empty entry"),
            (";cuda:0,50%", ";cuda:0,50%", "empty entry"),
            ("cuda:0,50%;;", "cuda:0,50%;;", "empty entry"),
            ("cuda:0 60%", "\"cuda:0 60%\"", "no comma"),
            ("cuda:0,50%;cpu", "\"cpu\"", "no comma"),
            ("cuda:0,50%,x", "\"cuda:0,50%,x\"", "more than one comma"),
            ("gpu:0,50%", "\"gpu:0,50%\"", "cuda:N"),
            ("cuda:x,50%", "\"cuda:x,50%\"", "cuda:N"),
            (",50%", "\",50%\"", "empty"),
            ("cuda:0,", "\"cuda:0,\"", "missing"),
            ("cuda:0,50%;cuda:0,50%", "\"cuda:0,50%\"", "second time"),
            ("cuda:0,50%;CUDA:0,50%", "\"CUDA:0,50%\"", "second time"),
            ("cuda,50%;cuda:0,50%", "\"cuda:0,50%\"", "second time"),
            ("cuda:0,50%;cpu,4gb", "\"cpu,4gb\"", "one kind"),
            ("cuda:0,0.5;cpu,50%", "\"cpu,50%\"", "one kind"),
            ("cuda:0,4gb;cpu,0.5", "\"cpu,0.5\"", "one kind"),
            ("cuda:0,1.5", "\"cuda:0,1.5\"", "(0, 1]"),
            ("cuda:0,2", "\"cuda:0,2\"", "(0, 1]"),
            ("cuda:0,0", "\"cuda:0,0\"", "(0, 1]"),
            ("cuda:0,0.0", "\"cuda:0,0.0\"", "(0, 1]"),
            ("cuda:0,-0.5", "\"cuda:0,-0.5\"", "negative"),
            ("cuda:0,-50%", "\"cuda:0,-50%\"", "negative"),
            ("cuda:0,-4gb", "\"cuda:0,-4gb\"", "negative"),
            ("cuda:0,nan", "\"cuda:0,nan\"", "not a percentage"),
            ("cuda:0,NaN%", "\"cuda:0,NaN%\"", "percentage"),
            ("cuda:0,inf", "\"cuda:0,inf\"", "not a percentage"),
            ("cuda:0,1e2%", "\"cuda:0,1e2%\"", "percentage"),
            ("cuda:0,%", "\"cuda:0,%\"", "percentage"),
            ("cuda:0,4", "\"cuda:0,4\"", "(0, 1]"),
            ("cuda:0,4xb", "\"cuda:0,4xb\"", "unknown unit"),
            ("cuda:0,*;cpu,*", "\"cpu,*\"", "second '*'"),
            ("cuda:0,0.5;cpu,*", "\"cpu,*\"", "fractions"),
            ("cpu,*;cuda:0,0.5", "\"cpu,*\"", "fractions"),
            ("cuda:0,80%;cuda:1,30%;cpu,*", "\"cpu,*\"", "110%"),
            ("cuda:0,0%;cpu,0%", "\"cuda:0,0%;cpu,0%\"", "0%"),
        ];
        for (input, quoted, why) in cases {
            let m = err(input);
            assert!(
                m.contains(quoted),
                "{input:?}: message {m:?} does not quote {quoted:?}"
            );
            assert!(
                m.contains(why),
                "{input:?}: message {m:?} does not say {why:?}"
            );
        }
    }

    #[test]
    fn huge_percentages_do_not_overflow() {
        let long = format!("cuda:0,{}%;cpu,{}%", "9".repeat(400), "9".repeat(400));
        assert!(parse_allocations(&long).is_err());
        let big = format!("cuda:0,{}%;cpu,1%", "9".repeat(300));
        assert!(parse_allocations(&big).is_ok());
    }
}
