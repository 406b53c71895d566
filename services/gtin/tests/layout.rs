//! The slot table of snapshot format 2: every key is found with its own record, every other key misses
//! wherever its home slot falls, long records overflow and still read back, other format versions are refused
//! by name, and a table out of order is caught by verify.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use gtin::builder::SnapshotBuilder;
use gtin::clock::Date;
use gtin::gtin::Gtin;
use gtin::record::Product;
use gtin::snapshot::{checksum, home_slot, key_hash, Header, Snapshot, SnapshotError, MAGIC};
use gtin::store::{open_newest, Store, StoreError};
use gtin::synth::{gtin_of, SynthProduct};

/// The largest 14-digit key.
const MAX_KEY: u64 = 99_999_999_999_999;

fn product(key: u64, description: &str) -> Product<'_> {
    Product {
        gtin: Gtin::from_key(key).unwrap(),
        sku: "42",
        description,
        brand: "ACME",
        department: "HOME",
        price_cents: key % 10_000,
        updated: Date::from_u32(20240101).unwrap(),
    }
}

/// Builds and publishes a snapshot of `products` (key → description), verified.
fn build(dir: &Path, products: &BTreeMap<u64, String>) -> PathBuf {
    let mut b = SnapshotBuilder::new(dir, "layout test").unwrap();
    for (&key, description) in products {
        b.add(&product(key, description)).unwrap();
    }
    let built = b.finish().unwrap();
    built.open().unwrap().verify().unwrap();
    built.publish().unwrap()
}

fn build_synthetic(dir: &Path, seed: u64, n: u64) -> PathBuf {
    let mut b = SnapshotBuilder::new(dir, "synthetic").unwrap();
    let mut p = SynthProduct::default();
    for i in 0..n {
        p.fill(seed, i);
        b.add(&p.product()).unwrap();
    }
    b.finish().unwrap().publish().unwrap()
}

fn home(snap: &Snapshot, key: u64) -> u64 {
    home_slot(key_hash(key), snap.header().home_range)
}

#[test]
fn every_key_is_found_in_its_own_slot_with_its_own_record() {
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000;
    let snap = Snapshot::open(&build_synthetic(dir.path(), 11, n)).unwrap();
    snap.verify().unwrap();
    assert_eq!(snap.len() as u64, n);
    assert!(snap.slot_count() as u64 >= snap.header().home_range);
    let mut p = SynthProduct::default();
    let mut expected = HashSet::new();
    for i in 0..n {
        p.fill(11, i);
        let want = p.product();
        assert_eq!(snap.get(want.gtin).unwrap(), Some(want), "product {i}");
        let slot = snap.find_slot(want.gtin.key()).unwrap();
        assert!(slot as u64 >= home(&snap, want.gtin.key()));
        expected.insert(want.gtin.key());
    }
    let listed: HashSet<u64> = snap.keys().collect();
    assert_eq!(listed, expected);
    // Slots come in strictly increasing hash order.
    let hashes: Vec<u64> = snap.keys().map(key_hash).collect();
    assert!(hashes.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn misses_anywhere_in_the_table_find_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = 5_000;
    let snap = Snapshot::open(&build_synthetic(dir.path(), 12, n)).unwrap();
    let present: HashSet<u64> = snap.keys().collect();
    let first = snap.keys().next().unwrap();
    let last = snap.keys().last().unwrap();
    let (mut before_first, mut after_last, mut empty_home, mut occupied_home) = (0, 0, 0, 0);
    // Absent keys of every kind: other products of the synthetic catalogue, and a plain sweep of the key space.
    let candidates = (n..n + 20_000).map(|i| gtin_of(12, i).key()).chain((0..20_000u64).map(|i| i * 4_999_999_937));
    for key in candidates.filter(|k| !present.contains(k) && *k <= MAX_KEY) {
        let gtin = Gtin::from_key(key).unwrap();
        assert_eq!(snap.get(gtin).unwrap(), None, "{key}");
        assert_eq!(snap.find_slot(key), None, "{key}");
        let h = home(&snap, key) as usize;
        before_first += usize::from(key_hash(key) < key_hash(first));
        after_last += usize::from(key_hash(key) > key_hash(last));
        if snap.key_in_slot(h).is_none() {
            empty_home += 1;
        } else {
            occupied_home += 1;
        }
    }
    // The sweep reached every kind of miss the probe loop distinguishes.
    assert!(before_first > 0 && after_last > 0 && empty_home > 100 && occupied_home > 100);
    for key in [0, 1, MAX_KEY, first.saturating_sub(1), last + 1] {
        if !present.contains(&key) {
            assert_eq!(snap.get(Gtin::from_key(key).unwrap()).unwrap(), None, "{key}");
        }
    }
    assert_eq!(snap.find_slot(u64::MAX), None);
}

#[test]
fn empty_and_tiny_snapshots() {
    for n in 0..6u64 {
        let dir = tempfile::tempdir().unwrap();
        let products: BTreeMap<u64, String> = (0..n).map(|i| (gtin_of(3, i).key(), format!("item {i}"))).collect();
        let snap = Snapshot::open(&build(dir.path(), &products)).unwrap();
        assert_eq!(snap.len() as u64, n);
        assert_eq!(snap.is_empty(), n == 0);
        for (&key, description) in &products {
            assert_eq!(snap.get(Gtin::from_key(key).unwrap()).unwrap().unwrap().description, description);
        }
        for i in n..n + 200 {
            assert_eq!(snap.get(gtin_of(3, i)).unwrap(), None);
        }
    }
}

#[test]
fn long_records_overflow_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    // One record in two hundred is far longer than the rest: within the 1% the slot size leaves out.
    let products: BTreeMap<u64, String> = (0..3_000u64)
        .map(|i| {
            let description = if i % 200 == 0 { "long ".repeat(40 + (i as usize % 50)) } else { format!("short {i}") };
            (gtin_of(4, i).key(), description)
        })
        .collect();
    let snap = Snapshot::open(&build(dir.path(), &products)).unwrap();
    let stats = snap.slot_stats();
    assert_eq!(stats.overflowed, 15);
    assert!(stats.slot_size <= 64, "slot size {} chosen for the long tail", stats.slot_size);
    for (&key, description) in &products {
        let found = snap.get(Gtin::from_key(key).unwrap()).unwrap().unwrap();
        assert_eq!(found, product(key, description));
    }
    snap.verify().unwrap();
}

