//! Unit tests for `data`: the fixed demo products, barcode rules, uniqueness and the lookup round trip.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::words::{ADJECTIVES, BRANDS, DEPTS};

const BIG: u64 = 18_000_000;

fn catalog(seed: u64, len: u64) -> Catalog {
    Catalog::new(seed, len).expect("size is in range")
}

#[test]
fn demo_products_are_fixed() {
    for seed in [1, 2, 99] {
        let c = catalog(seed, BIG);
        let p = c.product(0).expect("product 0");
        assert_eq!(p.item_no, 100_000_001);
        assert_eq!(p.code.to_string(), "123456789012");
        assert_eq!(p.desc.to_string(), "Demo Product 123456789012");
        assert_eq!(p.brand, "ACME");
        assert_eq!(p.dept.code, "GROC");
        assert_eq!(p.price, Cents(199));
        assert_eq!(p.updated.yyyymmdd(), 20240131);

        let codes: Vec<String> = (0..4).map(|i| c.product(i).expect("demo").code.to_string()).collect();
        assert_eq!(codes, ["123456789012", "036000291452", "7501031311309", "9780471117094"]);
        assert_eq!(c.product(3).map(|p| p.dept.code), Some("BOOK"));
        for (i, code) in codes.iter().enumerate() {
            let found = Code::parse_any(code).and_then(|code| c.by_code(code));
            assert_eq!(found.map(|p| p.index), Some(i as u64), "{code}");
        }
    }
}

#[test]
fn the_legacy_lookup_takes_only_twelve_digits() {
    let c = catalog(1, 1000);
    assert_eq!(c.by_upc("123456789012").map(|p| p.item_no), Some(100_000_001));
    assert_eq!(c.by_upc("036000291452").map(|p| p.index), Some(1));
    assert!(c.by_upc("0123456789012").is_none());
    assert!(c.by_upc("7501031311309").is_none());
    assert!(c.by_upc("123456789013").is_none());
    assert!(c.by_upc(" 123456789012").is_none());
    assert!(c.by_upc("").is_none());
}

#[test]
fn a_small_catalog_has_only_its_demo_products() {
    let c = catalog(1, 2);
    assert!(c.product(2).is_none());
    assert!(c.by_upc("123456789012").is_some());
    assert!(c.by_upc("036000291452").is_some());
    assert!(Code::parse_any("7501031311309").and_then(|code| c.by_code(code)).is_none());
    assert!(catalog(1, 0).product(0).is_none());
}

#[test]
fn codes_beyond_the_catalog_size_are_not_found() {
    let small = catalog(5, 1000);
    let large = catalog(5, 100_000);
    for i in [1000, 1001, 5000, 99_999] {
        let p = large.product(i).expect("in the large catalog");
        assert!(small.by_code(p.code).is_none(), "{i}");
    }
}

#[test]
fn codes_are_unique_and_valid_on_a_sample_of_an_18m_catalog() {
    let c = catalog(1, BIG);
    let mut seen = HashMap::new();
    let mut upcs = 0u64;
    let head = 0..200_000;
    let tail = (BIG - 50_000)..BIG;
    let spread = (0..50_000u64).map(|n| mix(7, n, 0) % BIG);
    for i in head.chain(tail).chain(spread) {
        let p = c.product(i).expect("in range");
        let text = p.code.to_string();
        assert!(Code::parse_any(&text) == Some(p.code), "{text} has a bad check digit");
        match p.code.kind() {
            Kind::Upc => {
                upcs += 1;
                assert!(!matches!(text.as_bytes()[0], b'2' | b'4' | b'5'), "{text}");
            }
            Kind::Ean13 => {
                assert!(!matches!(text.as_bytes()[0], b'0' | b'2'), "{text}");
                assert!(!text.starts_with("98") && !text.starts_with("99"), "{text}");
            }
        }
        // The spread sample may repeat an index; only a different index with the same code is a collision.
        if let Some(other) = seen.insert(p.code, i) {
            assert_eq!(other, i, "products {other} and {i} share {text}");
        }
    }
    let share = upcs as f64 / 300_000.0;
    assert!((0.65..0.75).contains(&share), "UPC share {share}");
}

