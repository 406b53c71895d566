//! Synthetic products and legacy export text, for benchmarks (`bench-build`, `gen-export`, criterion) and tests.
//! Not used on the serving path. Deterministic: product `i` of a seed is always the same, and every product
//! of one catalogue has a distinct GTIN, so tests can predict exactly what a lookup returns.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::clock::Date;
use crate::gtin::{check_digit, Gtin};
use crate::record::Product;

const BRANDS: [&str; 8] = ["ACME", "GLOBEX", "INITECH", "UMBRELLA", "HOOLI", "STARK", "WAYNE", "TYRELL"];
const DEPTS: [&str; 6] = ["GROC", "DARY", "PROD", "BAKE", "HOME", "HLTH"];
const WORDS: [&str; 10] =
    ["Oat Milk", "Rye Bread", "Dish Soap", "Green Tea", "Olive Oil", "Apples", "Soup", "Rice", "Coffee", "Pasta"];
/// First digits of 12-digit codes that are ordinary products (2, 4 and 5 are restricted or coupons; 0 is left
/// out so no code falls in the zero-padded GTIN-8 range).
const UPC_LEADS: [u8; 6] = [1, 3, 6, 7, 8, 9];
/// Three-digit prefixes of 13-digit codes that are ordinary products.
const EAN_PREFIXES: [u16; 10] = [300, 400, 500, 690, 750, 760, 800, 840, 870, 978];

/// splitmix64: small, fast, good enough to spread synthetic data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The GTIN of product `i` in catalogue `seed`: even `i` are UPC-A, odd are EAN-13, all distinct.
pub fn gtin_of(seed: u64, i: u64) -> Gtin {
    let half = u128::from(i / 2);
    // Multiplying by a number coprime to 10 is a bijection modulo a power of ten, so codes never collide.
    let body: Vec<u8> = if i % 2 == 0 {
        let p = (half * 7_919_000_003 + u128::from(seed) * 1_000_003) % 10_000_000_000;
        let lead = UPC_LEADS[(half % UPC_LEADS.len() as u128) as usize];
        std::iter::once(lead).chain(digits_of(p as u64, 10)).collect()
    } else {
        let p = (half * 104_729_003 + u128::from(seed) * 7_001) % 1_000_000_000;
        let prefix = EAN_PREFIXES[(half % EAN_PREFIXES.len() as u128) as usize];
        digits_of(u64::from(prefix), 3).chain(digits_of(p as u64, 9)).collect()
    };
    let key = body.iter().chain(std::iter::once(&check_digit(&body))).fold(0u64, |k, &d| k * 10 + u64::from(d));
    // Every body above avoids the restricted, coupon and GTIN-8 ranges and carries its own check digit.
    Gtin::from_key(key).expect("synthetic keys have at most 13 digits")
}

fn digits_of(mut v: u64, width: usize) -> impl Iterator<Item = u8> {
    let mut out = vec![0u8; width];
    for slot in out.iter_mut().rev() {
        *slot = (v % 10) as u8;
        v /= 10;
    }
    out.into_iter()
}

/// Owned text of one synthetic product; reused between products so that generating millions does not allocate.
#[derive(Debug, Clone, Default)]
pub struct SynthProduct {
    pub gtin_key: u64,
    pub sku: String,
    pub description: String,
    pub brand: &'static str,
    pub department: &'static str,
    pub price_cents: u64,
    pub updated: u32,
}

impl SynthProduct {
    /// Fills `self` with product `i` of catalogue `seed`.
    pub fn fill(&mut self, seed: u64, i: u64) {
        let gtin = gtin_of(seed, i);
        let mut rng = Rng::new(seed ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d));
        self.gtin_key = gtin.key();
        self.sku.clear();
        let _ = write!(self.sku, "{}", 100_000_001 + i);
        self.description.clear();
        let _ = write!(self.description, "{} {}", WORDS[rng.below(10) as usize], gtin.canonical().short_form());
        self.brand = BRANDS[rng.below(8) as usize];
        self.department = DEPTS[rng.below(6) as usize];
        self.price_cents = 49 + rng.below(20_000);
        self.updated =
            20_200_101 + (rng.below(5) as u32) * 10_000 + (rng.below(12) as u32) * 100 + rng.below(28) as u32;
    }

    pub fn product(&self) -> Product<'_> {
        Product {
            // Both values were produced by `fill` from valid parts.
            gtin: Gtin::from_key(self.gtin_key).expect("filled from a valid GTIN"),
            sku: &self.sku,
            description: &self.description,
            brand: self.brand,
            department: self.department,
            price_cents: self.price_cents,
            updated: Date::from_u32(self.updated).expect("generated dates are real days"),
        }
    }

    /// The product as a clean legacy export row.
    pub fn legacy_row(&self, out: &mut String) {
        let p = self.product();
        let _ = write!(
            out,
            "{}|{}|{}|{}|{}|{:09}|{}",
            p.sku,
            p.gtin.canonical().short_form(),
            p.description,
            p.brand,
            p.department,
            p.price_cents,
            p.updated.as_u32()
        );
    }
}