#[test]
fn duplicates_resolve_as_before_in_the_slot_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = SnapshotBuilder::new(dir.path(), "dups").unwrap();
    for i in 0..2_000u64 {
        let key = gtin_of(5, i).key();
        b.add(&Product { updated: Date::from_u32(20240101).unwrap(), ..product(key, "old") }).unwrap();
        // Every third product again, newer; every fifth again with the same date (the later row wins).
        if i % 3 == 0 {
            b.add(&Product { updated: Date::from_u32(20240202).unwrap(), ..product(key, "newer") }).unwrap();
        }
        if i % 5 == 0 {
            b.add(&Product { updated: Date::from_u32(20240101).unwrap(), ..product(key, "tie") }).unwrap();
        }
    }
    let built = b.finish().unwrap();
    assert_eq!(built.stats.products, 2_000);
    let snap = built.open().unwrap();
    snap.verify().unwrap();
    for i in 0..2_000u64 {
        let found = snap.get(gtin_of(5, i)).unwrap().unwrap();
        let want = if i % 3 == 0 {
            "newer"
        } else if i % 5 == 0 {
            "tie"
        } else {
            "old"
        };
        assert_eq!(found.description, want, "product {i}");
    }
}

/// The first bytes of a version 1 file: magic, version, then its 96-byte header.
fn version_1_file(path: &Path) {
    let mut bytes = Vec::from(MAGIC);
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&96u32.to_le_bytes());
    bytes.resize(4096, 0);
    fs::write(path, bytes).unwrap();
}

#[test]
fn version_1_files_are_refused_by_name_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("snapshot-29991231T235959-0001.gtin");
    version_1_file(&old);
    let err = Snapshot::open(&old).unwrap_err();
    assert!(matches!(err, SnapshotError::Version { found: 1, .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(old.to_str().unwrap()) && message.contains("version 1"), "{message}");

    // Alone in the directory, it leaves the service with nothing to serve, as no snapshot at all does.
    let store = Store::new(dir.path());
    assert!(matches!(store.reload(), Err(StoreError::NoSnapshot { .. })));
    assert!(store.current().is_none());
    assert!(open_newest(dir.path()).unwrap().is_none());

    // Beside an older valid file, the valid one is served although the old-format file's name is newer.
    let good = build_synthetic(dir.path(), 6, 100);
    assert_eq!(open_newest(dir.path()).unwrap().unwrap().path(), good.as_path());
    store.reload().unwrap();
    assert_eq!(store.current().unwrap().path(), good.as_path());
}

#[test]
fn a_table_out_of_hash_order_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = build_synthetic(dir.path(), 7, 1_000);
    let snap = Snapshot::open(&path).unwrap();
    let header = snap.header().clone();
    let (a, b) = {
        let mut occupied = (0..snap.slot_count()).filter(|&s| snap.key_in_slot(s).is_some());
        (occupied.next().unwrap(), occupied.next_back().unwrap())
    };
    drop(snap);
    // Swap the first and last occupied slots and make the checksums right again: only the order is wrong.
    let mut bytes = fs::read(&path).unwrap();
    let size = header.slot_size as usize;
    let at = |s: usize| header.slots_offset() as usize + s * size;
    let first: Vec<u8> = bytes[at(a)..at(a) + size].to_vec();
    bytes.copy_within(at(b)..at(b) + size, at(a));
    bytes[at(b)..at(b) + size].copy_from_slice(&first);
    let header = Header { content_checksum: checksum(&bytes[header.slots_offset() as usize..]), ..header };
    bytes[..header.header_len() as usize].copy_from_slice(&header.to_bytes());
    let swapped = dir.path().join("swapped.gtin");
    fs::write(&swapped, &bytes).unwrap();
    let snap = Snapshot::open(&swapped).unwrap();
    assert!(matches!(snap.verify(), Err(SnapshotError::Order { .. })), "{:?}", snap.verify());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any set of keys, clustered or spread, with records short and long: all found, nothing else.
    #[test]
    fn any_key_set_round_trips(
        keys in prop::collection::btree_set(prop_oneof![0..=MAX_KEY, 0..5_000u64, MAX_KEY - 5_000..=MAX_KEY], 0..400),
        lens in prop::collection::vec(0..300usize, 1..50),
        probes in prop::collection::vec(0..=MAX_KEY, 0..200),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let products: BTreeMap<u64, String> =
            keys.iter().enumerate().map(|(i, &k)| (k, "x".repeat(lens[i % lens.len()]))).collect();
        let snap = Snapshot::open(&build(dir.path(), &products)).unwrap();
        prop_assert_eq!(snap.len(), products.len());
        for (&key, description) in &products {
            let found = snap.get(Gtin::from_key(key).unwrap()).unwrap();
            prop_assert_eq!(found, Some(product(key, description)));
        }
        for key in probes.into_iter().chain(keys.iter().flat_map(|&k| [k.wrapping_sub(1), k + 1])) {
            if key <= MAX_KEY && !products.contains_key(&key) {
                prop_assert_eq!(snap.get(Gtin::from_key(key).unwrap()).unwrap(), None);
            }
        }
    }
}
