//! The catalog: product `i` computed from `(seed, i)` alone, and the lookups back from an item number or a
//! barcode to `i`.
//!
//! Nothing is stored per product, so a catalog of 18 million products is a few hundred bytes, the HTML pages
//! and the JSON lookup are O(1), and the export (`export`) simply walks `0..len`. Barcodes come from the
//! bijection in `codes`; the rest (words, price, date) from a hash of `(seed, i)`. The first `DEMO_COUNT`
//! products are fixed: the docs, the demo and the tests of other crates name them.

use std::fmt;

use crate::codes::{CodeSpace, MAX_RANK};
use crate::gs1::{Code, Kind};
use crate::words::{Dept, ADJECTIVES, BOOKS, BRANDS, DEPTS};

/// Item number of product 0; item numbers are `FIRST_ITEM_NO + i`.
pub const FIRST_ITEM_NO: u64 = 100_000_001;
/// Item numbers have 9 digits, so this is as large as a catalog gets.
pub const MAX_PRODUCTS: u64 = 999_999_999 - FIRST_ITEM_NO + 1;
/// Products `0..DEMO_COUNT` are the fixed demo products.
pub const DEMO_COUNT: u64 = 4;

// UPC-A takes 7 of every 10 generated products, so the largest rank is about 0.7 * MAX_PRODUCTS; it must
// stay under the bound that keeps `codes`' cycle walking a bijection.
const _: () = assert!(MAX_PRODUCTS / 10 * 7 + 7 < MAX_RANK);

/// Which class each of ten consecutive generated products falls in: 7 UPC-A, 3 EAN-13.
const SLOTS: [Kind; 10] = {
    use Kind::{Ean13 as E, Upc as U};
    [U, U, E, U, U, E, U, U, U, E]
};

// The hash salts, one per independent draw, so changing one field's formula moves no other field.
const SALT_UPC_SPACE: u64 = 1;
const SALT_EAN_SPACE: u64 = 2;
const SALT_WORDS: u64 = 3;
const SALT_PRICE_DATE: u64 = 4;

/// A calendar day, counted from 2009-01-01 (day 0), the year the catalog was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day(pub u32);

const EPOCH_YEAR: u32 = 2009;

impl Day {
    /// The day for a date on or after 2009-01-01; `None` for an impossible date.
    pub fn from_ymd(year: u32, month: u32, day: u32) -> Option<Day> {
        if year < EPOCH_YEAR || !(1..=12).contains(&month) || day == 0 {
            return None;
        }
        if day > month_len(year, month) {
            return None;
        }
        let years: u32 = (EPOCH_YEAR..year).map(year_len).sum();
        let months: u32 = (1..month).map(|m| month_len(year, m)).sum();
        Some(Day(years + months + day - 1))
    }

    /// `(year, month, day)`.
    pub fn ymd(self) -> (u32, u32, u32) {
        let mut rest = self.0;
        let mut year = EPOCH_YEAR;
        while rest >= year_len(year) {
            rest -= year_len(year);
            year += 1;
        }
        let mut month = 1;
        while rest >= month_len(year, month) {
            rest -= month_len(year, month);
            month += 1;
        }
        (year, month, rest + 1)
    }

    /// The export's `YYYYMMDD` form as a number.
    pub fn yyyymmdd(self) -> u32 {
        let (y, m, d) = self.ymd();
        y * 10_000 + m * 100 + d
    }

    pub fn plus(self, days: u32) -> Day {
        Day(self.0 + days)
    }

    pub fn minus(self, days: u32) -> Day {
        Day(self.0.saturating_sub(days))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

fn is_leap(year: u32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn year_len(year: u32) -> u32 {
    if is_leap(year) {
        366
    } else {
        365
    }
}

fn month_len(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A product description: fixed text for the demo products, three words for the rest, so that building a
/// product allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desc {
    Fixed(&'static str),
    Words { adjective: &'static str, noun: &'static str, size: &'static str },
}

impl Desc {
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Desc::Fixed(text) => out.extend_from_slice(text.as_bytes()),
            Desc::Words { adjective, noun, size } => {
                for (n, word) in [adjective, noun, size].into_iter().enumerate() {
                    if n > 0 {
                        out.push(b' ');
                    }
                    out.extend_from_slice(word.as_bytes());
                }
            }
        }
    }
}

impl fmt::Display for Desc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Desc::Fixed(text) => f.write_str(text),
            Desc::Words { adjective, noun, size } => write!(f, "{adjective} {noun} {size}"),
        }
    }
}

/// A price in cents; displays as `1.99`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cents(pub u32);

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// One product, as every endpoint shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Product {
    /// Position in the catalog, `0..len`.
    pub index: u64,
    pub item_no: u64,
    pub code: Code,
    pub desc: Desc,
    pub brand: &'static str,
    pub dept: &'static Dept,
    pub price: Cents,
    pub updated: Day,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("a catalog holds at most {MAX_PRODUCTS} products (9-digit item numbers), not {0}")]
    TooManyProducts(u64),
}

/// The fixed demo products; their barcodes are reserved out of the generated code spaces.
fn demo(index: u64) -> Option<(&'static str, Desc, &'static str, &'static Dept, u32, Day)> {
    let day = |y, m, d| Day::from_ymd(y, m, d).unwrap_or(Day(0));
    let dept = |code: &str| DEPTS.iter().find(|d| d.code == code).unwrap_or(&DEPTS[0]);
    Some(match index {
        0 => ("123456789012", Desc::Fixed("Demo Product 123456789012"), "ACME", dept("GROC"), 199, day(2024, 1, 31)),
        1 => {
            ("036000291452", Desc::Fixed("Soft Facial Tissues 160ct"), "SOFTLEAF", dept("HOME"), 249, day(2023, 11, 15))
        }
        2 => ("7501031311309", Desc::Fixed("Mango Nectar 1L"), "VALLEVERDE", dept("BEVG"), 179, day(2023, 6, 2)),
        3 => (
            "9780471117094",
            Desc::Fixed("Hardcover Book Data Structures 2nd Ed"),
            "PAGETURN",
            &BOOKS,
            4995,
            day(2022, 9, 15),
        ),
        _ => return None,
    })
}

