//! The immutable snapshot file and its reader: what the service maps into memory and answers every lookup
//! from. Written once by [`crate::builder`], never modified in place, replaced as a whole by [`crate::store`].
//!
//! ```text
//! offset 0          header: magic "GTINSNAP", version, header length, count, section offsets and lengths,
//!                   file length, content checksum, header checksum, build time, fence stride, source
//! header_len        ⌈count/64⌉ × u64 LE  fences: every 64th key, a small index that stays in cache
//! keys_offset       count × u64 LE   canonical 14-digit GTINs as integers, strictly increasing (64-byte aligned)
//! offsets_offset    count × u64 LE   where each key's record starts, relative to records_offset
//! records_offset    records blob     see crate::record (in build order, not key order)
//! ```
//!
//! A lookup binary-searches the fences (2.2 MB for 18 million products, hot in cache under load), then the one
//! 512-byte block of 64 keys they point to, then reads one offset and one record: three cache misses at most
//! where a plain binary search over 144 MB of keys takes a dozen. Interpolation search was tried first and
//! measured slower: GTIN keys cluster by prefix, so the global key range predicts positions badly.
//!
//! `open` is constant time: it maps the file and checks the header (its own checksum, section sizes against the
//! file length) and nothing else. `verify` reads every byte: the content checksum, key order, and every record
//! decoding to the key that points at it. The sync job runs `verify` before it publishes a file.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap};

use crate::gtin::Gtin;
use crate::record::{self, Product, RecordError};

pub const MAGIC: [u8; 8] = *b"GTINSNAP";
pub const VERSION: u32 = 1;
/// Bytes of the header before the source description.
const FIXED_HEADER: usize = 96;
const HEADER_CHECKSUM_AT: usize = 72;
/// One fence per this many keys: a block of keys is 512 bytes, eight cache lines on one page.
pub const FENCE_STRIDE: u64 = 64;
/// Sections start on cache-line boundaries so that key blocks do not straddle lines needlessly.
const ALIGN: u64 = 64;
/// Far beyond any catalogue; bounds the header arithmetic so it cannot overflow.
const MAX_COUNT: u64 = 1 << 40;
const MAX_RECORDS_LEN: u64 = 1 << 50;
/// The longest source description kept in a header.
pub const MAX_SOURCE_LEN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a GTIN snapshot (bad magic)", .path.display())]
    Magic { path: PathBuf },
    #[error("{}: snapshot format version {found}, this build reads {VERSION}", .path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("{}: corrupt header: {why}", .path.display())]
    Header { path: PathBuf, why: &'static str },
    #[error("{}: file is {actual} bytes, its header says {expected}", .path.display())]
    Length { path: PathBuf, expected: u64, actual: u64 },
    #[error("{}: content checksum is {actual:016x}, header says {expected:016x}", .path.display())]
    Checksum { path: PathBuf, expected: u64, actual: u64 },
    #[error("{}: key #{index} ({key}) is not greater than the key before it", .path.display())]
    Order { path: PathBuf, index: u64, key: u64 },
    #[error("{}: fence #{index} does not match the key it indexes", .path.display())]
    Fence { path: PathBuf, index: u64 },
    #[error("{}: record #{index}: {source}", .path.display())]
    Record { path: PathBuf, index: u64, source: RecordError },
    #[error("{}: record #{index} holds key {found}, the index says {expected}", .path.display())]
    Mismatch { path: PathBuf, index: u64, expected: u64, found: u64 },
}

/// What the header of a snapshot says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub count: u64,
    pub records_len: u64,
    pub content_checksum: u64,
    /// Unix seconds.
    pub built_at: u64,
    /// Where the data came from, e.g. the export URL and its header line.
    pub source: String,
}

impl Header {
    pub fn header_len(&self) -> u64 {
        ((FIXED_HEADER + self.source.len()) as u64).next_multiple_of(ALIGN)
    }
    pub fn fence_count(&self) -> u64 {
        self.count.div_ceil(FENCE_STRIDE)
    }
    pub fn fences_offset(&self) -> u64 {
        self.header_len()
    }
    pub fn keys_offset(&self) -> u64 {
        (self.fences_offset() + 8 * self.fence_count()).next_multiple_of(ALIGN)
    }
    pub fn offsets_offset(&self) -> u64 {
        self.keys_offset() + 8 * self.count
    }
    pub fn records_offset(&self) -> u64 {
        self.offsets_offset() + 8 * self.count
    }
    pub fn file_len(&self) -> u64 {
        self.records_offset() + self.records_len
    }

