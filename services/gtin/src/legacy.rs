//! The legacy export reader: the translating half of the anti-corruption layer. It knows the legacy catalog's
//! format (services/legacy-catalog/EXPORT.md: `|`-separated columns, prices as zero-padded cent strings,
//! `YYYYMMDD` dates, stray spaces, dirty rows, an `#END rows=N` trailer) so that nothing past this file does.
//! Every line becomes either a [`Product`] of the GTIN service's own model or a counted [`Reject`]; problems with
//! the export as a whole (no header, unknown columns, a missing or wrong trailer) are an [`ExportError`], and an
//! export with one must not be published.

use crate::clock::Date;
use crate::gtin::{Gtin, GtinError};
use crate::record::{Product, MAX_FIELD_LEN};

pub const HEADER_PREFIX: &str = "#LEGACY-CATALOG-EXPORT";
const TRAILER_PREFIX: &str = "#END rows=";
/// The columns this reader needs, in the order [`Columns`] stores their positions.
const COLUMNS: [&str; 7] = ["ITEM_NO", "UPC_EAN", "ITEM_DESC", "BRAND_NM", "DEPT_CD", "RETAIL_PRC", "UPD_DT"];
/// More fields than this on one line is a dirty row, whatever the header says.
const MAX_FIELDS: usize = 32;

/// Why one row was left out. Counted per reason in the sync report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    EmptyCode,
    BadCharacter,
    BadLength,
    BadCheckDigit,
    BadUpcE,
    RestrictedCode,
    CouponCode,
    RefundReceiptCode,
    BadPrice,
    BadDate,
    BadSku,
    EmptyDescription,
    FieldTooLong,
    FieldCount,
    NotUtf8,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::EmptyCode => "empty_code",
            Reject::BadCharacter => "bad_character",
            Reject::BadLength => "bad_length",
            Reject::BadCheckDigit => "bad_check_digit",
            Reject::BadUpcE => "bad_upc_e",
            Reject::RestrictedCode => "restricted_code",
            Reject::CouponCode => "coupon_code",
            Reject::RefundReceiptCode => "refund_receipt_code",
            Reject::BadPrice => "bad_price",
            Reject::BadDate => "bad_date",
            Reject::BadSku => "bad_sku",
            Reject::EmptyDescription => "empty_description",
            Reject::FieldTooLong => "field_too_long",
            Reject::FieldCount => "field_count",
            Reject::NotUtf8 => "not_utf8",
        }
    }

    fn from_gtin(e: &GtinError) -> Reject {
        match e {
            GtinError::Empty => Reject::EmptyCode,
            GtinError::UnexpectedCharacter { .. } => Reject::BadCharacter,
            GtinError::Length(_) | GtinError::UpcELength(_) => Reject::BadLength,
            GtinError::UpcENumberSystem(_) => Reject::BadUpcE,
            GtinError::CheckDigit { .. } => Reject::BadCheckDigit,
            GtinError::Restricted { .. } => Reject::RestrictedCode,
            GtinError::Coupon { .. } => Reject::CouponCode,
            GtinError::RefundReceipt { .. } => Reject::RefundReceiptCode,
        }
    }
}

/// A rejected row: the reason and a message naming the field and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: Reject,
    pub message: String,
}

fn reject(reason: Reject, message: String) -> Rejected {
    Rejected { reason, message }
}

/// Problems with the export as a whole. Any of them means the export must not become a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("line {line}: expected the `{HEADER_PREFIX} v1 ...` header, got {found:?}")]
    MissingHeader { line: u64, found: String },
    #[error("line {line}: export format {found:?} is not supported (this reader knows v1)")]
    Version { line: u64, found: String },
    #[error("line {line}: column header lacks {missing} (got {found:?})")]
    Columns { line: u64, missing: &'static str, found: String },
    #[error("line {line}: malformed trailer {found:?}")]
    BadTrailer { line: u64, found: String },
    #[error("line {line}: data after the `#END` trailer")]
    AfterTrailer { line: u64 },
    #[error("the export ended after {rows} rows without its `#END rows=N` trailer: it was cut short")]
    MissingTrailer { rows: u64 },
    #[error("the trailer says {declared} rows but {read} were read")]
    RowCount { declared: u64, read: u64 },
}

