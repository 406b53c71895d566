//! GTIN parsing and normalisation: the first step for every code that enters the service, whether it comes
//! from a request path, a batch body or a legacy export row. Pure and allocation-free.
//!
//! Every accepted form (GTIN-8, -12, -13, -14, spaces and hyphens anywhere, UPC-E when asked for) is reduced to
//! the GS1 canonical 14-digit form and held as a `u64`, so that `123456789012`, `0123456789012` and
//! `00123456789012` are one key in the snapshot. Codes that are well formed but are not trade items
//! (restricted-circulation numbers, coupons, refund receipts) are rejected with their own error kind, because
//! the caller sent a real barcode that this service must not treat as a product.

use std::fmt;

/// The largest canonical key: fourteen nines.
pub const MAX_KEY: u64 = 99_999_999_999_999;

/// How to read the digits of a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// GTIN-8, -12, -13 or -14 by length.
    #[default]
    Auto,
    /// An 8-digit UPC-E (zero-suppressed UPC-A), expanded to its UPC-A. Only on request, because an 8-digit code
    /// can be a valid EAN-8 and a valid UPC-E at the same time and the two name different products.
    UpcE,
}

impl Format {
    /// Reads the `format` query parameter. `None` for a value this service does not know.
    pub fn from_param(value: &str) -> Option<Format> {
        match value {
            "" | "auto" | "gtin" => Some(Format::Auto),
            "upc-e" | "upce" | "UPC-E" => Some(Format::UpcE),
            _ => None,
        }
    }
}

/// Whether a rejected code was malformed (HTTP 400) or a real barcode that is not a trade item (HTTP 422).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Invalid,
    Unprocessable,
}

/// Why a code was rejected. The messages are shown to API clients as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GtinError {
    #[error("GTIN is empty")]
    Empty,
    #[error("unexpected character {ch:?} at {pos}")]
    UnexpectedCharacter { ch: char, pos: usize },
    #[error("GTIN must have 8, 12, 13 or 14 digits, got {0}")]
    Length(usize),
    #[error("UPC-E must have 8 digits, got {0}")]
    UpcELength(usize),
    #[error("UPC-E number system must be 0 or 1, got {0}")]
    UpcENumberSystem(u8),
    #[error("check digit should be {expected}, got {got}")]
    CheckDigit { expected: u8, got: u8 },
    #[error("{rule} is a restricted circulation number (company-internal or variable measure), not a trade item")]
    Restricted { rule: &'static str },
    #[error("{rule} is a coupon, not a trade item")]
    Coupon { rule: &'static str },
    #[error("{rule} is a refund receipt, not a trade item")]
    RefundReceipt { rule: &'static str },
}

impl GtinError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            GtinError::Restricted { .. } | GtinError::Coupon { .. } | GtinError::RefundReceipt { .. } => {
                ErrorKind::Unprocessable
            }
            _ => ErrorKind::Invalid,
        }
    }

    /// The machine-readable `error` field of an API answer.
    pub fn code(&self) -> &'static str {
        match self {
            GtinError::Restricted { .. } => "restricted_gtin",
            GtinError::Coupon { .. } => "coupon_gtin",
            GtinError::RefundReceipt { .. } => "refund_receipt_gtin",
            _ => "invalid_gtin",
        }
    }

    /// A finer reason, used to count rejected export rows.
    pub fn reason(&self) -> &'static str {
        match self {
            GtinError::Empty => "empty_code",
            GtinError::UnexpectedCharacter { .. } => "bad_character",
            GtinError::Length(_) | GtinError::UpcELength(_) => "bad_length",
            GtinError::UpcENumberSystem(_) => "bad_upc_e",
            GtinError::CheckDigit { .. } => "bad_check_digit",
            GtinError::Restricted { .. } => "restricted_code",
            GtinError::Coupon { .. } => "coupon_code",
            GtinError::RefundReceipt { .. } => "refund_receipt_code",
        }
    }
}

/// A validated trade-item GTIN in GS1 canonical form (14 digits, zero padded), held as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gtin(u64);