    /// The header bytes, header checksum included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_len() as usize);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.header_len() as u32).to_le_bytes());
        for v in [
            self.count,
            self.keys_offset(),
            self.offsets_offset(),
            self.records_offset(),
            self.records_len,
            self.file_len(),
            self.content_checksum,
            0, // the header checksum, filled in below
            self.built_at,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.source.len() as u32).to_le_bytes());
        out.extend_from_slice(&(FENCE_STRIDE as u32).to_le_bytes());
        out.extend_from_slice(self.source.as_bytes());
        out.resize(self.header_len() as usize, 0);
        let sum = checksum(&out);
        out[HEADER_CHECKSUM_AT..HEADER_CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// Reads and checks a header against the length of the file it came from.
    pub fn parse(bytes: &[u8], actual_len: u64, path: &Path) -> Result<Header, SnapshotError> {
        let bad = |why| SnapshotError::Header { path: path.to_path_buf(), why };
        if bytes.len() < FIXED_HEADER {
            return Err(if bytes.len() >= 8 && bytes[..8] != MAGIC {
                SnapshotError::Magic { path: path.to_path_buf() }
            } else {
                bad("file is shorter than a header")
            });
        }
        if bytes[..8] != MAGIC {
            return Err(SnapshotError::Magic { path: path.to_path_buf() });
        }
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32_at(8);
        if version != VERSION {
            return Err(SnapshotError::Version { path: path.to_path_buf(), found: version });
        }
        let header_len = u32_at(12) as usize;
        let source_len = u32_at(88) as usize;
        if header_len > bytes.len() || source_len > MAX_SOURCE_LEN || header_len < FIXED_HEADER + source_len {
            return Err(bad("header length"));
        }
        let mut zeroed = bytes[..header_len].to_vec();
        zeroed[HEADER_CHECKSUM_AT..HEADER_CHECKSUM_AT + 8].fill(0);
        if checksum(&zeroed) != u64_at(HEADER_CHECKSUM_AT) {
            return Err(bad("header checksum"));
        }
        let source = std::str::from_utf8(&bytes[FIXED_HEADER..FIXED_HEADER + source_len])
            .map_err(|_| bad("source description is not UTF-8"))?;
        let header = Header {
            count: u64_at(16),
            records_len: u64_at(48),
            content_checksum: u64_at(64),
            built_at: u64_at(80),
            source: source.to_string(),
        };
        if u32_at(92) as u64 != FENCE_STRIDE {
            return Err(bad("fence stride"));
        }
        // Bounded first, so that the section arithmetic below cannot overflow; then sections must tile the file.
        if header.count > MAX_COUNT || header.records_len > MAX_RECORDS_LEN {
            return Err(bad("section sizes"));
        }
        let expected_len = header.file_len();
        if header.header_len() != header_len as u64
            || u64_at(24) != header.keys_offset()
            || u64_at(32) != header.offsets_offset()
            || u64_at(40) != header.records_offset()
            || u64_at(56) != expected_len
        {
            return Err(bad("section offsets"));
        }
        if expected_len != actual_len {
            return Err(SnapshotError::Length { path: path.to_path_buf(), expected: expected_len, actual: actual_len });
        }
        Ok(header)
    }
}

/// An opened, memory-mapped snapshot. Shared read-only between all requests.
#[derive(Debug)]
pub struct Snapshot {
    map: Mmap,
    path: PathBuf,
    header: Header,
    fences: Range<usize>,
    keys: Range<usize>,
    offsets: Range<usize>,
    records: Range<usize>,
}