/// What the first line says about the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportHeader {
    pub line: String,
    /// The `products=N` field, when present: a hint for sizing the build.
    pub products: Option<u64>,
}

/// One line, classified.
#[derive(Debug)]
pub enum Line<'a> {
    Header(ExportHeader),
    Columns,
    Row(Result<Product<'a>, Rejected>),
    Trailer,
    Blank,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Columns,
    Rows,
    Done,
}

/// Reads an export line by line and keeps the whole-export checks (header, columns, trailer, row count).
#[derive(Debug)]
pub struct ExportReader {
    state: State,
    /// Position of each of [`COLUMNS`] in a row, from the column header.
    positions: [usize; 7],
    width: usize,
    rows: u64,
    declared: Option<u64>,
}

impl Default for ExportReader {
    fn default() -> Self {
        ExportReader { state: State::Header, positions: [0, 1, 2, 3, 4, 5, 6], width: 7, rows: 0, declared: None }
    }
}

impl ExportReader {
    pub fn new() -> ExportReader {
        ExportReader::default()
    }

    /// Data rows seen so far (clean and dirty).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Classifies line number `line_no` (1-based; without its `\n`). Bytes that are not UTF-8 are a dirty row.
    pub fn line<'a>(&mut self, line_no: u64, bytes: &'a [u8]) -> Result<Line<'a>, ExportError> {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) if self.state == State::Rows => {
                self.rows += 1;
                let message = format!("byte {} is not UTF-8", e.valid_up_to());
                return Ok(Line::Row(Err(reject(Reject::NotUtf8, message))));
            }
            Err(_) => {
                let found = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
                return Err(match self.state {
                    State::Header => ExportError::MissingHeader { line: line_no, found },
                    State::Columns => ExportError::Columns { line: line_no, missing: "UTF-8 text", found },
                    _ => ExportError::AfterTrailer { line: line_no },
                });
            }
        };
        match self.state {
            State::Header => {
                let header = parse_header(line_no, text)?;
                self.state = State::Columns;
                Ok(Line::Header(header))
            }
            State::Columns => {
                self.read_columns(line_no, text)?;
                self.state = State::Rows;
                Ok(Line::Columns)
            }
            State::Rows if text.starts_with('#') => {
                let declared = text
                    .strip_prefix(TRAILER_PREFIX)
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .ok_or_else(|| ExportError::BadTrailer { line: line_no, found: cut(text) })?;
                self.declared = Some(declared);
                self.state = State::Done;
                Ok(Line::Trailer)
            }
            State::Rows if text.trim().is_empty() => Ok(Line::Blank),
            State::Rows => {
                self.rows += 1;
                Ok(Line::Row(self.translate(text)))
            }
            State::Done if text.trim().is_empty() => Ok(Line::Blank),
            State::Done => Err(ExportError::AfterTrailer { line: line_no }),
        }
    }

    /// Called at the end of the stream: the trailer must have been seen and must match the rows read.
    pub fn finish(&self) -> Result<u64, ExportError> {
        match self.declared {
            None => Err(ExportError::MissingTrailer { rows: self.rows }),
            Some(declared) if declared != self.rows => Err(ExportError::RowCount { declared, read: self.rows }),
            Some(_) => Ok(self.rows),
        }
    }

    fn read_columns(&mut self, line_no: u64, text: &str) -> Result<(), ExportError> {
        let names: Vec<&str> = text.split('|').map(str::trim).collect();
        for (slot, wanted) in self.positions.iter_mut().zip(COLUMNS) {
            *slot = names.iter().position(|n| *n == wanted).ok_or_else(|| ExportError::Columns {
                line: line_no,
                missing: wanted,
                found: cut(text),
            })?;
        }
        self.width = names.len();
        Ok(())
    }

    /// Translates one data row into the service's model: trims stray spaces, parses the code through the GTIN
    /// parser, the price string into cents and the date into a [`Date`].
    fn translate<'a>(&self, text: &'a str) -> Result<Product<'a>, Rejected> {
        let mut fields = [""; MAX_FIELDS];
        let mut count = 0;
        for field in text.split('|') {
            if count == MAX_FIELDS {
                count += 1;
                break;
            }
            fields[count] = field;
            count += 1;
        }
        if count != self.width {
            let message = format!("expected {} fields, got {}", self.width, count);
            return Err(reject(Reject::FieldCount, message));
        }
        let get = |i: usize| fields[self.positions[i]].trim();
        let (sku, code, description, brand, department, price, updated) =
            (get(0), get(1), get(2), get(3), get(4), get(5), get(6));

        if sku.is_empty() || sku.len() > 32 || !sku.bytes().all(|b| b.is_ascii_digit()) {
            return Err(reject(Reject::BadSku, format!("ITEM_NO {:?} is not a legacy SKU", cut(sku))));
        }
        let gtin =
            Gtin::parse(code).map_err(|e| reject(Reject::from_gtin(&e), format!("UPC_EAN {:?}: {e}", cut(code))))?;
        if description.is_empty() {
            return Err(reject(Reject::EmptyDescription, "ITEM_DESC is empty".to_string()));
        }
        for (name, value) in [("ITEM_DESC", description), ("BRAND_NM", brand), ("DEPT_CD", department)] {
            if value.len() > MAX_FIELD_LEN {
                let message = format!("{name} is {} bytes, more than {MAX_FIELD_LEN}", value.len());
                return Err(reject(Reject::FieldTooLong, message));
            }
        }
        let price_cents = parse_cents(price)
            .ok_or_else(|| reject(Reject::BadPrice, format!("RETAIL_PRC {:?} is not a price in cents", cut(price))))?;
        let updated = Date::parse_yyyymmdd(updated).map_err(|e| reject(Reject::BadDate, format!("UPD_DT: {e}")))?;
        Ok(Product { gtin, sku, description, brand, department, price_cents, updated })
    }
}

