//! GS1 check digits and the two barcode forms the legacy catalog knows (UPC-A, EAN-13).
//!
//! This is the bottom of the crate: `codes` builds product barcodes from it, `data` and `export` print them,
//! `routes` uses it to read a barcode out of a request path. Codes are held as plain integers with their
//! kind, so a product costs no allocation until it is printed.

use std::fmt;

/// Which barcode symbology a code belongs to; it fixes the number of digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// UPC-A: 12 digits, the only form the legacy lookup accepts.
    Upc,
    /// EAN-13: 13 digits.
    Ean13,
}

impl Kind {
    /// The number of digits, check digit included.
    pub const fn digits(self) -> usize {
        match self {
            Kind::Upc => 12,
            Kind::Ean13 => 13,
        }
    }
}

/// A barcode with a valid check digit. `value` holds every digit, check digit last; leading zeros are
/// implied by `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Code {
    kind: Kind,
    value: u64,
}

impl Code {
    /// Appends the check digit to `body` (the digits without it). `body` must fit `kind.digits() - 1` digits.
    pub fn from_body(kind: Kind, body: u64) -> Code {
        debug_assert!(body < 10u64.pow(kind.digits() as u32 - 1));
        Code { kind, value: body * 10 + check_digit(body) }
    }

    /// Reads a code of exactly `kind.digits()` ASCII digits with a correct check digit; `None` otherwise.
    pub fn parse(kind: Kind, text: &str) -> Option<Code> {
        let bytes = text.as_bytes();
        if bytes.len() != kind.digits() || !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let value = bytes.iter().fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
        let code = Code::from_body(kind, value / 10);
        (code.value == value).then_some(code)
    }

    /// Reads either form, telling them apart by length.
    pub fn parse_any(text: &str) -> Option<Code> {
        Code::parse(Kind::Upc, text).or_else(|| Code::parse(Kind::Ean13, text))
    }

    pub fn kind(self) -> Kind {
        self.kind
    }

    /// The digits without the check digit.
    pub fn body(self) -> u64 {
        self.value / 10
    }

    pub fn check(self) -> u8 {
        (self.value % 10) as u8
    }

    /// The same digits with a check digit that is certainly wrong (used for dirty export rows).
    pub fn with_wrong_check(self) -> [u8; 13] {
        let mut digits = self.digits();
        let last = self.kind.digits() - 1;
        digits[last] = b'0' + (self.check() + 1 + (self.body() % 9) as u8) % 10;
        digits
    }

    /// The ASCII digits, left-aligned; only the first `kind().digits()` bytes are meaningful.
    pub fn digits(self) -> [u8; 13] {
        let mut out = [b'0'; 13];
        let mut v = self.value;
        for slot in out[..self.kind.digits()].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out
    }

    /// Appends the code's digits as ASCII, leading zeros included.
    pub fn write_to(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.digits()[..self.kind.digits()]);
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.digits();
        // Digits are ASCII by construction.
        let text = std::str::from_utf8(&digits[..self.kind.digits()]).map_err(|_| fmt::Error)?;
        f.write_str(text)
    }
}

/// The GS1 check digit of `body`: weights 3 and 1 alternate from the rightmost digit, which weighs 3.
pub fn check_digit(mut body: u64) -> u64 {
    let mut sum = 0;
    let mut weight = 3;
    while body > 0 {
        sum += (body % 10) * weight;
        body /= 10;
        weight = 4 - weight;
    }
    (10 - sum % 10) % 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_have_valid_check_digits() {
        for (kind, text) in [
            (Kind::Upc, "123456789012"),
            (Kind::Upc, "036000291452"),
            (Kind::Ean13, "7501031311309"),
            (Kind::Ean13, "9780471117094"),
            (Kind::Ean13, "4006381333931"),
        ] {
            let code = Code::parse(kind, text).unwrap_or_else(|| panic!("{text} should parse"));
            assert_eq!(code.to_string(), text);
            assert_eq!(code.kind(), kind);
        }
    }

    #[test]
    fn rejects_wrong_length_non_digits_and_bad_check() {
        assert_eq!(Code::parse(Kind::Upc, "0123456789012"), None);
        assert_eq!(Code::parse(Kind::Upc, "12345678901"), None);
        assert_eq!(Code::parse(Kind::Upc, "12345678901a"), None);
        assert_eq!(Code::parse(Kind::Upc, "123456789013"), None);
        assert_eq!(Code::parse(Kind::Upc, " 23456789012"), None);
        assert_eq!(Code::parse(Kind::Upc, "１23456789012"), None);
        assert_eq!(Code::parse_any("0123456789012").map(|c| c.kind()), Some(Kind::Ean13));
    }

    #[test]
    fn wrong_check_is_always_wrong_and_same_length() {
        for body in [0u64, 1, 12345678901, 3600029145, 99999999999] {
            let code = Code::from_body(Kind::Upc, body);
            let bad = code.with_wrong_check();
            let text = std::str::from_utf8(&bad[..12]).expect("ascii digits");
            assert_eq!(Code::parse(Kind::Upc, text), None, "{text}");
            assert_eq!(&bad[..11], &code.digits()[..11]);
        }
    }

    #[test]
    fn leading_zeros_are_kept() {
        let code = Code::from_body(Kind::Upc, 3600029145);
        assert_eq!(code.to_string(), "036000291452");
        let mut out = Vec::new();
        code.write_to(&mut out);
        assert_eq!(out, b"036000291452");
    }
}