impl Snapshot {
    /// Maps `path` and checks its header and section sizes. Constant time: no data is read.
    pub fn open(path: &Path) -> Result<Snapshot, SnapshotError> {
        let io_err = |source| SnapshotError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len < FIXED_HEADER as u64 {
            return Err(SnapshotError::Header { path: path.to_path_buf(), why: "file is shorter than a header" });
        }
        // SAFETY: snapshot files are written once to a temporary name, renamed into place and never written
        // again (the builder makes a new file for every generation), so the mapped bytes cannot change under us.
        // A process that ignored that contract could make reads see torn data, never a memory-unsafe access:
        // every read below is bounds-checked against the mapping's length.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        // The length the header is checked against is the mapping's own, so no read can fall outside it.
        let header = Header::parse(&map, map.len() as u64, path)?;
        let usize_of = |v: u64| {
            usize::try_from(v)
                .map_err(|_| SnapshotError::Header { path: path.to_path_buf(), why: "too large for this platform" })
        };
        let fences_start = usize_of(header.fences_offset())?;
        let fences = fences_start..fences_start + usize_of(header.fence_count() * 8)?;
        let keys = usize_of(header.keys_offset())?..usize_of(header.offsets_offset())?;
        let offsets = keys.end..usize_of(header.records_offset())?;
        let records = offsets.end..usize_of(header.file_len())?;
        // Records are read one at a time from anywhere in the blob: read-ahead would only evict useful pages.
        // The index sections keep the default, so that faulting them in maps neighbouring pages too.
        let _ = map.advise_range(Advice::Random, records.start, records.len());
        // A lookup touches three or four pages scattered over a gigabyte; with 4 KB pages nearly every one is a
        // TLB miss, which costs more than the cache miss in a VM. Where the kernel caches the file in large
        // folios (ext4 since Linux 6.16, XFS) and THP is in `madvise` mode, this lets it map 2 MB at a time.
        #[cfg(target_os = "linux")]
        let _ = map.advise(Advice::HugePage);
        Ok(Snapshot { map, path: path.to_path_buf(), header, fences, keys, offsets, records })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn len(&self) -> usize {
        self.keys.len() / 8
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Touches every page of the index sections (fences, keys, offsets: 16 bytes per product) so that lookups
    /// after a swap do not pay a page fault each. Meant for a background thread; returns the pages touched.
    pub fn warm_index(&self) -> usize {
        let index = self.fences.start..self.records.start;
        let _ = self.map.advise_range(Advice::WillNeed, index.start, index.len());
        let mut sum = 0u8;
        let mut pages = 0;
        for at in index.step_by(4096) {
            sum = sum.wrapping_add(self.map[at]);
            pages += 1;
        }
        std::hint::black_box(sum);
        pages
    }

    /// Bytes mapped: what the page cache may hold for this snapshot.
    pub fn mapped_len(&self) -> usize {
        self.map.len()
    }

    /// Looks a product up by GTIN. Lock-free and allocation-free unless the record is corrupt.
    pub fn get(&self, gtin: Gtin) -> Result<Option<Product<'_>>, SnapshotError> {
        match self.search(gtin.key(), true) {
            Some(index) => self.product_at(index).map(Some),
            None => Ok(None),
        }
    }

    /// Where `key` sits in the sorted keys: the last fence not above it names a block of at most 64 keys,
    /// which is then binary-searched.
    pub fn position(&self, key: u64) -> Option<usize> {
        self.search(key, false)
    }

    /// `position`, optionally also starting the loads of the block's offsets (for a lookup that goes on to
    /// read the record): the key block and the offset block then arrive in parallel, one miss instead of two.
    fn search(&self, key: u64, prefetch_offsets: bool) -> Option<usize> {
        let fences = &self.map[self.fences.clone()];
        let m = fences.len() / 8;
        if m == 0 || key < read_u64(fences, 0) {
            return None;
        }
        // Branch-free: the loop always runs log2(m) times and the compiler turns the step into a conditional
        // move, so the CPU never mispredicts on random keys.
        let (mut base, mut len) = (0usize, m);
        while len > 1 {
            let half = len / 2;
            if read_u64(fences, base + half) <= key {
                base += half;
            }
            len -= half;
        }
        let keys = &self.map[self.keys.clone()];
        let start = base * FENCE_STRIDE as usize;
        let end = (start + FENCE_STRIDE as usize).min(keys.len() / 8);
        prefetch(&keys[start * 8..end * 8]);
        if prefetch_offsets {
            prefetch(&self.map[self.offsets.clone()][start * 8..end * 8]);
        }
        binary_search(keys, key, start, end)
    }

    /// Plain binary search over all keys, kept for the benchmark that compares the two.
    pub fn position_binary(&self, key: u64) -> Option<usize> {
        let keys = &self.map[self.keys.clone()];
        binary_search(keys, key, 0, keys.len() / 8)
    }

    /// The key at sorted position `index`.
    pub fn key_at(&self, index: usize) -> Option<u64> {
        (index < self.len()).then(|| read_u64(&self.map[self.keys.clone()], index))
    }

    /// Decodes the product at sorted position `index`.
    pub fn product_at(&self, index: usize) -> Result<Product<'_>, SnapshotError> {
        let record_err = |source| SnapshotError::Record { path: self.path.clone(), index: index as u64, source };
        if index >= self.len() {
            return Err(record_err(RecordError::Truncated("index")));
        }
        let offset = read_u64(&self.map[self.offsets.clone()], index);
        let blob = &self.map[self.records.clone()];
        let start = usize::try_from(offset).ok().filter(|&o| o < blob.len());
        let start = start.ok_or_else(|| record_err(RecordError::Truncated("offset")))?;
        record::decode(&blob[start..]).map_err(record_err)
    }