fn parse_header(line_no: u64, text: &str) -> Result<ExportHeader, ExportError> {
    let mut words = text.split_whitespace();
    if words.next() != Some(HEADER_PREFIX) {
        return Err(ExportError::MissingHeader { line: line_no, found: cut(text) });
    }
    match words.next() {
        Some("v1") => {}
        other => return Err(ExportError::Version { line: line_no, found: other.unwrap_or("").to_string() }),
    }
    let products = words.find_map(|w| w.strip_prefix("products=")).and_then(|n| n.parse().ok());
    Ok(ExportHeader { line: text.to_string(), products })
}

/// Zero-padded cents, `000000199` → 199. Up to 18 digits, so it always fits a u64.
fn parse_cents(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The first 80 characters, for messages and report examples.
pub fn cut(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str) -> (Vec<Result<Product<'_>, Rejected>>, Result<u64, ExportError>) {
        let mut reader = ExportReader::new();
        let mut rows = Vec::new();
        for (i, line) in text.split('\n').enumerate() {
            match reader.line(i as u64 + 1, line.as_bytes()) {
                Ok(Line::Row(r)) => rows.push(r),
                Ok(_) => {}
                Err(e) => return (rows, Err(e)),
            }
        }
        let done = reader.finish();
        (rows, done)
    }

    const HEAD: &str =
        "#LEGACY-CATALOG-EXPORT v1 seed=1 products=3\nITEM_NO|UPC_EAN|ITEM_DESC|BRAND_NM|DEPT_CD|RETAIL_PRC|UPD_DT\n";

    #[test]
    fn clean_and_dirty_rows_translate_or_are_counted() {
        let text = format!(
            "{HEAD}100000001|036000291452|Demo Product|ACME|GROC|000000199|20240131\n\
             100000002| 7501031311309 |  Oat Milk 1L |ACME |DARY|000000250|20240201\n\
             100000003|7501031311308|Bad check|ACME|GROC|000000100|20240101\n\
             100000004||No code|ACME|GROC|000000100|20240101\n\
             100000005|75010313113|Short|ACME|GROC|000000100|20240101\n\
             100000006|036000291452|Bad price|ACME|GROC|N/A|20240101\n\
             100000007|036000291452||ACME|GROC|000000100|20240101\n\
             100000008|036000291452|Bad date|ACME|GROC|000000100|20240231\n\
             100000009|036000291452|Too few|ACME|GROC|000000100\n\
             100000010|512345678900|Coupon|ACME|GROC|000000100|20240101\n\
             #END rows=10\n"
        );
        let (rows, done) = read_all(&text);
        assert_eq!(done, Ok(10));
        let first = rows[0].as_ref().unwrap();
        assert_eq!((first.gtin.key(), first.price_cents, first.updated.as_u32()), (36_000_291_452, 199, 20240131));
        let second = rows[1].as_ref().unwrap();
        assert_eq!((second.description, second.brand, second.price_cents), ("Oat Milk 1L", "ACME", 250));
        let reasons: Vec<&str> = rows[2..].iter().map(|r| r.as_ref().unwrap_err().reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "bad_check_digit",
                "empty_code",
                "bad_length",
                "bad_price",
                "empty_description",
                "bad_date",
                "field_count",
                "coupon_code"
            ]
        );
        assert_eq!(rows[2].as_ref().unwrap_err().message, "UPC_EAN \"7501031311308\": check digit should be 9, got 8");
    }

    #[test]
    fn a_cut_short_or_miscounted_export_is_refused() {
        let row = "100000001|036000291452|Demo|ACME|GROC|000000199|20240131\n";
        assert_eq!(read_all(&format!("{HEAD}{row}{row}")).1, Err(ExportError::MissingTrailer { rows: 2 }));
        assert_eq!(
            read_all(&format!("{HEAD}{row}#END rows=3\n")).1,
            Err(ExportError::RowCount { declared: 3, read: 1 })
        );
        assert!(matches!(read_all(&format!("{HEAD}{row}#END rows=x\n")).1, Err(ExportError::BadTrailer { .. })));
        assert!(matches!(read_all(&format!("{HEAD}#END rows=0\n{row}")).1, Err(ExportError::AfterTrailer { .. })));
        assert!(matches!(read_all(row).1, Err(ExportError::MissingHeader { line: 1, .. })));
        assert!(matches!(read_all("#LEGACY-CATALOG-EXPORT v2\n").1, Err(ExportError::Version { .. })));
        let bad_columns = "#LEGACY-CATALOG-EXPORT v1\nITEM_NO|UPC|ITEM_DESC\n";
        assert!(matches!(read_all(bad_columns).1, Err(ExportError::Columns { missing: "UPC_EAN", .. })));
        // CRLF line ends and blank lines are tolerated; the trailer's own count is what is checked.
        let crlf = format!("{}\r\n\r\n#END rows=1\r\n", HEAD.replace('\n', "\r\n") + row.trim_end());
        assert_eq!(read_all(&crlf).1, Ok(1));
    }

    #[test]
    fn columns_are_found_by_name_and_bad_bytes_are_a_dirty_row() {
        let text = "#LEGACY-CATALOG-EXPORT v1\nUPC_EAN|ITEM_NO|ITEM_DESC|BRAND_NM|DEPT_CD|RETAIL_PRC|UPD_DT|EXTRA\n\
                    036000291452|100000001|Demo|ACME|GROC|000000199|20240131|x\n#END rows=1\n";
        let (rows, done) = read_all(text);
        assert_eq!(done, Ok(1));
        assert_eq!(rows[0].as_ref().unwrap().sku, "100000001");

        let mut reader = ExportReader::new();
        reader.line(1, HEAD.lines().next().unwrap().as_bytes()).unwrap();
        reader.line(2, HEAD.lines().nth(1).unwrap().as_bytes()).unwrap();
        match reader.line(3, b"1|\xff\xfe|x|y|z|1|20240101").unwrap() {
            Line::Row(Err(r)) => assert_eq!(r.reason, Reject::NotUtf8),
            other => panic!("{other:?}"),
        }
        let wide = vec!["1"; 40].join("|");
        match reader.line(4, wide.as_bytes()).unwrap() {
            Line::Row(Err(r)) => assert_eq!(r.reason, Reject::FieldCount),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_cents("000000199"), Some(199));
        assert_eq!(parse_cents("1234567890123456789"), None);
        assert_eq!(parse_cents("-1"), None);
        assert_eq!(parse_cents(""), None);
    }
}
