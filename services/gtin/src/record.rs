//! The GTIN service's own product model and its compact binary record, the unit stored in a snapshot's records
//! blob. The sync job produces `Product`s from legacy rows (borrowing from the line it read), the snapshot
//! builder encodes them, and a lookup decodes one straight out of the memory map without copying a byte.
//!
//! Record layout (little endian): key `u64`, updated `u32` (yyyymmdd), price in cents as a LEB128 varint, then
//! sku, description, brand and department, each a varint length followed by UTF-8 bytes.

use crate::clock::Date;
use crate::gtin::Gtin;

/// The longest text field a record may hold. Anything longer is a dirty row, not a product.
pub const MAX_FIELD_LEN: usize = 4096;

/// A product as this service models it; borrowed, so neither translation nor lookup allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product<'a> {
    pub gtin: Gtin,
    pub sku: &'a str,
    pub description: &'a str,
    pub brand: &'a str,
    pub department: &'a str,
    pub price_cents: u64,
    pub updated: Date,
}

impl Product<'_> {
    /// The price as the legacy app writes it: dollars and two decimals, `"1.99"`.
    pub fn price_decimal(&self) -> String {
        format!("{}.{:02}", self.price_cents / 100, self.price_cents % 100)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated while reading {0}")]
    Truncated(&'static str),
    #[error("field {0} is not UTF-8")]
    Utf8(&'static str),
    #[error("field {field} is {len} bytes, more than {MAX_FIELD_LEN}")]
    TooLong { field: &'static str, len: usize },
    #[error("key {0} is not a 14-digit GTIN")]
    Key(u64),
    #[error("updated date {0} is not a real day")]
    Date(u32),
    #[error("varint in {0} is too long")]
    Varint(&'static str),
}

/// Appends the record for `p` to `out`.
pub fn encode(p: &Product<'_>, out: &mut Vec<u8>) -> Result<(), RecordError> {
    out.extend_from_slice(&p.gtin.key().to_le_bytes());
    out.extend_from_slice(&p.updated.as_u32().to_le_bytes());
    put_varint(out, p.price_cents);
    for (field, text) in
        [("sku", p.sku), ("description", p.description), ("brand", p.brand), ("department", p.department)]
    {
        if text.len() > MAX_FIELD_LEN {
            return Err(RecordError::TooLong { field, len: text.len() });
        }
        put_varint(out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }
    Ok(())
}

/// Decodes the record at the start of `bytes` (which may run on past it). Never panics on corrupt input.
pub fn decode(bytes: &[u8]) -> Result<Product<'_>, RecordError> {
    let mut r = Reader { bytes, pos: 0 };
    let key = u64::from_le_bytes(r.array::<8>("key")?);
    let gtin = Gtin::from_key(key).ok_or(RecordError::Key(key))?;
    let updated = u32::from_le_bytes(r.array::<4>("updated")?);
    let updated = Date::from_u32(updated).ok_or(RecordError::Date(updated))?;
    let price_cents = r.varint("price")?;
    Ok(Product {
        gtin,
        price_cents,
        updated,
        sku: r.text("sku")?,
        description: r.text("description")?,
        brand: r.text("brand")?,
        department: r.text("department")?,
    })
}

/// Reads only the key and date of a record: what deduplication needs.
pub fn decode_key_and_date(bytes: &[u8]) -> Result<(u64, u32), RecordError> {
    let mut r = Reader { bytes, pos: 0 };
    let key = u64::from_le_bytes(r.array::<8>("key")?);
    let updated = u32::from_le_bytes(r.array::<4>("updated")?);
    Ok((key, updated))
}

/// The length of the record at the start of `bytes`, without checking its text: what copying it needs.
pub fn encoded_len(bytes: &[u8]) -> Result<usize, RecordError> {
    let mut r = Reader { bytes, pos: 0 };
    r.take(12, "key and date")?;
    r.varint("price")?;
    for field in ["sku", "description", "brand", "department"] {
        let len = r.varint(field)?;
        let len = usize::try_from(len).ok().filter(|&l| l <= MAX_FIELD_LEN);
        r.take(len.ok_or(RecordError::TooLong { field, len: usize::MAX })?, field)?;
    }
    Ok(r.pos)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], RecordError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(RecordError::Truncated(field))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, RecordError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.pos).ok_or(RecordError::Truncated(field))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordError::Varint(field))
    }

    fn text(&mut self, field: &'static str) -> Result<&'a str, RecordError> {
        let len = self.varint(field)?;
        let len = usize::try_from(len).ok().filter(|&l| l <= MAX_FIELD_LEN);
        let len = len.ok_or(RecordError::TooLong { field, len: usize::MAX })?;
        let bytes = self.take(len, field)?;
        // Nearly every catalogue field is ASCII, which a word-at-a-time scan confirms several times faster than
        // the general UTF-8 check; that check runs four times in every lookup.
        if bytes.is_ascii() {
            // SAFETY: every byte is below 0x80, and a string of ASCII bytes is valid UTF-8.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).map_err(|_| RecordError::Utf8(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Product<'static> {
        Product {
            gtin: Gtin::parse("036000291452").unwrap(),
            sku: "100000001",
            description: "Organic Oat Milk 1L – ünïcode",
            brand: "ACME",
            department: "DARY",
            price_cents: 199,
            updated: Date::from_u32(20_240_131).unwrap(),
        }
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf).unwrap();
        let big = Product { price_cents: u64::MAX, description: "", ..sample() };
        encode(&big, &mut buf).unwrap();
        let first = decode(&buf).unwrap();
        assert_eq!(first, sample());
        assert_eq!(first.price_decimal(), "1.99");
        assert_eq!(decode_key_and_date(&buf).unwrap(), (36_000_291_452, 20_240_131));
        let first_len = encoded_len(&buf).unwrap();
        assert_eq!(decode(&buf[first_len..]).unwrap(), big);
        assert_eq!(first_len + encoded_len(&buf[first_len..]).unwrap(), buf.len());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf).unwrap();
        for len in 0..buf.len() {
            assert!(decode(&buf[..len]).is_err(), "prefix of {len} bytes decoded");
            assert!(encoded_len(&buf[..len]).is_err(), "prefix of {len} bytes measured");
        }
        let mut bad = buf.clone();
        bad[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(decode(&bad), Err(RecordError::Key(u64::MAX)));
        let mut bad = buf;
        bad[8..12].copy_from_slice(&20_241_332u32.to_le_bytes());
        assert_eq!(decode(&bad), Err(RecordError::Date(20_241_332)));
        assert!(decode(&[0xff; 40]).is_err());
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_ascii_or_not() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf).unwrap();
        let at = buf.windows(5).position(|w| w == b"Oat M").unwrap();
        let mut bad = buf.clone();
        bad[at] = 0xff;
        assert_eq!(decode(&bad), Err(RecordError::Utf8("description")));
        // A lone continuation byte in an otherwise ASCII field.
        let mut bad = buf;
        bad[at + 1] = 0x80;
        assert_eq!(decode(&bad), Err(RecordError::Utf8("description")));
    }

    #[test]
    fn overlong_fields_are_refused() {
        let long = "x".repeat(MAX_FIELD_LEN + 1);
        let p = Product { description: &long, ..sample() };
        assert!(matches!(encode(&p, &mut Vec::new()), Err(RecordError::TooLong { field: "description", .. })));
        assert_eq!(Product { price_cents: 5, ..sample() }.price_decimal(), "0.05");
    }
}
