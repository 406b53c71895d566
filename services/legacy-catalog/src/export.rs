//! The bulk export (`GET /export`) in the legacy format that `services/legacy-catalog/EXPORT.md` fixes.
//!
//! `routes` turns an `Export` into a streamed response body. `Export` is an iterator of chunks of about
//! `CHUNK_BYTES`, produced only when the body is polled, so the HTTP connection's flow control is the
//! backpressure and memory stays at one chunk whatever the catalog size. Dirty rows are a pure function of
//! `(seed, i)` too: the same seed and rate always give the same bytes.
//!
//! Row order per product: its dirty non-duplicate row (if any, dated earlier), its clean row, then its
//! duplicate row (if any, same date or later). A reader that keeps "newest `UPD_DT`, later row on a tie"
//! and trims spaces therefore ends with exactly the catalog's content, whatever it does with the dirt.

use std::sync::Arc;

use bytes::Bytes;

use crate::data::{mix, Catalog, Product, DEMO_COUNT};

/// Roughly how many bytes one chunk holds (a product row is about 60 bytes).
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The column line, second line of every export.
pub const COLUMNS: &str = "ITEM_NO|UPC_EAN|ITEM_DESC|BRAND_NM|DEPT_CD|RETAIL_PRC|UPD_DT";

const SALT_DIRT: u64 = 101;
const SALT_DIRT_KIND: u64 = 102;

/// The kinds of dirty row. Each dirty row is an extra row beside the product's clean row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dirt {
    /// `UPC_EAN` with spaces before, after or around it.
    StraySpaces,
    /// `UPC_EAN` with a wrong check digit.
    WrongCheckDigit,
    /// `UPC_EAN` empty.
    EmptyCode,
    /// `ITEM_DESC` empty.
    EmptyDesc,
    /// `ITEM_DESC` and `BRAND_NM` with surrounding spaces.
    PaddedText,
    /// `RETAIL_PRC` is `N/A`.
    PriceNa,
    /// The clean row again, byte for byte.
    DuplicateSame,
    /// The clean row again with a later `UPD_DT`.
    DuplicateNewer,
}

impl Dirt {
    pub const ALL: [Dirt; 8] = [
        Dirt::StraySpaces,
        Dirt::WrongCheckDigit,
        Dirt::EmptyCode,
        Dirt::EmptyDesc,
        Dirt::PaddedText,
        Dirt::PriceNa,
        Dirt::DuplicateSame,
        Dirt::DuplicateNewer,
    ];

    /// Duplicates follow the clean row; the other kinds precede it with an older date.
    pub fn is_duplicate(self) -> bool {
        matches!(self, Dirt::DuplicateSame | Dirt::DuplicateNewer)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExportError {
    #[error("the dirty rate must be a number from 0 to 1, not {0}")]
    DirtyRate(f64),
}

/// The share of products that get one extra dirty row, as a threshold on 53 bits of a hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyRate(u64);

impl DirtyRate {
    pub fn new(rate: f64) -> Result<DirtyRate, ExportError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(ExportError::DirtyRate(rate));
        }
        Ok(DirtyRate((rate * (1u64 << 53) as f64) as u64))
    }

    /// The dirty row product `index` gets, if any. The demo products are always clean, so the docs can
    /// quote the export's first rows.
    pub fn dirt(self, catalog: &Catalog, index: u64) -> Option<Dirt> {
        if index < DEMO_COUNT || (mix(catalog.seed(), index, SALT_DIRT) >> 11) >= self.0 {
            return None;
        }
        let kind = mix(catalog.seed(), index, SALT_DIRT_KIND);
        Some(Dirt::ALL[(kind % Dirt::ALL.len() as u64) as usize])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Header,
    Rows,
    Done,
}

/// The export as a lazy sequence of chunks: the header lines, the rows, and the `#END rows=N` trailer in
/// the last chunk.
#[derive(Debug)]
pub struct Export {
    catalog: Arc<Catalog>,
    rate: DirtyRate,
    next: u64,
    rows: u64,
    stage: Stage,
}

impl Export {
    pub fn new(catalog: Arc<Catalog>, rate: DirtyRate) -> Export {
        Export { catalog, rate, next: 0, rows: 0, stage: Stage::Header }
    }