/// The generated catalog for one seed and size. Cheap to build, immutable, shared by every request.
#[derive(Clone, Debug)]
pub struct Catalog {
    seed: u64,
    len: u64,
    upc: CodeSpace,
    ean: CodeSpace,
    demo_codes: Vec<Code>,
}

impl Catalog {
    pub fn new(seed: u64, len: u64) -> Result<Catalog, CatalogError> {
        if len > MAX_PRODUCTS {
            return Err(CatalogError::TooManyProducts(len));
        }
        let demo_codes: Vec<Code> =
            (0..DEMO_COUNT).filter_map(demo).filter_map(|(text, ..)| Code::parse_any(text)).collect();
        Ok(Catalog {
            seed,
            len,
            upc: CodeSpace::upc(mix(seed, 0, SALT_UPC_SPACE), &demo_codes),
            ean: CodeSpace::ean13(mix(seed, 0, SALT_EAN_SPACE), &demo_codes),
            demo_codes,
        })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Product `index`, or `None` past the end.
    pub fn product(&self, index: u64) -> Option<Product> {
        if index >= self.len {
            return None;
        }
        if let Some((_, desc, brand, dept, cents, updated)) = demo(index) {
            return Some(Product {
                index,
                item_no: FIRST_ITEM_NO + index,
                code: *self.demo_codes.get(index as usize)?,
                desc,
                brand,
                dept,
                price: Cents(cents),
                updated,
            });
        }
        let words = mix(self.seed, index, SALT_WORDS);
        let dept = &DEPTS[pick(words, 0, DEPTS.len())];
        let desc = Desc::Words {
            adjective: ADJECTIVES[pick(words, 8, ADJECTIVES.len())],
            noun: dept.nouns[pick(words, 16, dept.nouns.len())],
            size: dept.sizes[pick(words, 24, dept.sizes.len())],
        };
        let brand = BRANDS[pick(words, 32, BRANDS.len())];
        let other = mix(self.seed, index, SALT_PRICE_DATE);
        let (low, high) = dept.price_range;
        // Shelf prices end in 9: 1.99, 12.49.
        let price = Cents((low + (other % u64::from(high - low)) as u32) / 10 * 10 + 9);
        // 2010-01-01 .. about 2024-12-31, leaving room for the export's older and newer dirty rows.
        let updated = Day(365 + ((other >> 32) % (15 * 365)) as u32);
        Some(Product {
            index,
            item_no: FIRST_ITEM_NO + index,
            code: self.generated_code(index),
            desc,
            brand,
            dept,
            price,
            updated,
        })
    }

    /// The product with this item number.
    pub fn by_item_no(&self, item_no: u64) -> Option<Product> {
        self.product(item_no.checked_sub(FIRST_ITEM_NO)?)
    }

    /// The product whose barcode is `code`, of either kind.
    pub fn by_code(&self, code: Code) -> Option<Product> {
        if let Some(index) = self.demo_codes.iter().position(|c| *c == code) {
            return self.product(index as u64);
        }
        let kind = code.kind();
        let space = match kind {
            Kind::Upc => &self.upc,
            Kind::Ean13 => &self.ean,
        };
        let rank = space.rank(code)?;
        let (block, position) = (rank / slots_of(kind), rank % slots_of(kind));
        let slot = SLOTS
            .iter()
            .enumerate()
            .filter(|(_, k)| **k == kind)
            .nth(position as usize)
            .map(|(slot, _)| slot as u64)?;
        let index = DEMO_COUNT.checked_add(block.checked_mul(10)?.checked_add(slot)?)?;
        self.product(index)
    }

    /// The legacy lookup: exactly 12 ASCII digits with a correct check digit that are a product's UPC-A.
    pub fn by_upc(&self, text: &str) -> Option<Product> {
        self.by_code(Code::parse(Kind::Upc, text)?)
    }

    fn generated_code(&self, index: u64) -> Code {
        let k = index - DEMO_COUNT;
        let (block, slot) = (k / 10, (k % 10) as usize);
        let kind = SLOTS[slot];
        let position = SLOTS[..slot].iter().filter(|s| **s == kind).count() as u64;
        let rank = block * slots_of(kind) + position;
        match kind {
            Kind::Upc => self.upc.code(rank),
            Kind::Ean13 => self.ean.code(rank),
        }
    }
}

fn slots_of(kind: Kind) -> u64 {
    SLOTS.iter().filter(|s| **s == kind).count() as u64
}

/// A well-mixed 64-bit hash of `(seed, i, salt)` (SplitMix64's finaliser, applied twice).
pub fn mix(seed: u64, i: u64, salt: u64) -> u64 {
    fn finalise(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let keyed = finalise(seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    finalise(keyed ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03))
}

/// An index below `len` from the 8 bits of `hash` starting at `shift`; `len` is a short word list's
/// length, so the modulo bias is small and fields drawn from different bytes are independent.
fn pick(hash: u64, shift: u32, len: usize) -> usize {
    (((hash >> shift) & 0xff) % len as u64) as usize
}

#[cfg(test)]
mod tests;
