//! Snapshot files and the store, through the public API and a real data directory: build, publish, open,
//! look up, verify, detect corruption, reload, roll back and prune.

use std::fs;
use std::path::{Path, PathBuf};

use gtin::builder::SnapshotBuilder;
use gtin::clock::Date;
use gtin::gtin::Gtin;
use gtin::record::Product;
use gtin::snapshot::{Snapshot, SnapshotError};
use gtin::store::{open_newest, ReloadOutcome, Store, StoreError};
use gtin::synth::{gtin_of, SynthProduct};

fn build(dir: &Path, seed: u64, n: u64) -> PathBuf {
    let mut b = SnapshotBuilder::new(dir, &format!("synthetic seed={seed}")).unwrap();
    let mut p = SynthProduct::default();
    for i in 0..n {
        p.fill(seed, i);
        b.add(&p.product()).unwrap();
    }
    let built = b.finish().unwrap();
    built.open().unwrap().verify().unwrap();
    built.publish().unwrap()
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn every_built_product_is_found_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path(), 3, 5_000);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("snapshot-") && name.ends_with("-0001.gtin"), "{name}");
    assert_eq!(snapshot_files(dir.path()), vec![name.to_string()], "temporaries left behind");

    let snap = Snapshot::open(&path).unwrap();
    assert_eq!(snap.len(), 5_000);
    assert_eq!(snap.header().source, "synthetic seed=3");
    let mut p = SynthProduct::default();
    for i in 0..5_000 {
        p.fill(3, i);
        let found = snap.get(p.product().gtin).unwrap().unwrap_or_else(|| panic!("product {i} missing"));
        assert_eq!(found, p.product());
        let slot = snap.find_slot(found.gtin.key()).unwrap();
        assert_eq!(snap.key_in_slot(slot), Some(found.gtin.key()));
    }
    for i in 5_000..6_000 {
        assert_eq!(snap.get(gtin_of(3, i)).unwrap(), None);
    }
    assert_eq!(snap.keys().count(), 5_000);
    assert_eq!(snap.find_slot(u64::MAX), None);
    assert_eq!(snap.find_slot(0), None);
}

#[test]
fn an_empty_snapshot_is_valid_and_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path(), 1, 0);
    let snap = Snapshot::open(&path).unwrap();
    snap.verify().unwrap();
    assert!(snap.is_empty());
    assert_eq!(snap.get(gtin_of(1, 0)).unwrap(), None);
}

#[test]
fn duplicates_keep_the_newest_then_the_later_row() {
    let dir = tempfile::tempdir().unwrap();
    let gtin = Gtin::parse("036000291452").unwrap();
    let other = Gtin::parse("7501031311309").unwrap();
    let row = |sku, updated| Product {
        gtin,
        sku,
        description: "Soap",
        brand: "ACME",
        department: "HOME",
        price_cents: 100,
        updated: Date::from_u32(updated).unwrap(),
    };
    let mut b = SnapshotBuilder::new(dir.path(), "dups").unwrap();
    b.add(&row("1", 20240105)).unwrap();
    b.add(&row("2", 20240301)).unwrap(); // newest
    b.add(&Product { gtin: other, ..row("9", 20200101) }).unwrap();
    b.add(&row("3", 20240110)).unwrap(); // older than "2", though later
    b.add(&Product { gtin: other, ..row("10", 20200101) }).unwrap(); // a tie: the later row wins
    let built = b.finish().unwrap();
    assert_eq!(built.stats.products, 2);
    assert_eq!(built.stats.duplicates, 3);
    assert_eq!(built.stats.duplicate_examples.len(), 3);
    let snap = built.open().unwrap();
    snap.verify().unwrap();
    assert_eq!(snap.get(gtin).unwrap().unwrap().sku, "2");
    assert_eq!(snap.get(other).unwrap().unwrap().sku, "10");
}

