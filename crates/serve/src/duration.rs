//! Go's duration grammar (`time.ParseDuration`): `"300ms"`, `"1.5h"`, `"2h45m"`, `"1us"`. Vulcand stores every
//! timeout this way, and all three binaries read their own durations (command line, TOML) with the same rules,
//! so one value means the same thing everywhere. Decoded when config is read; nothing downstream sees text.
//!
//! Two deliberate differences from Go: negative durations are refused (no timeout, drain or interval can be
//! negative), and there is no `d` unit, as in Go (`gtin-service` used to accept `7d`; write `168h`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// A duration written the way Go's `time.ParseDuration` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad duration `{input}`: {why}")]
pub struct DurationError {
    pub input: String,
    pub why: &'static str,
}

/// The largest duration Go can hold: `i64::MAX` nanoseconds (about 292 years).
const MAX_NANOS: u64 = i64::MAX as u64;

/// Parses `"300ms"`, `"1.5h"`, `"2h45m"`, `"0"`, following Go's algorithm step by step (including how it
/// rounds a long fraction), so a value Vulcand accepts means the same duration here.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError { input: input.to_string(), why };
    let mut s = input;
    if let Some(rest) = s.strip_prefix('-') {
        // Go reads `-0` as zero; anything else negative is refused.
        if rest != "0" {
            return Err(err("negative"));
        }
        s = rest;
    }
    s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        // The integer part: digits before any `.`.
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut v: u64 = 0;
        for b in s[..int_len].bytes() {
            v = v.checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0'))).ok_or_else(|| err("too large"))?;
            if v > MAX_NANOS {
                return Err(err("too large"));
            }
        }
        s = &s[int_len..];
        // The fraction: Go keeps digits while they fit and ignores the rest.
        let (mut f, mut scale, mut frac_len) = (0u64, 1f64, 0usize);
        let had_dot = s.starts_with('.');
        if had_dot {
            s = &s[1..];
            let mut overflowed = false;
            frac_len = s.bytes().take_while(u8::is_ascii_digit).count();
            for b in s[..frac_len].bytes() {
                if overflowed {
                    continue;
                }
                if f > MAX_NANOS / 10 {
                    overflowed = true;
                    continue;
                }
                let next = f * 10 + u64::from(b - b'0');
                if next > MAX_NANOS {
                    overflowed = true;
                    continue;
                }
                f = next;
                scale *= 10.0;
            }
            s = &s[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(err("expected a number, then a unit: 300ms, 1.5h, 2h45m"));
        }
        let unit_len = s.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(s.len());
        let unit: u64 = match &s[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err(err("missing unit (ns, us, ms, s, m, h)")),
            "d" => return Err(err("no `d` unit (as in Go): write hours, 168h for a week")),
            _ => return Err(err("unknown unit (ns, us, ms, s, m, h)")),
        };
        s = &s[unit_len..];
        if v > MAX_NANOS / unit {
            return Err(err("too large"));
        }
        v *= unit;
        if f > 0 {
            // Go computes the fraction's share in floating point; doing the same keeps results identical.
            v = v.checked_add((f as f64 * (unit as f64 / scale)) as u64).ok_or_else(|| err("too large"))?;
            if v > MAX_NANOS {
                return Err(err("too large"));
            }
        }
        total = total.checked_add(v).filter(|t| *t <= MAX_NANOS).ok_or_else(|| err("too large"))?;
    }
    Ok(Duration::from_nanos(total))
}

/// Formats a duration the way it would be written back (`"1.5s"` as `"1500ms"`, `"250ms"`, `"0s"`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        "0s".to_string()
    } else if nanos % 1_000_000_000 == 0 {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos % 1_000_000 == 0 {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// For `#[serde(deserialize_with = "serve::duration::de_duration")]` on a `std::time::Duration` field.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// For a command-line argument: `#[arg(value_parser = serve::duration::arg)]`.
pub fn arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_duration(d).map(GoDuration)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: u64 = 1;
    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;

    /// Go's own table (src/time/time_test.go, parseDurationTests), the non-negative rows.
    #[test]
    fn reads_what_go_reads_as_go_reads_it() {
        let facts: &[(&str, u64)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12µs", 12 * US),
            ("12μs", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("16h", 16 * H),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52763797000 * NS),
            ("0.3333333333333333333h", 20 * M),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX as u64),
            ("9223372036854775.807us", i64::MAX as u64),
            ("9223372036854ms775us807ns", i64::MAX as u64),
            ("0.100000000000000000000h", 6 * M),
            ("0.830103483285477580700h", 49 * M + 48 * S + 372539827 * NS),
            // Vulcand's own values.
            ("300ms", 300 * MS),
            ("1.5h", 90 * M),
            ("2h45m", 2 * H + 45 * M),
            ("1us", US),
        ];
        for &(input, nanos) in facts {
            assert_eq!(parse_duration(input), Ok(Duration::from_nanos(nanos)), "{input}");
        }
    }

    /// Go's failure rows, plus the negatives and the `d` Go has never had.
    #[test]
    fn refuses_what_go_refuses_and_negatives() {
        for bad in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "7d",
            "\u{85}\u{85}",
            "\u{ff}ff",
            "hello \u{ff}ff world",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "-5s",
            "-2m3.4s",
            "5 s",
            "1..2s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_error_names_the_value_and_the_reason() {
        let e = parse_duration("7d").unwrap_err();
        assert_eq!(e.input, "7d");
        assert!(e.to_string().contains("168h"), "{e}");
    }

    #[test]
    fn formats_back() {
        for s in ["5s", "250ms", "10us", "7ns", "0s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