/// Counts of what [`write_export`] wrote, so tests know what a reader must find.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportCounts {
    pub products: u64,
    pub rows: u64,
    pub bad_check_digit: u64,
    pub bad_length: u64,
    pub empty_code: u64,
    pub bad_price: u64,
    pub empty_description: u64,
    /// Extra rows for a product already written: a repeat, a padded copy, or an older version.
    pub duplicates: u64,
}

pub const EXPORT_COLUMNS: &str = "ITEM_NO|UPC_EAN|ITEM_DESC|BRAND_NM|DEPT_CD|RETAIL_PRC|UPD_DT";

/// Writes a legacy export of `products` products. With `dirty_every > 0`, every `dirty_every`th product also
/// gets one dirty or duplicate row of the kinds the legacy catalog emits (see EXPORT.md).
pub fn write_export(out: &mut impl Write, seed: u64, products: u64, dirty_every: u64) -> io::Result<ExportCounts> {
    let mut counts = ExportCounts { products, ..ExportCounts::default() };
    writeln!(out, "#LEGACY-CATALOG-EXPORT v1 seed={seed} products={products}")?;
    writeln!(out, "{EXPORT_COLUMNS}")?;
    let mut p = SynthProduct::default();
    let mut line = String::with_capacity(128);
    for i in 0..products {
        p.fill(seed, i);
        let dirty = dirty_every > 0 && i % dirty_every == 0;
        let kind = (i / dirty_every.max(1)) % 7;
        if dirty && kind == 6 {
            // An older version first: the clean row after it is newer and wins.
            let mut older = p.clone();
            older.updated = 20_190_101;
            older.price_cents += 1;
            line.clear();
            older.legacy_row(&mut line);
            writeln!(out, "{line}")?;
            counts.rows += 1;
            counts.duplicates += 1;
        }
        line.clear();
        p.legacy_row(&mut line);
        writeln!(out, "{line}")?;
        counts.rows += 1;
        if !dirty || kind == 6 {
            continue;
        }
        let code = p.product().gtin.canonical().short_form().to_string();
        let fields: Vec<&str> = line.split('|').collect();
        let (sku, desc, brand, dept, price, date) = (fields[0], fields[2], fields[3], fields[4], fields[5], fields[6]);
        let dirty_row = match kind {
            0 => {
                counts.bad_check_digit += 1;
                let last = code.as_bytes()[code.len() - 1] - b'0';
                format!("{sku}|{}{}|{desc}|{brand}|{dept}|{price}|{date}", &code[..code.len() - 1], (last + 1) % 10)
            }
            1 => {
                counts.bad_length += 1;
                format!("{sku}|{}|{desc}|{brand}|{dept}|{price}|{date}", &code[1..code.len() - 1])
            }
            2 => {
                counts.empty_code += 1;
                format!("{sku}||{desc}|{brand}|{dept}|{price}|{date}")
            }
            3 => {
                counts.bad_price += 1;
                format!("{sku}|{code}|{desc}|{brand}|{dept}|N/A|{date}")
            }
            4 => {
                counts.empty_description += 1;
                format!("{sku}|{code}||{brand}|{dept}|{price}|{date}")
            }
            _ => {
                // Stray spaces around fields, same date: the later row wins but holds the same product.
                counts.duplicates += 1;
                format!("{sku}| {code} | {desc} | {brand} |{dept}|{price}|{date}")
            }
        };
        writeln!(out, "{dirty_row}")?;
        counts.rows += 1;
    }
    writeln!(out, "#END rows={}", counts.rows)?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn synthetic_gtins_are_distinct_valid_products() {
        let mut seen = HashSet::new();
        for i in 0..20_000 {
            let g = gtin_of(7, i);
            assert_eq!(Gtin::parse(&g.to_string()), Ok(g), "product {i}");
            assert!(seen.insert(g), "duplicate at {i}");
        }
    }

    #[test]
    fn export_counts_match_the_text() {
        let mut buf = Vec::new();
        let counts = write_export(&mut buf, 1, 100, 3).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let data_rows = text.lines().filter(|l| !l.starts_with('#') && *l != EXPORT_COLUMNS).count() as u64;
        assert_eq!(data_rows, counts.rows);
        assert!(text.ends_with(&format!("#END rows={}\n", counts.rows)));
        assert_eq!(counts.rows, 100 + 34);
    }
}