impl Gtin {
    /// Parses any GTIN form (8, 12, 13 or 14 digits).
    pub fn parse(input: &str) -> Result<Gtin, GtinError> {
        Gtin::parse_with(input, Format::Auto)
    }

    pub fn parse_with(input: &str, format: Format) -> Result<Gtin, GtinError> {
        // Fourteen digits is the longest valid form; more are only counted, for the error message.
        let mut digits = [0u8; 14];
        let mut count = 0usize;
        for (pos, ch) in input.chars().enumerate() {
            match ch {
                '0'..='9' => {
                    if count < digits.len() {
                        digits[count] = ch as u8 - b'0';
                    }
                    count += 1;
                }
                ' ' | '-' => {}
                _ => return Err(GtinError::UnexpectedCharacter { ch, pos }),
            }
        }
        if count == 0 {
            return Err(GtinError::Empty);
        }
        let upc_a;
        let code: &[u8] = match format {
            Format::Auto => {
                if !matches!(count, 8 | 12 | 13 | 14) {
                    return Err(GtinError::Length(count));
                }
                &digits[..count]
            }
            Format::UpcE => {
                if count != 8 {
                    return Err(GtinError::UpcELength(count));
                }
                upc_a = expand_upc_e(&digits[..8])?;
                &upc_a
            }
        };
        let (body, check) = code.split_at(code.len() - 1);
        let expected = check_digit(body);
        if expected != check[0] {
            return Err(GtinError::CheckDigit { expected, got: check[0] });
        }
        let key = code.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d));
        let gtin = Gtin(key);
        classify(&gtin.digits())?;
        Ok(gtin)
    }

    /// A key read back from a snapshot. `None` when it cannot be a 14-digit code.
    pub fn from_key(key: u64) -> Option<Gtin> {
        (key <= MAX_KEY).then_some(Gtin(key))
    }

    pub fn key(self) -> u64 {
        self.0
    }

    /// The 14 digits as values 0..=9, most significant first.
    pub fn digits(self) -> [u8; 14] {
        let mut out = [0u8; 14];
        let mut rest = self.0;
        for slot in out.iter_mut().rev() {
            *slot = (rest % 10) as u8;
            rest /= 10;
        }
        out
    }

    /// The canonical 14-digit text, without allocating.
    pub fn canonical(self) -> Canonical {
        let mut text = self.digits();
        for d in text.iter_mut() {
            *d += b'0';
        }
        Canonical(text)
    }
}

impl fmt::Display for Gtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.canonical().as_str())
    }
}

/// The 14 ASCII digits of a [`Gtin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canonical([u8; 14]);

impl Canonical {
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever written into the array.
        std::str::from_utf8(&self.0).expect("canonical GTIN text is ASCII digits")
    }

    /// The shortest of the 12-, 13- and 14-digit forms that keeps every digit: what the legacy catalog calls
    /// `upc` (a UPC-A when the code starts with `00`, an EAN-13 when it starts with one `0`).
    pub fn short_form(&self) -> &str {
        let s = self.as_str();
        s.strip_prefix("00").or_else(|| s.strip_prefix('0')).unwrap_or(s)
    }
}

/// The GS1 mod-10 check digit of `body` (every digit but the check digit): weights 3 and 1 alternate from the
/// rightmost digit, which has weight 3.
pub fn check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body.iter().rev().enumerate().map(|(i, &d)| u32::from(d) * if i % 2 == 0 { 3 } else { 1 }).sum();
    ((10 - sum % 10) % 10) as u8
}

/// Expands an 8-digit UPC-E (number system, six digits, check digit) to the 12 digits of its UPC-A.
fn expand_upc_e(e: &[u8]) -> Result<[u8; 12], GtinError> {
    let (system, d, check) = (e[0], &e[1..7], e[7]);
    if system > 1 {
        return Err(GtinError::UpcENumberSystem(system));
    }
    // The last of the six digits says where the suppressed zeros of the UPC-A were.
    let middle: [u8; 10] = match d[5] {
        0..=2 => [d[0], d[1], d[5], 0, 0, 0, 0, d[2], d[3], d[4]],
        3 => [d[0], d[1], d[2], 0, 0, 0, 0, 0, d[3], d[4]],
        4 => [d[0], d[1], d[2], d[3], 0, 0, 0, 0, 0, d[4]],
        _ => [d[0], d[1], d[2], d[3], d[4], 0, 0, 0, 0, d[5]],
    };
    let mut out = [0u8; 12];
    out[0] = system;
    out[1..11].copy_from_slice(&middle);
    out[11] = check;
    Ok(out)
}