#[test]
fn lookup_inverts_the_generator() {
    let c = catalog(42, BIG);
    for i in (0..20_000).chain((BIG - 20_000)..BIG) {
        let p = c.product(i).expect("in range");
        assert_eq!(c.by_code(p.code), Some(p));
        if p.code.kind() == Kind::Upc {
            assert_eq!(c.by_upc(&p.code.to_string()), Some(p));
        }
        assert_eq!(c.by_item_no(p.item_no), Some(p));
    }
    assert!(c.by_item_no(100_000_000).is_none());
    assert!(c.by_item_no(100_000_001 + BIG).is_none());
}

#[test]
fn the_same_seed_gives_the_same_catalog_and_another_seed_another() {
    let (a, b, other) = (catalog(3, 1000), catalog(3, 1000), catalog(4, 1000));
    let same = (0..1000).all(|i| a.product(i) == b.product(i));
    assert!(same);
    let differ = (4..1000).filter(|&i| a.product(i).map(|p| p.code) != other.product(i).map(|p| p.code)).count();
    assert!(differ > 990, "only {differ} codes differ between seeds");
}

#[test]
fn fields_look_like_the_export_wants() {
    let c = catalog(1, 100_000);
    for i in 0..100_000 {
        let p = c.product(i).expect("in range");
        assert!((100_000_001..=999_999_999).contains(&p.item_no));
        assert!(p.price.0 > 0 && p.price.0 < 1_000_000_000);
        let date = p.updated.yyyymmdd();
        assert!((20090101..=20251231).contains(&date), "{date}");
        assert_eq!(p.dept.code.len(), 4);
        assert!(p.dept.code.bytes().all(|b| b.is_ascii_uppercase()));
        assert_eq!(p.brand, p.brand.to_ascii_uppercase());
        assert!(!p.desc.to_string().is_empty());
    }
}

#[test]
fn words_are_safe_in_the_export_and_in_html() {
    let depts = DEPTS
        .iter()
        .flat_map(|d| [d.code, d.name].into_iter().chain(d.nouns.iter().copied()).chain(d.sizes.iter().copied()));
    for word in depts.chain(ADJECTIVES.iter().copied()).chain(BRANDS.iter().copied()) {
        assert!(!word.is_empty());
        assert_eq!(word.trim(), word);
        assert!(!word.contains(['|', '\n', '\r', '<', '>', '&', '"', '\'']), "{word:?}");
    }
}

#[test]
fn days_convert_both_ways() {
    assert_eq!(Day::from_ymd(2009, 1, 1), Some(Day(0)));
    assert_eq!(Day(0).yyyymmdd(), 20090101);
    assert_eq!(Day(365).yyyymmdd(), 20100101);
    assert_eq!(Day::from_ymd(2012, 2, 29).map(Day::yyyymmdd), Some(20120229));
    assert_eq!(Day::from_ymd(2013, 2, 29), None);
    assert_eq!(Day::from_ymd(2008, 12, 31), None);
    assert_eq!(Day::from_ymd(2024, 1, 31).map(|d| d.to_string()), Some("2024-01-31".into()));
    for n in 0..7000 {
        let (y, m, d) = Day(n).ymd();
        assert_eq!(Day::from_ymd(y, m, d), Some(Day(n)));
    }
}

#[test]
fn too_large_a_catalog_is_refused() {
    assert!(Catalog::new(1, MAX_PRODUCTS).is_ok());
    assert_eq!(Catalog::new(1, MAX_PRODUCTS + 1).err(), Some(CatalogError::TooManyProducts(MAX_PRODUCTS + 1)));
    let c = catalog(1, MAX_PRODUCTS);
    let last = c.product(MAX_PRODUCTS - 1).expect("last product");
    assert_eq!(last.item_no, 999_999_999);
    assert_eq!(c.by_code(last.code), Some(last));
}

proptest! {
    #[test]
    fn round_trip_for_any_seed_and_index(seed in any::<u64>(), i in 0..BIG) {
        let c = catalog(seed, BIG);
        let p = c.product(i).expect("in range");
        prop_assert_eq!(c.by_code(p.code), Some(p));
        let text = p.code.to_string();
        prop_assert_eq!(Code::parse_any(&text), Some(p.code));
    }
}
