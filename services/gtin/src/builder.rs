//! Writes a new snapshot file: the only code that creates one. The sync job feeds it products as it reads the
//! export; the store later maps the published file.
//!
//! It is built for 18 million products without holding them in memory: each product is encoded and appended
//! to a temporary records file as it arrives, and only a `(hash, offset)` pair (16 bytes) is kept per product.
//! `finish` sorts the pairs by key hash, resolves duplicate keys (newest `updated` wins, the later row on a tie,
//! the rule of the legacy export), then streams the slot table (see [`crate::snapshot`]) into a temporary
//! snapshot file, copying each record from the records file into its slot, checksums it and fsyncs it.
//! `publish` then links it into place under its final name, which never overwrites a file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::{unix_now, UtcTime};
use crate::gtin::Gtin;
use crate::record::{self, Product, RecordError};
use crate::snapshot::{
    self, checksum, home_slot, key_hash, overflow_slot, Header, Snapshot, SnapshotError, EMPTY_KEY, MAX_SLOT_SIZE,
    MAX_SOURCE_LEN, MIN_SLOT_SIZE, SLOT_GRANULE,
};

/// How many duplicate keys are kept as examples for the sync report.
const DUPLICATE_EXAMPLES: usize = 5;
/// Home slots per product, as a fraction: a load factor of 0.8 keeps a key within a slot or two of its home
/// on average (about 2 slots, against 0.5 at 0.5 and 4.5 at 0.9), for a table a quarter larger than the data.
const SLOTS_PER_PRODUCT: (u64, u64) = (5, 4);
/// The slot size is the smallest that holds this share of the records (in percent); the rest overflow and
/// cost a lookup a second memory read.
const INLINE_PERCENT: u64 = 99;
/// The snapshot is written in pieces of this size at offsets that are multiples of it: a buffered write of a
/// whole aligned 2 MB piece lets the page cache keep it as one 2 MB folio, which the service can then map with
/// a single TLB entry (see `Snapshot::open`). Smaller writes leave the file in small folios until it is evicted.
const WRITE_CHUNK: usize = 2 << 20;
/// Records are copied in hash order, i.e. from random places in the records file: loads are started this many
/// entries ahead so that they overlap.
const COPY_LOOKAHEAD: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("product {gtin}: {source}")]
    Record { gtin: Gtin, source: RecordError },
    #[error("source description is {0} bytes, more than {MAX_SOURCE_LEN}")]
    SourceTooLong(usize),
    #[error("records file {}: {source}", .path.display())]
    Reread { path: PathBuf, source: RecordError },
    #[error("{0}")]
    TooLarge(&'static str),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    move |source| BuildError::Io { path: path.to_path_buf(), source }
}

/// A product that lost to another row with the same GTIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub gtin: Gtin,
    pub kept_updated: u32,
    pub dropped_updated: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildStats {
    pub products: u64,
    pub duplicates: u64,
    pub duplicate_examples: Vec<Duplicate>,
}

