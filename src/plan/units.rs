//! Byte sizes: strict parsing with binary units, and human formatting.

use crate::{Error, Result};

const UNIT_FORMS: &str = "write a number with a binary unit: b, k/kb/kib, m/mb/mib, g/gb/gib or t/tb/tib (e.g. \"512mb\", \"1.5g\", \"12GiB\", \"100b\")";

/// A plain decimal number as written: digits before and after an optional point.
/// No sign, no exponent, no `inf`/`nan`.
pub(crate) struct Decimal<'a> {
    pub int: &'a str,
    pub frac: &'a str,
}

impl Decimal<'_> {
    pub fn parse(s: &str) -> Option<Decimal<'_>> {
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
            return None;
        }
        Some(Decimal { int, frac })
    }

    /// The value as f64 (may be infinite for absurdly long inputs; callers check).
    pub fn to_f64(&self) -> f64 {
        let text = format!(
            "{}.{}",
            if self.int.is_empty() { "0" } else { self.int },
            if self.frac.is_empty() { "0" } else { self.frac }
        );
        text.parse::<f64>().unwrap_or(f64::INFINITY)
    }

    pub fn is_zero(&self) -> bool {
        self.int.bytes().chain(self.frac.bytes()).all(|b| b == b'0')
    }

    /// `value * mult`, rounded down, exactly; `None` when it exceeds `u64::MAX`.
    fn times(&self, mult: u64) -> Option<u64> {
        let int = self.int.trim_start_matches('0');
        if int.len() > 20 {
            return None;
        }
        let mut whole: u128 = 0;
        for b in int.bytes() {
            whole = whole * 10 + u128::from(b - b'0');
        }
        let mut total = whole.checked_mul(u128::from(mult))?;
        // Up to 20 fractional digits are exact enough: 10^20 * 2^40 fits in u128.
        let frac = &self.frac[..self.frac.len().min(20)];
        if !frac.is_empty() {
            let mut num: u128 = 0;
            let mut den: u128 = 1;
            for b in frac.bytes() {
                num = num * 10 + u128::from(b - b'0');
                den *= 10;
            }
            total = total.checked_add(num * u128::from(mult) / den)?;
        }
        u64::try_from(total).ok()
    }
}

/// The multiplier of a unit (lower case, whitespace removed), binary as contract §5.1 says.
fn unit_multiplier(unit: &str) -> Option<u64> {
    Some(match unit {
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    })
}

/// Parses a byte size such as `4gb`, `512MiB`, `1.5g`, `100b` (binary units, case-insensitive,
/// whitespace ignored). A number without a unit is an error.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if t.is_empty() {
        return Err(Error::invalid(format!("size {s:?} is empty; {UNIT_FORMS}")));
    }
    if t.starts_with('-') {
        return Err(Error::invalid(format!(
            "size {s:?} is negative; sizes must be >= 0; {UNIT_FORMS}"
        )));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let Some(dec) = Decimal::parse(num) else {
        return Err(Error::invalid(format!(
            "size {s:?} does not start with a plain number; {UNIT_FORMS}"
        )));
    };
    if unit.is_empty() {
        return Err(Error::invalid(format!(
            "size {s:?} has no unit; {UNIT_FORMS}"
        )));
    }
    let Some(mult) = unit_multiplier(unit) else {
        return Err(Error::invalid(format!(
            "size {s:?} has an unknown unit {unit:?}; {UNIT_FORMS}"
        )));
    };
    if mult == 1 && dec.frac.bytes().any(|b| b != b'0') {
        return Err(Error::invalid(format!(
            "size {s:?} is a fraction of a byte; bytes must be whole, or use a larger unit; {UNIT_FORMS}"
        )));
    }
    dec.times(mult).ok_or_else(|| {
        Error::invalid(format!(
            "size {s:?} is too large; the largest size is {} bytes (16 EiB)",
            u64::MAX
        ))
    })
}

/// Formats bytes for people: `100 B`, `1.50 KiB`, `5.20 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const G: u64 = 1 << 30;

    #[test]
    fn all_unit_spellings() {
        for s in ["4gb", "4g", "4gib", "4GiB", "4 GB", " 4G "] {
            assert_eq!(parse_bytes(s).unwrap(), 4 * G, "{s}");
        }
        assert_eq!(parse_bytes("512mb").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5g").unwrap(), 3 * G / 2);
        assert_eq!(parse_bytes("100b").unwrap(), 100);
        assert_eq!(parse_bytes("12GiB").unwrap(), 12 * G);
        assert_eq!(parse_bytes("2t").unwrap(), 2 << 40);
        assert_eq!(parse_bytes("2tb").unwrap(), 2 << 40);
        assert_eq!(parse_bytes("2TiB").unwrap(), 2 << 40);
        assert_eq!(parse_bytes("3k").unwrap(), 3 << 10);
        assert_eq!(parse_bytes("3kb").unwrap(), 3 << 10);
        assert_eq!(parse_bytes("3kib").unwrap(), 3 << 10);
        assert_eq!(parse_bytes(".5k").unwrap(), 512);
        assert_eq!(parse_bytes("1.k").unwrap(), 1024);
        assert_eq!(parse_bytes("0b").unwrap(), 0);
        assert_eq!(parse_bytes("1.0b").unwrap(), 1);
        assert_eq!(parse_bytes("0.1k").unwrap(), 102);
        assert_eq!(parse_bytes("18446744073709551615b").unwrap(), u64::MAX);
        assert_eq!(
            parse_bytes("15.9999t").unwrap(),
            (15.9999f64 * (1u64 << 40) as f64) as u64
        );
    }

    #[test]
    fn bad_sizes_quote_input_and_forms() {
        for bad in [
            "",
            "4",
            "gb",
            "-4gb",
            "4xb",
            "4 g b x",
            "1e3g",
            "nan",
            "infg",
            "1.2.3g",
            "0.5b",
            "18446744073709551616b",
            "99999999999t",
            "4g4",
            ".g",
        ] {
            let e = parse_bytes(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.message().contains(&format!("{bad:?}")), "{}", e.message());
        }
        assert!(parse_bytes("4").unwrap_err().message().contains("no unit"));
        assert!(parse_bytes("-1g")
            .unwrap_err()
            .message()
            .contains("negative"));
    }

    #[test]
    fn formats() {
        assert_eq!(format_bytes(100), "100 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(5 * G + G / 5 + 1), "5.20 GiB");
        assert_eq!(format_bytes(u64::MAX), "16.00 EiB");
    }
}
