//! Unit tests for `export`: the exact format, the dirty rows, and what a reader following EXPORT.md gets.

use std::collections::{HashMap, HashSet};

use super::*;
use crate::gs1::Code;

fn export_text(seed: u64, len: u64, rate: f64) -> String {
    let catalog = Arc::new(Catalog::new(seed, len).expect("size in range"));
    let rate = DirtyRate::new(rate).expect("rate in range");
    let bytes: Vec<u8> = Export::new(catalog, rate).flat_map(|chunk| chunk.to_vec()).collect();
    String::from_utf8(bytes).expect("the export is UTF-8")
}

fn clean_row(p: &Product) -> String {
    let mut out = Vec::new();
    write_row(&mut out, p, None, 0);
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn header_columns_first_row_and_trailer() {
    let text = export_text(1, 1000, 0.05);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "#LEGACY-CATALOG-EXPORT v1 seed=1 products=1000");
    assert_eq!(lines[1], COLUMNS);
    assert_eq!(lines[2], "100000001|123456789012|Demo Product 123456789012|ACME|GROC|000000199|20240131");
    let data = &lines[2..lines.len() - 1];
    assert_eq!(lines.last().copied(), Some(format!("#END rows={}", data.len()).as_str()));
    assert!(text.ends_with('\n'));
    assert!(data.iter().all(|l| !l.starts_with('#')));
    assert!(data.iter().all(|l| l.split('|').count() == 7), "seven fields");
}

#[test]
fn every_product_has_its_clean_row() {
    let catalog = Catalog::new(9, 5000).expect("size");
    let text = export_text(9, 5000, 0.3);
    let rows: HashSet<&str> = text.lines().collect();
    for i in 0..5000 {
        let p = catalog.product(i).expect("in range");
        let row = clean_row(&p);
        assert!(rows.contains(row.trim_end()), "missing {row}");
    }
}

#[test]
fn zero_rate_is_exactly_one_row_per_product() {
    let text = export_text(1, 777, 0.0);
    assert_eq!(text.lines().count(), 777 + 3);
    assert!(text.ends_with("#END rows=777\n"));
}

#[test]
fn an_empty_catalog_still_has_header_and_trailer() {
    let text = export_text(1, 0, 0.5);
    assert_eq!(text, format!("#LEGACY-CATALOG-EXPORT v1 seed=1 products=0\n{COLUMNS}\n#END rows=0\n"));
}

#[test]
fn dirty_rows_of_every_kind_appear_near_the_rate() {
    let catalog = Catalog::new(1, 100_000).expect("size");
    let rate = DirtyRate::new(0.01).expect("rate");
    let mut kinds = HashMap::new();
    for i in 0..100_000 {
        if let Some(kind) = rate.dirt(&catalog, i) {
            *kinds.entry(kind).or_insert(0u32) += 1;
        }
    }
    let total: u32 = kinds.values().sum();
    assert!((800..1200).contains(&total), "{total} dirty rows");
    for kind in Dirt::ALL {
        assert!(kinds.get(&kind).copied().unwrap_or(0) > 50, "{kind:?}");
    }
    let text = export_text(1, 100_000, 0.01);
    assert!(text.ends_with(&format!("#END rows={}\n", 100_000 + total)));
}