/// A file that is deleted when dropped unless it was kept.
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn new(dir: &Path, what: &str) -> TempFile {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        // A leading dot keeps temporaries out of the `snapshot-*.gtin` pattern the store scans.
        TempFile { path: dir.join(format!(".tmp-{}-{n}.{what}", std::process::id())), armed: true }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Collects products into a new snapshot.
pub struct SnapshotBuilder {
    dir: PathBuf,
    source: String,
    blob_file: TempFile,
    blob: BufWriter<File>,
    blob_len: u64,
    entries: Vec<(u64, u64)>,
    /// How many records have each length (the last bucket: longer than the largest slot).
    lengths: Vec<u64>,
    scratch: Vec<u8>,
}

impl SnapshotBuilder {
    /// Starts a snapshot in `dir` (created if missing). `source` is stored in the header, e.g. the export URL.
    pub fn new(dir: &Path, source: &str) -> Result<SnapshotBuilder, BuildError> {
        if source.len() > MAX_SOURCE_LEN {
            return Err(BuildError::SourceTooLong(source.len()));
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        remove_orphans(dir);
        let blob_file = TempFile::new(dir, "records");
        // Read back later, for deduplication and the final copy.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&blob_file.path)
            .map_err(io_err(&blob_file.path))?;
        Ok(SnapshotBuilder {
            dir: dir.to_path_buf(),
            source: source.to_string(),
            blob: BufWriter::with_capacity(1 << 20, file),
            blob_file,
            blob_len: 0,
            entries: Vec::new(),
            lengths: vec![0; MAX_SLOT_SIZE as usize + 2],
            scratch: Vec::with_capacity(256),
        })
    }

    /// Reserves room for `n` products, when the caller knows roughly how many are coming.
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
    }

    /// Rows added so far, duplicates included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn add(&mut self, product: &Product<'_>) -> Result<(), BuildError> {
        self.scratch.clear();
        record::encode(product, &mut self.scratch)
            .map_err(|source| BuildError::Record { gtin: product.gtin, source })?;
        self.blob.write_all(&self.scratch).map_err(io_err(&self.blob_file.path))?;
        self.entries.push((key_hash(product.gtin.key()), self.blob_len));
        self.blob_len += self.scratch.len() as u64;
        self.lengths[self.scratch.len().min(MAX_SLOT_SIZE as usize + 1)] += 1;
        Ok(())
    }

    /// Writes the snapshot to a temporary file in the data directory, fsynced. Nothing is published yet.
    pub fn finish(self) -> Result<BuiltSnapshot, BuildError> {
        let SnapshotBuilder { dir, source, blob_file, blob, blob_len, mut entries, lengths, .. } = self;
        let blob_path = blob_file.path.clone();
        let blob = blob.into_inner().map_err(|e| BuildError::Io { path: blob_path.clone(), source: e.into_error() })?;

        // The hash is a bijection of the key, so equal keys end up next to each other, in row order because the
        // offsets grow with the row number.
        entries.sort_unstable();
        let mut stats = BuildStats::default();
        dedup(&mut entries, &blob, &blob_path, &mut stats)?;
        stats.products = entries.len() as u64;

        let count = entries.len() as u64;
        let home_range = (count * SLOTS_PER_PRODUCT.0).div_ceil(SLOTS_PER_PRODUCT.1);
        let mut header = Header {
            count,
            slot_count: 0,
            home_range,
            slot_size: choose_slot_size(&lengths),
            overflow_len: 0,
            content_checksum: 0,
            built_at: unix_now(),
            source,
        };
        let out_file = TempFile::new(&dir, "snapshot");
        let out_path = out_file.path.clone();
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).open(&out_path).map_err(io_err(&out_path))?;
        let mut out = ChunkWriter { file, buf: Vec::with_capacity(WRITE_CHUNK), path: &out_path };
        // A placeholder of the right length: the real header, with the slot count and checksums, is written last.
        out.put(&header.to_bytes())?;

        let blob_map = map_records(&blob, blob_len, &blob_path)?;
        let blob_bytes: &[u8] = blob_map.as_deref().unwrap_or(&[]);
        let reread = |source| BuildError::Reread { path: blob_path.clone(), source };
        let record_at = |offset: u64| -> Result<&[u8], BuildError> {
            let record = usize::try_from(offset).ok().and_then(|o| blob_bytes.get(o..));
            let record = record.ok_or(reread(RecordError::Truncated("offset")))?;
            let len = record::encoded_len(record).map_err(reread)?;
            Ok(&record[..len])
        };

        let size = header.slot_size as usize;
        let mut slot = vec![0u8; size];
        let mut empty = vec![0u8; size];
        empty[..8].copy_from_slice(&EMPTY_KEY.to_le_bytes());
        let mut overflowed: Vec<(u64, usize)> = Vec::new();
        let mut overflow_len = 0u64;
        // Each entry goes to its home slot or, when that is taken, to the slot after the previous entry: entries
        // come in hash order, so the table is sorted by hash with no gap between a key and its home slot.
        let mut next = 0u64;
        for (i, &(hash, offset)) in entries.iter().enumerate() {
            if let Some(&(_, ahead)) = entries.get(i + COPY_LOOKAHEAD) {
                if let Some(bytes) = usize::try_from(ahead).ok().and_then(|a| blob_bytes.get(a..)) {
                    snapshot::prefetch(&bytes[..bytes.len().min(128)]);
                }
            }
            let home = home_slot(hash, home_range);
            while next < home {
                out.put(&empty)?;
                next += 1;
            }
            let record = record_at(offset)?;
            if record.len() <= size {
                slot[..record.len()].copy_from_slice(record);
                slot[record.len()..].fill(0);
            } else {
                let key = record::decode_key_and_date(record).map_err(reread)?.0;
                let len = u32::try_from(record.len()).map_err(|_| BuildError::TooLarge("record over 4 GiB"))?;
                overflow_slot(key, overflow_len, len, &mut slot);
                overflowed.push((offset, record.len()));
                overflow_len += record.len() as u64;
            }
            out.put(&slot)?;
            next += 1;
        }
        while next < home_range {
            out.put(&empty)?;
            next += 1;
        }
        header.slot_count = next;
        for &(offset, _) in &overflowed {
            out.put(record_at(offset)?)?;
        }
        header.overflow_len = overflow_len;
        drop(entries);
        drop(blob_map);
        drop(blob);
        drop(blob_file);
        let file = out.finish()?;

        header.content_checksum = content_checksum(&file, &header, &out_path)?;
        file.write_all_at(&header.to_bytes(), 0).map_err(io_err(&out_path))?;
        file.sync_all().map_err(io_err(&out_path))?;
        Ok(BuiltSnapshot { dir, file: out_file, header, stats })
    }
}