/// Rejects codes from the GS1 ranges that are not trade items. The rules are read on the 13 digits after the
/// indicator digit, which is where GTIN-8 (five leading zeros), GTIN-12 (one leading zero) and GTIN-13 prefixes
/// sit; a GTIN-14 is classified by the item it packages.
fn classify(d: &[u8; 14]) -> Result<(), GtinError> {
    let body = &d[1..];
    if body[..5] == [0; 5] {
        // GS1 keeps the GTIN-13 range 00000xxxxxxxx free so that it only ever holds GTIN-8s.
        return match body[5] {
            0 | 2 => Err(GtinError::Restricted { rule: "GTIN-8 prefix 0 or 2 (RCN-8)" }),
            _ => Ok(()),
        };
    }
    if body[0] == 0 {
        return match body[1] {
            2 => Err(GtinError::Restricted { rule: "GTIN-12 prefix 2 (RCN-12)" }),
            4 => Err(GtinError::Restricted { rule: "GTIN-12 prefix 4 (RCN-12)" }),
            5 => Err(GtinError::Coupon { rule: "GTIN-12 prefix 5" }),
            _ => Ok(()),
        };
    }
    match u16::from(body[0]) * 100 + u16::from(body[1]) * 10 + u16::from(body[2]) {
        200..=299 => Err(GtinError::Restricted { rule: "GTIN-13 prefix 200-299 (RCN-13)" }),
        980 => Err(GtinError::RefundReceipt { rule: "GTIN-13 prefix 980" }),
        981..=984 => Err(GtinError::Coupon { rule: "GTIN-13 prefix 981-984" }),
        990..=999 => Err(GtinError::Coupon { rule: "GTIN-13 prefix 99" }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(s: &str) -> u64 {
        Gtin::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).key()
    }

    #[test]
    fn real_world_codes_are_valid() {
        assert_eq!(key("73513537"), 73_513_537);
        assert_eq!(key("036000291452"), 36_000_291_452);
        assert_eq!(key("7501031311309"), 7_501_031_311_309);
        assert_eq!(key("98412345678908"), 98_412_345_678_908);
        assert_eq!(key("9780471117094"), 9_780_471_117_094);
    }

    /// Check digits published by others, the oracle for `check_digit`: the fixtures below that are built with
    /// `check_digit` itself (`with_check`, `code_of`, the synthetic catalogue) would agree with a wrong one.
    const PUBLISHED: &[(&str, &str)] = &[
        ("6291041500213", "GS1 General Specifications, check digit calculation example (GTIN-13)"),
        ("376104250021234569", "GS1 General Specifications, SSCC example (18 digits, same mod-10 rule)"),
        ("614141000036", "GS1 US, example GTIN-12 of company prefix 0614141"),
        ("4006381333931", "EAN-13 example printed in most references on the symbology"),
        ("96385074", "EAN-8 example printed in most references on the symbology"),
        ("9780306406157", "ISBN-13 example printed in most references on ISBN"),
    ];

    #[test]
    fn check_digits_match_published_gs1_examples() {
        for (code, source) in PUBLISHED {
            let digits: Vec<u8> = code.bytes().map(|b| b - b'0').collect();
            let (body, check) = digits.split_at(digits.len() - 1);
            assert_eq!(check_digit(body), check[0], "{code} ({source})");
            if matches!(code.len(), 8 | 12 | 13 | 14) {
                assert!(Gtin::parse(code).is_ok(), "{code} ({source})");
                // Every other last digit is refused, naming the published one.
                for wrong in (0..10u8).filter(|&d| d != check[0]) {
                    let bad = format!("{}{wrong}", &code[..code.len() - 1]);
                    assert_eq!(
                        Gtin::parse(&bad),
                        Err(GtinError::CheckDigit { expected: check[0], got: wrong }),
                        "{bad} ({source})"
                    );
                }
            }
        }
    }

    #[test]
    fn every_length_of_one_code_is_one_key() {
        let k = key("123456789012");
        assert_eq!(key("0123456789012"), k);
        assert_eq!(key("00123456789012"), k);
        assert_eq!(key(" 0-12345-67890-12 "), k);
        assert_eq!(Gtin::parse("123456789012").unwrap().to_string(), "00123456789012");
    }

    #[test]
    fn bad_codes_name_the_problem() {
        let err = Gtin::parse("7501031311308").unwrap_err();
        assert_eq!(err, GtinError::CheckDigit { expected: 9, got: 8 });
        assert_eq!(err.to_string(), "check digit should be 9, got 8");
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert_eq!(err.code(), "invalid_gtin");

        let err = Gtin::parse("75010313113").unwrap_err();
        assert_eq!(err.to_string(), "GTIN must have 8, 12, 13 or 14 digits, got 11");

        let err = Gtin::parse("750103AAAA309").unwrap_err();
        assert_eq!(err.to_string(), "unexpected character 'A' at 6");

        assert_eq!(Gtin::parse("").unwrap_err(), GtinError::Empty);
        assert_eq!(Gtin::parse(" - ").unwrap_err(), GtinError::Empty);
        assert_eq!(Gtin::parse("123456789012345").unwrap_err(), GtinError::Length(15));
        assert_eq!(Gtin::parse("12345é").unwrap_err(), GtinError::UnexpectedCharacter { ch: 'é', pos: 5 });
    }

    #[test]
    fn check_digit_message_uses_the_brief_example() {
        let err = Gtin::parse("036000291458").unwrap_err();
        assert_eq!(err.to_string(), "check digit should be 2, got 8");
    }

    #[test]
    fn restricted_circulation_codes_are_unprocessable() {
        for code in [
            "212345678900", // GTIN-12 prefix 2: variable measure
            "412345678907", // GTIN-12 prefix 4: company internal
            "2001234567893",
            "2991234567891",
            "02012345", // GTIN-8 prefix 0 or 2
            "20123450",
        ] {
            let code = with_check(code);
            let err = Gtin::parse(&code).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unprocessable, "{code}");
            assert_eq!(err.code(), "restricted_gtin", "{code}");
        }
        // A GTIN-14 is classified by the item it packages.
        let err = Gtin::parse(&with_check("12001234567890")).unwrap_err();
        assert_eq!(err.code(), "restricted_gtin");
    }

    #[test]
    fn coupons_and_refund_receipts_are_unprocessable() {
        for code in ["512345678900", "9812345678901", "9841234567890", "9912345678901", "9991234567890"] {
            let code = with_check(code);
            let err = Gtin::parse(&code).unwrap_err();
            assert_eq!(err.code(), "coupon_gtin", "{code}");
            assert_eq!(err.kind(), ErrorKind::Unprocessable);
        }
        let err = Gtin::parse(&with_check("9801234567890")).unwrap_err();
        assert_eq!(err.code(), "refund_receipt_gtin");
        assert_eq!(err.to_string(), "GTIN-13 prefix 980 is a refund receipt, not a trade item");
        // Neighbours of the special ranges are ordinary products.
        for code in ["1991234567890", "3001234567890", "9791234567890", "9851234567890", "612345678900"] {
            let code = with_check(code);
            assert!(Gtin::parse(&code).is_ok(), "{code}");
        }
    }

    /// Replaces the last digit of `code` with the right check digit.
    fn with_check(code: &str) -> String {
        let digits: Vec<u8> = code.bytes().map(|b| b - b'0').collect();
        let body = &digits[..digits.len() - 1];
        format!("{}{}", &code[..code.len() - 1], check_digit(body))
    }

    #[test]
    fn upc_e_expands_only_when_asked() {
        // 0425261 + check 4 is the textbook UPC-E for UPC-A 042100005264.
        let e = Gtin::parse_with("04252614", Format::UpcE).unwrap();
        assert_eq!(e.key(), key("042100005264"));
        // The same eight digits read as an EAN-8 have another check digit.
        assert!(matches!(Gtin::parse("04252614"), Err(GtinError::CheckDigit { .. })));
        // Each zero-suppression rule: last digit 0-2, 3, 4, 5-9.
        let cases = [
            ("0123450", "01200000345"),
            ("0123453", "01230000045"),
            ("0123454", "01234000005"),
            ("0123457", "01234500007"),
        ];
        for (e7, a11) in cases {
            let upca = with_check(&format!("{a11}0"));
            let upce = format!("{e7}{}", &upca[11..]);
            assert_eq!(Gtin::parse_with(&upce, Format::UpcE).unwrap().key(), key(&upca), "{upce}");
        }
        assert_eq!(Gtin::parse_with("24252614", Format::UpcE).unwrap_err(), GtinError::UpcENumberSystem(2));
        assert_eq!(Gtin::parse_with("042100005264", Format::UpcE).unwrap_err(), GtinError::UpcELength(12));
        assert_eq!(Format::from_param("upc-e"), Some(Format::UpcE));
        assert_eq!(Format::from_param("ean-99"), None);
    }

    #[test]
    fn short_form_is_what_the_legacy_app_calls_upc() {
        assert_eq!(Gtin::parse("0123456789012").unwrap().canonical().short_form(), "123456789012");
        assert_eq!(Gtin::parse("7501031311309").unwrap().canonical().short_form(), "7501031311309");
        assert_eq!(Gtin::parse("98412345678908").unwrap().canonical().short_form(), "98412345678908");
        assert_eq!(Gtin::from_key(MAX_KEY + 1), None);
    }

    /// A valid code of `len` digits built from `seed` digits.
    fn code_of(len: usize, seed: &[u8]) -> String {
        let body: Vec<u8> = seed.iter().take(len - 1).copied().collect();
        let mut s: String = body.iter().map(|d| char::from(b'0' + d)).collect();
        s.push(char::from(b'0' + check_digit(&body)));
        s
    }

    fn sprinkle(code: &str, seps: &[(usize, bool)]) -> String {
        let mut out: Vec<char> = code.chars().collect();
        for &(at, hyphen) in seps {
            let at = at % (out.len() + 1);
            out.insert(at, if hyphen { '-' } else { ' ' });
        }
        out.into_iter().collect()
    }

    proptest! {
        #[test]
        fn every_form_of_a_code_is_one_key(
            len in prop::sample::select(vec![8usize, 12, 13, 14]),
            seed in prop::collection::vec(0u8..10, 13),
            seps in prop::collection::vec((0usize..20, any::<bool>()), 0..4),
        ) {
            let code = code_of(len, &seed);
            let canonical = format!("{code:0>14}");
            let expected = Gtin::parse(&canonical);
            for width in [8usize, 12, 13, 14] {
                // Only the widths reachable by adding or removing leading zeros are forms of this code.
                if width < len && !code[..len - width].bytes().all(|b| b == b'0') {
                    continue;
                }
                let form = if width >= len { format!("{code:0>width$}") } else { code[len - width..].to_string() };
                let got = Gtin::parse(&sprinkle(&form, &seps));
                prop_assert_eq!(&got, &expected, "form {}", form);
            }
            if let Ok(g) = expected {
                prop_assert_eq!(g.to_string(), canonical);
                prop_assert_eq!(Gtin::parse(g.canonical().short_form()), Ok(g));
            }
        }

        #[test]
        fn parser_never_panics(input in ".{0,40}", upc_e in any::<bool>()) {
            let format = if upc_e { Format::UpcE } else { Format::Auto };
            let _ = Gtin::parse_with(&input, format);
        }

        #[test]
        fn parser_never_panics_on_digit_soup(input in "[0-9 \\-]{0,30}") {
            if let Ok(g) = Gtin::parse(&input) {
                prop_assert!(g.key() <= MAX_KEY);
            }
            let _ = Gtin::parse_with(&input, Format::UpcE);
        }
    }
}