#[test]
fn dirty_rows_look_as_the_contract_says() {
    let catalog = Catalog::new(1, 2000).expect("size");
    let rate = DirtyRate::new(1.0).expect("rate");
    let text = export_text(1, 2000, 1.0);
    let rows: Vec<Vec<&str>> =
        text.lines().filter(|l| !l.starts_with('#') && *l != COLUMNS).map(|l| l.split('|').collect()).collect();
    let mut seen = HashSet::new();
    for i in DEMO_COUNT..2000 {
        let p = catalog.product(i).expect("in range");
        let kind = rate.dirt(&catalog, i).expect("rate 1 makes every row dirty");
        let item = format!("{}", p.item_no);
        let mine: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0] == item).collect();
        assert_eq!(mine.len(), 2, "{item}");
        let clean = clean_row(&p);
        let clean: Vec<&str> = clean.trim_end().split('|').collect();
        let (dirty, clean_at) = if kind.is_duplicate() { (mine[1], 0) } else { (mine[0], 1) };
        assert_eq!(*mine[clean_at], clean);
        let code = p.code.to_string();
        match kind {
            Dirt::StraySpaces => {
                assert_ne!(dirty[1], code);
                assert_eq!(dirty[1].trim(), code);
            }
            Dirt::WrongCheckDigit => {
                assert_eq!(dirty[1].len(), code.len());
                assert_eq!(dirty[1][..code.len() - 1], code[..code.len() - 1]);
                assert_eq!(Code::parse_any(dirty[1]), None);
            }
            Dirt::EmptyCode => assert_eq!(dirty[1], ""),
            Dirt::EmptyDesc => assert_eq!(dirty[2], ""),
            Dirt::PaddedText => {
                assert_ne!(dirty[2], clean[2]);
                assert_eq!(dirty[2].trim(), clean[2]);
                assert_eq!(dirty[3].trim(), clean[3]);
            }
            Dirt::PriceNa => assert_eq!(dirty[5], "N/A"),
            Dirt::DuplicateSame => assert_eq!(*dirty, clean),
            Dirt::DuplicateNewer => {
                assert_eq!(dirty[..6], clean[..6]);
                assert!(dirty[6] > clean[6]);
            }
        }
        if !kind.is_duplicate() {
            assert!(dirty[6] < clean[6], "a stale dirty row is older");
        }
        seen.insert(kind);
    }
    assert_eq!(seen.len(), Dirt::ALL.len());
}

/// A reader that follows EXPORT.md (trim, reject what does not validate, newest `UPD_DT` wins, later row on
/// a tie) must end with exactly the catalog.
#[test]
fn a_contract_reader_recovers_the_catalog() {
    let catalog = Catalog::new(3, 20_000).expect("size");
    let text = export_text(3, 20_000, 0.2);
    let mut kept: HashMap<Code, (String, Vec<String>)> = HashMap::new();
    for line in text.lines().skip(2).filter(|l| !l.starts_with('#')) {
        let fields: Vec<String> = line.split('|').map(|f| f.trim().to_string()).collect();
        let Some(code) = Code::parse_any(&fields[1]) else {
            continue;
        };
        if fields[2].is_empty() || fields[5].parse::<u64>().is_err() {
            continue;
        }
        let date = fields[6].clone();
        match kept.get(&code) {
            Some((old, _)) if *old > date => {}
            _ => {
                kept.insert(code, (date, fields));
            }
        }
    }
    assert_eq!(kept.len(), 20_000);
    for i in 0..20_000 {
        let p = catalog.product(i).expect("in range");
        let (_, fields) = &kept[&p.code];
        assert_eq!(fields[0], p.item_no.to_string());
        assert_eq!(fields[2], p.desc.to_string());
        assert_eq!(fields[3], p.brand);
        assert_eq!(fields[5].parse::<u32>().ok(), Some(p.price.0));
    }
}

#[test]
fn chunks_stay_small_and_the_output_is_deterministic() {
    let catalog = Arc::new(Catalog::new(1, 50_000).expect("size"));
    let rate = DirtyRate::new(0.01).expect("rate");
    let chunks: Vec<Bytes> = Export::new(catalog.clone(), rate).collect();
    assert!(chunks.len() > 10);
    assert!(chunks.iter().all(|c| c.len() < CHUNK_BYTES + 512));
    let again: Vec<Bytes> = Export::new(catalog, rate).collect();
    assert_eq!(chunks, again);
}

#[test]
fn rates_outside_zero_to_one_are_refused() {
    assert!(DirtyRate::new(0.0).is_ok());
    assert!(DirtyRate::new(1.0).is_ok());
    assert!(DirtyRate::new(-0.1).is_err());
    assert!(DirtyRate::new(1.01).is_err());
    assert!(DirtyRate::new(f64::NAN).is_err());
}

#[test]
fn numbers_are_zero_padded() {
    let mut out = Vec::new();
    push_number(&mut out, 199, 9);
    out.push(b' ');
    push_number(&mut out, 0, 3);
    out.push(b' ');
    push_number(&mut out, 123_456, 2);
    assert_eq!(out, b"000000199 000 123456");
}