/// The smallest slot size that holds [`INLINE_PERCENT`] of the records whose lengths are counted in `lengths`.
fn choose_slot_size(lengths: &[u64]) -> u32 {
    let total: u64 = lengths.iter().sum();
    let mut fit = 0u64;
    for (len, &n) in lengths.iter().enumerate().take(MAX_SLOT_SIZE as usize + 1) {
        fit += n;
        let len = len as u32;
        if len >= MIN_SLOT_SIZE && len % SLOT_GRANULE == 0 && fit * 100 >= total * INLINE_PERCENT {
            return len;
        }
    }
    MAX_SLOT_SIZE
}

/// Maps the temporary records file for the copy into slots, page tables filled up front: the copy reads it in
/// hash order, all over the file, and a prefetch of an unmapped page would do nothing.
fn map_records(blob: &File, len: u64, path: &Path) -> Result<Option<memmap2::Mmap>, BuildError> {
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: the records file is this builder's own temporary (a leading-dot name no other process opens), and
    // nothing writes to it while this read-only mapping is alive.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(blob) }.map_err(io_err(path))?;
    Ok(Some(map))
}

/// Writes a file front to back in whole [`WRITE_CHUNK`] pieces at aligned offsets.
struct ChunkWriter<'a> {
    file: File,
    buf: Vec<u8>,
    path: &'a Path,
}