    /// Reads the whole file: content checksum, strictly increasing keys, every record decoding to its own key.
    pub fn verify(&self) -> Result<(), SnapshotError> {
        // Everything after the header, padding included.
        let start = self.fences.start;
        let actual = checksum(&self.map[start..]);
        if actual != self.header.content_checksum {
            return Err(SnapshotError::Checksum {
                path: self.path.clone(),
                expected: self.header.content_checksum,
                actual,
            });
        }
        let mut previous: Option<u64> = None;
        for index in 0..self.len() {
            let key = read_u64(&self.map[self.keys.clone()], index);
            if previous.is_some_and(|p| p >= key) {
                return Err(SnapshotError::Order { path: self.path.clone(), index: index as u64, key });
            }
            previous = Some(key);
            let fence = index / FENCE_STRIDE as usize;
            if index % FENCE_STRIDE as usize == 0 && read_u64(&self.map[self.fences.clone()], fence) != key {
                return Err(SnapshotError::Fence { path: self.path.clone(), index: fence as u64 });
            }
            let found = self.product_at(index)?.gtin.key();
            if found != key {
                return Err(SnapshotError::Mismatch {
                    path: self.path.clone(),
                    index: index as u64,
                    expected: key,
                    found,
                });
            }
        }
        Ok(())
    }
}

/// Reads the `index`th little-endian u64 of `bytes`. Callers index below `bytes.len() / 8`, which the header
/// check at open made a whole number of keys.
#[inline]
fn read_u64(bytes: &[u8], index: usize) -> u64 {
    let at = index * 8;
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Asks the CPU to start loading `bytes` into cache without waiting for them: the eight lines of a key block
/// then cost one memory round trip instead of the three a binary search would take one after the other.
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch is a hint: it never faults, never writes, and produces no value. The pointer comes
        // from a live slice. SSE, which provides the instruction, is part of the x86_64 baseline.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Binary search for `key` in positions `lo..hi` of the sorted keys.
fn binary_search(keys: &[u8], key: u64, mut lo: usize, mut hi: usize) -> Option<usize> {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match read_u64(keys, mid).cmp(&key) {
            std::cmp::Ordering::Equal => return Some(mid),
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    None
}

/// A fast 64-bit checksum for catching torn or corrupted files (not an adversarial hash). Four independent
/// lanes keep the multiplier busy; each step is a bijection of the lane state for a given input word, so any
/// single changed word changes the result.
pub fn checksum(bytes: &[u8]) -> u64 {
    const K1: u64 = 0x9e37_79b9_7f4a_7c15;
    const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    const K3: u64 = 0x1656_67b1_9e37_79f9;
    #[inline(always)]
    fn step(lane: u64, word: u64) -> u64 {
        (lane ^ word).wrapping_mul(K2).rotate_left(29).wrapping_add(K1)
    }
    let mut lanes = [K1, K2, K3, K1 ^ K3];
    let mut chunks = bytes.chunks_exact(32);
    for chunk in &mut chunks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane = step(*lane, read_u64(chunk, i));
        }
    }
    let tail = chunks.remainder();
    for (i, piece) in tail.chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..piece.len()].copy_from_slice(piece);
        lanes[i] = step(lanes[i], u64::from_le_bytes(word));
    }
    let mut h = (bytes.len() as u64).wrapping_mul(K3);
    for lane in lanes {
        h = (h ^ lane.wrapping_mul(K1)).rotate_left(31).wrapping_mul(K2);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(K3);
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_sees_every_single_byte_change_and_length() {
        let data: Vec<u8> = (0..100u32).map(|i| (i * 7) as u8).collect();
        let base = checksum(&data);
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0x10;
            assert_ne!(checksum(&d), base, "byte {i}");
        }
        assert_ne!(checksum(&data[..99]), base);
        assert_ne!(checksum(&[]), checksum(&[0]));
        assert_ne!(checksum(&[0; 32]), checksum(&[0; 64]));
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = Header {
            count: 3,
            records_len: 100,
            content_checksum: 42,
            built_at: 1_700_000_000,
            source: "test ü".into(),
        };
        let bytes = h.to_bytes();
        assert_eq!(bytes.len() as u64, h.header_len());
        assert_eq!(h.header_len() % 64, 0);
        assert_eq!(h.keys_offset() % 64, 0);
        assert_eq!(h.fence_count(), 1);
        let p = Path::new("x.gtin");
        assert_eq!(Header::parse(&bytes, h.file_len(), p).unwrap(), h);
        assert!(matches!(Header::parse(&bytes, h.file_len() + 1, p), Err(SnapshotError::Length { .. })));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(Header::parse(&b, h.file_len(), p).is_err(), "flipped byte {i} accepted");
        }
        assert!(matches!(Header::parse(b"GTINSNAP", 8, p), Err(SnapshotError::Header { .. })));
        assert!(matches!(Header::parse(b"NOTASNAPSHOT", 12, p), Err(SnapshotError::Magic { .. })));
    }
}