    /// Data rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn write_product(&mut self, out: &mut Vec<u8>, product: &Product) {
        let dirt = self.rate.dirt(&self.catalog, product.index);
        let variant = mix(self.catalog.seed(), product.index, SALT_DIRT_KIND) >> 8;
        if let Some(kind) = dirt.filter(|d| !d.is_duplicate()) {
            write_row(out, product, Some(kind), variant);
            self.rows += 1;
        }
        write_row(out, product, None, variant);
        self.rows += 1;
        if let Some(kind) = dirt.filter(|d| d.is_duplicate()) {
            write_row(out, product, Some(kind), variant);
            self.rows += 1;
        }
    }
}

impl Iterator for Export {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let mut out = Vec::with_capacity(CHUNK_BYTES + 512);
        match self.stage {
            Stage::Done => return None,
            Stage::Header => {
                out.extend_from_slice(
                    format!(
                        "#LEGACY-CATALOG-EXPORT v1 seed={} products={}\n{COLUMNS}\n",
                        self.catalog.seed(),
                        self.catalog.len()
                    )
                    .as_bytes(),
                );
                self.stage = Stage::Rows;
            }
            Stage::Rows => {}
        }
        while out.len() < CHUNK_BYTES {
            let Some(product) = self.catalog.product(self.next) else {
                out.extend_from_slice(format!("#END rows={}\n", self.rows).as_bytes());
                self.stage = Stage::Done;
                break;
            };
            self.write_product(&mut out, &product);
            self.next += 1;
        }
        Some(Bytes::from(out))
    }
}

/// One row: clean when `dirt` is `None`. `variant` is hash bits that pick the details of the dirt.
fn write_row(out: &mut Vec<u8>, p: &Product, dirt: Option<Dirt>, variant: u64) {
    push_number(out, p.item_no, 9);
    out.push(b'|');
    let digits = p.code.kind().digits();
    match dirt {
        Some(Dirt::StraySpaces) => {
            let (before, after) = [(1, 1), (1, 0), (0, 1), (2, 2)][(variant % 4) as usize];
            out.extend_from_slice(&b"  "[..before]);
            p.code.write_to(out);
            out.extend_from_slice(&b"  "[..after]);
        }
        Some(Dirt::WrongCheckDigit) => out.extend_from_slice(&p.code.with_wrong_check()[..digits]),
        Some(Dirt::EmptyCode) => {}
        _ => p.code.write_to(out),
    }
    out.push(b'|');
    match dirt {
        Some(Dirt::EmptyDesc) => {}
        Some(Dirt::PaddedText) => {
            out.extend_from_slice(b"  ");
            p.desc.write_to(out);
            out.push(b' ');
        }
        _ => p.desc.write_to(out),
    }
    out.push(b'|');
    if dirt == Some(Dirt::PaddedText) {
        out.push(b' ');
        out.extend_from_slice(p.brand.as_bytes());
        out.extend_from_slice(b"  ");
    } else {
        out.extend_from_slice(p.brand.as_bytes());
    }
    out.push(b'|');
    out.extend_from_slice(p.dept.code.as_bytes());
    out.push(b'|');
    if dirt == Some(Dirt::PriceNa) {
        out.extend_from_slice(b"N/A");
    } else {
        push_number(out, u64::from(p.price.0), 9);
    }
    out.push(b'|');
    let day = match dirt {
        None | Some(Dirt::DuplicateSame) => p.updated,
        Some(Dirt::DuplicateNewer) => p.updated.plus(1 + (variant >> 8) as u32 % 60),
        // A stale record: older than the clean row, so it never wins over it.
        Some(_) => p.updated.minus(1 + (variant >> 8) as u32 % 365),
    };
    push_number(out, u64::from(day.yyyymmdd()), 8);
    out.push(b'\n');
}

/// `value` in decimal, zero-padded to at least `width` digits.
fn push_number(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while value > 0 {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    start = start.min(digits.len() - width);
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests;