impl ChunkWriter<'_> {
    fn put(&mut self, mut bytes: &[u8]) -> Result<(), BuildError> {
        while !bytes.is_empty() {
            let take = bytes.len().min(WRITE_CHUNK - self.buf.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == WRITE_CHUNK {
                self.file.write_all(&self.buf).map_err(io_err(self.path))?;
                self.buf.clear();
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<File, BuildError> {
        self.file.write_all(&self.buf).map_err(io_err(self.path))?;
        Ok(self.file)
    }
}

/// Keeps one entry per key: the newest `updated`, the later row (higher offset) on a tie. Entries are sorted
/// `(hash, offset)` pairs.
fn dedup(
    entries: &mut Vec<(u64, u64)>,
    blob: &File,
    blob_path: &Path,
    stats: &mut BuildStats,
) -> Result<(), BuildError> {
    let key_and_date = |offset: u64| -> Result<(u64, u32), BuildError> {
        let mut buf = [0u8; 12];
        blob.read_exact_at(&mut buf, offset).map_err(io_err(blob_path))?;
        record::decode_key_and_date(&buf).map_err(|source| BuildError::Reread { path: blob_path.to_path_buf(), source })
    };
    let mut write = 0usize;
    let mut read = 0usize;
    while read < entries.len() {
        let hash = entries[read].0;
        let mut end = read + 1;
        while end < entries.len() && entries[end].0 == hash {
            end += 1;
        }
        let mut winner = entries[read];
        if end - read > 1 {
            let (key, mut best) = key_and_date(winner.1)?;
            for &candidate in &entries[read + 1..end] {
                let updated = key_and_date(candidate.1)?.1;
                let (kept, dropped) = if updated >= best { (updated, best) } else { (best, updated) };
                if updated >= best {
                    winner = candidate;
                    best = updated;
                }
                stats.duplicates += 1;
                if stats.duplicate_examples.len() < DUPLICATE_EXAMPLES {
                    if let Some(gtin) = Gtin::from_key(key) {
                        stats.duplicate_examples.push(Duplicate { gtin, kept_updated: kept, dropped_updated: dropped });
                    }
                }
            }
        }
        entries[write] = winner;
        write += 1;
        read = end;
    }
    entries.truncate(write);
    Ok(())
}

fn content_checksum(file: &File, header: &Header, path: &Path) -> Result<u64, BuildError> {
    // SAFETY: the file is our own temporary, not yet visible under a snapshot name, and nothing writes to it
    // while this read-only mapping is alive.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(io_err(path))?;
    let _ = map.advise(memmap2::Advice::Sequential);
    let start = header.header_len() as usize;
    let content = map.get(start..).ok_or_else(|| BuildError::Io {
        path: path.to_path_buf(),
        source: io::Error::other("snapshot shorter than its header"),
    })?;
    Ok(checksum(content))
}

/// A complete snapshot under a temporary name. Deleted when dropped unless published.
#[derive(Debug)]
pub struct BuiltSnapshot {
    dir: PathBuf,
    file: TempFile,
    pub header: Header,
    pub stats: BuildStats,
}

impl BuiltSnapshot {
    pub fn temp_path(&self) -> &Path {
        &self.file.path
    }

    /// Opens the temporary file, to verify it before publishing.
    pub fn open(&self) -> Result<Snapshot, SnapshotError> {
        Snapshot::open(&self.file.path)
    }

    /// Gives the file its final name `snapshot-<yyyymmddThhmmss>-<seq>.gtin`, never replacing an existing file,
    /// and fsyncs the directory so the name survives a crash.
    pub fn publish(mut self) -> Result<PathBuf, BuildError> {
        let stamp = UtcTime::from_unix(self.header.built_at).compact();
        let mut seq = next_seq(&self.dir, &stamp).map_err(io_err(&self.dir))?;
        loop {
            let target = self.dir.join(snapshot_file_name(&stamp, seq));
            // A hard link fails instead of overwriting, unlike rename: two builders can never clobber each other.
            match fs::hard_link(&self.file.path, &target) {
                Ok(()) => {
                    fs::remove_file(&self.file.path).map_err(io_err(&self.file.path))?;
                    self.file.armed = false;
                    File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err(&self.dir))?;
                    return Ok(target);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => seq += 1,
                Err(e) => return Err(BuildError::Io { path: target, source: e }),
            }
        }
    }
}

/// Deletes temporaries left by builders that died without cleaning up (a killed sync), recognised by a
/// process id in their name that no longer runs. Best effort: a failure only leaves the file behind.
fn remove_orphans(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(".tmp-")).and_then(|n| n.split('-').next()) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid).exists();
        if !alive && pid.bytes().all(|b| b.is_ascii_digit()) {
            match fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %entry.path().display(), "removed a temporary left by a dead builder"),
                Err(e) => tracing::warn!(file = %entry.path().display(), error = %e, "could not remove an orphan"),
            }
        }
    }
}

pub fn snapshot_file_name(stamp: &str, seq: u32) -> String {
    format!("snapshot-{stamp}-{seq:04}.gtin")
}

/// `(stamp, seq)` of a published snapshot's file name; `None` for any other file. Sorting by it sorts by age.
pub fn parse_snapshot_file_name(name: &str) -> Option<(String, u32)> {
    let rest = name.strip_prefix("snapshot-")?.strip_suffix(".gtin")?;
    let (stamp, seq) = rest.rsplit_once('-')?;
    let stamp_ok = stamp.len() == 15
        && stamp.bytes().enumerate().all(|(i, b)| if i == 8 { b == b'T' } else { b.is_ascii_digit() });
    let seq = seq.parse().ok().filter(|_| stamp_ok)?;
    Some((stamp.to_string(), seq))
}

/// One more than the highest sequence number already used with `stamp`, so names keep sorting by age even
/// after older files were deleted.
fn next_seq(dir: &Path, stamp: &str) -> io::Result<u32> {
    let mut next = 1;
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some((s, seq)) = name.to_str().and_then(parse_snapshot_file_name) {
            if s == stamp {
                next = next.max(seq.saturating_add(1));
            }
        }
    }
    Ok(next)
}