#[test]
fn corruption_is_caught_at_open_or_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let good = build(dir.path(), 5, 2_000);
    let bytes = fs::read(&good).unwrap();

    // A flipped byte in the records: open stays constant time and succeeds, verify catches it.
    let flipped = dir.path().join("flipped.gtin");
    let mut b = bytes.clone();
    let last = b.len() - 3;
    b[last] ^= 0x40;
    fs::write(&flipped, &b).unwrap();
    let snap = Snapshot::open(&flipped).unwrap();
    assert!(matches!(snap.verify(), Err(SnapshotError::Checksum { .. })));

    let truncated = dir.path().join("truncated.gtin");
    fs::write(&truncated, &bytes[..bytes.len() - 1]).unwrap();
    assert!(matches!(Snapshot::open(&truncated), Err(SnapshotError::Length { .. })));

    let garbage = dir.path().join("garbage.gtin");
    fs::write(&garbage, vec![7u8; 500]).unwrap();
    assert!(matches!(Snapshot::open(&garbage), Err(SnapshotError::Magic { .. })));
    let tiny = dir.path().join("tiny.gtin");
    fs::write(&tiny, b"GTIN").unwrap();
    assert!(Snapshot::open(&tiny).is_err());

    // A corrupt newer snapshot is skipped in favour of the older good one.
    let newer = dir.path().join("snapshot-29991231T235959-0001.gtin");
    fs::write(&newer, &bytes[..bytes.len() / 2]).unwrap();
    assert_eq!(open_newest(dir.path()).unwrap().unwrap().path(), good.as_path());
}

#[test]
fn store_reloads_rolls_back_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    assert!(store.current().is_none());
    assert!(matches!(store.reload(), Err(StoreError::NoSnapshot { .. })));
    assert!(matches!(store.rollback(), Err(StoreError::NoPrevious)));

    let first = build(dir.path(), 1, 100);
    assert!(matches!(store.reload().unwrap(), ReloadOutcome::Swapped { products: 100, generation: 1, .. }));
    assert!(matches!(store.reload().unwrap(), ReloadOutcome::Unchanged { generation: 1, .. }));
    let held = store.current().unwrap();

    let mut paths = vec![first];
    for (round, n) in [(2u64, 200u64), (3, 300), (4, 400)] {
        paths.push(build(dir.path(), round, n));
        match store.reload().unwrap() {
            ReloadOutcome::Swapped { products, path, .. } => {
                assert_eq!(products as u64, n);
                assert_eq!(&path, paths.last().unwrap());
            }
            other => panic!("expected a swap, got {other:?}"),
        }
        assert!(snapshot_files(dir.path()).len() <= 2, "{:?}", snapshot_files(dir.path()));
    }
    // The first snapshot was deleted while `held` still mapped it; it must still answer.
    assert!(!paths[0].exists());
    let mut p = SynthProduct::default();
    p.fill(1, 7);
    assert_eq!(held.get(p.product().gtin).unwrap().unwrap().sku, p.sku);

    let loaded = store.rollback().unwrap();
    assert_eq!(loaded.current.len(), 300);
    assert!(matches!(store.rollback(), Err(StoreError::NoPrevious)));
    let names = snapshot_files(dir.path());
    assert!(names.iter().any(|n| n.ends_with(".gtin.rolled-back")), "{names:?}");
    // The rolled-back file is set aside, so a reload keeps serving the one we rolled back to.
    assert!(matches!(store.reload().unwrap(), ReloadOutcome::Unchanged { products: 300, .. }));
}

#[test]
fn publishing_never_overwrites_and_sorts_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let a = build(dir.path(), 1, 10);
    let b = build(dir.path(), 2, 20);
    assert_ne!(a, b);
    assert_eq!(open_newest(dir.path()).unwrap().unwrap().len(), 20);
    // An abandoned builder leaves nothing behind.
    let mut builder = SnapshotBuilder::new(dir.path(), "abandoned").unwrap();
    let mut p = SynthProduct::default();
    p.fill(1, 1);
    builder.add(&p.product()).unwrap();
    drop(builder);
    let built = {
        let mut builder = SnapshotBuilder::new(dir.path(), "unpublished").unwrap();
        builder.add(&p.product()).unwrap();
        builder.finish().unwrap()
    };
    assert!(built.temp_path().exists());
    drop(built);
    assert_eq!(snapshot_files(dir.path()).len(), 2, "{:?}", snapshot_files(dir.path()));
}

#[test]
fn temporaries_of_dead_builders_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    // No process has pid 4294967; a live pid (ours) must be left alone.
    let orphan = dir.path().join(".tmp-4294967-0.records");
    let ours = dir.path().join(format!(".tmp-{}-999.records", std::process::id()));
    fs::write(&orphan, b"x").unwrap();
    fs::write(&ours, b"x").unwrap();
    build(dir.path(), 1, 10);
    assert!(!orphan.exists());
    assert!(ours.exists());
}
