//! The immutable snapshot file and its reader: what the service maps into memory and answers every lookup
//! from. Written once by [`crate::builder`], never modified in place, replaced as a whole by [`crate::store`].
//!
//! ```text
//! offset 0          header: magic "GTINSNAP", version 2, header length, count, slot count, home range,
//!                   slot size, section offsets and lengths, file length, content checksum, header
//!                   checksum, build time, source
//! slots_offset      slot_count × slot_size bytes: a hash table in which every product's whole record sits
//!                   in its slot (64-byte aligned)
//! overflow_offset   records too long for a slot, pointed at from their slot
//! ```
//!
//! A key's home slot is `hash(key) × home_range / 2^64`. Entries are placed in increasing hash order, each at
//! its home slot or just after the entry before it (linear probing with the table sorted by hash, which is what
//! Robin Hood insertion converges to). A lookup therefore reads a short run of consecutive slots from the home
//! slot on, and stops at the key, at an empty slot, or at a larger hash. The slot that holds the key also holds
//! its record, so finding the key and reading the product is one burst of adjacent cache lines, started with a
//! prefetch, instead of the fence, key block, offset and record a sorted key array needs one after the other.
//! The slot size is chosen per file by the builder so that nearly every record fits (see `builder`); the rest
//! cost a second read in the overflow section.
//!
//! `open` is constant time: it maps the file and checks the header (its own checksum, section sizes against the
//! file length) and nothing else. `verify` reads every byte: the content checksum, the slot order, every record
//! decoding to the key of its slot, and every key reachable from its home slot. The sync job runs `verify`
//! before it publishes a file.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap};

use crate::gtin::Gtin;
use crate::record::{self, Product, RecordError};

pub const MAGIC: [u8; 8] = *b"GTINSNAP";
/// 1: sorted keys, fences and an offset array. 2: records inline in hash-ordered slots.
pub const VERSION: u32 = 2;
/// Bytes of the header before the source description.
const FIXED_HEADER: usize = 112;
const HEADER_CHECKSUM_AT: usize = 80;
/// Sections start on cache-line boundaries so that a slot of 64 bytes is exactly one line.
const ALIGN: u64 = 64;
/// Far beyond any catalogue; bounds the header arithmetic so it cannot overflow.
const MAX_COUNT: u64 = 1 << 40;
const MAX_OVERFLOW_LEN: u64 = 1 << 50;
/// The longest source description kept in a header.
pub const MAX_SOURCE_LEN: usize = 4096;
/// Slot sizes are multiples of this, between the two bounds: the smallest holds an overflow pointer.
pub const SLOT_GRANULE: u32 = 16;
pub const MIN_SLOT_SIZE: u32 = 32;
pub const MAX_SLOT_SIZE: u32 = 1024;
/// The key of an empty slot: above every 14-digit GTIN, so no lookup ever matches it.
pub const EMPTY_KEY: u64 = u64::MAX;
/// In place of a record's date (at most 99991231): the record lives in the overflow section.
pub const OVERFLOW_MARK: u32 = u32::MAX;
/// Bytes fetched at once from the home slot on: most keys sit within a slot or two of home.
const PROBE_PREFETCH: usize = 192;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a GTIN snapshot (bad magic)", .path.display())]
    Magic { path: PathBuf },
    #[error("{}: snapshot format version {found}, this build reads only version {VERSION}; rebuild it with sync", .path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("{}: corrupt header: {why}", .path.display())]
    Header { path: PathBuf, why: &'static str },
    #[error("{}: file is {actual} bytes, its header says {expected}", .path.display())]
    Length { path: PathBuf, expected: u64, actual: u64 },
    #[error("{}: content checksum is {actual:016x}, header says {expected:016x}", .path.display())]
    Checksum { path: PathBuf, expected: u64, actual: u64 },
    #[error("{}: slot #{index} (key {key}) is out of hash order or cannot be reached from its home slot", .path.display())]
    Order { path: PathBuf, index: u64, key: u64 },
    #[error("{}: {found} occupied slots, the header says {expected} products", .path.display())]
    Count { path: PathBuf, expected: u64, found: u64 },
    #[error("{}: slot #{index}: {source}", .path.display())]
    Record { path: PathBuf, index: u64, source: RecordError },
    #[error("{}: slot #{index} holds key {found}, its slot says {expected}", .path.display())]
    Mismatch { path: PathBuf, index: u64, expected: u64, found: u64 },
}

/// What the header of a snapshot says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Products, i.e. occupied slots.
    pub count: u64,
    /// Slots in the table, at least `home_range`: the last entries may be pushed past the home range.
    pub slot_count: u64,
    /// Home slots are spread over `0..home_range`.
    pub home_range: u64,
    pub slot_size: u32,
    pub overflow_len: u64,
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
    pub fn slots_offset(&self) -> u64 {
        self.header_len()
    }
    pub fn slots_len(&self) -> u64 {
        self.slot_count * u64::from(self.slot_size)
    }
    pub fn overflow_offset(&self) -> u64 {
        self.slots_offset() + self.slots_len()
    }
    pub fn file_len(&self) -> u64 {
        self.overflow_offset() + self.overflow_len
    }

    /// The header bytes, header checksum included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_len() as usize);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.header_len() as u32).to_le_bytes());
        for v in [
            self.count,
            self.slot_count,
            self.home_range,
            self.slots_offset(),
            self.overflow_offset(),
            self.overflow_len,
            self.file_len(),
            self.content_checksum,
            0, // the header checksum, filled in below
            self.built_at,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.slot_size.to_le_bytes());
        out.extend_from_slice(&(self.source.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0u8; 8]);
        out.extend_from_slice(self.source.as_bytes());
        out.resize(self.header_len() as usize, 0);
        let sum = checksum(&out);
        out[HEADER_CHECKSUM_AT..HEADER_CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// Reads and checks a header against the length of the file it came from.
    pub fn parse(bytes: &[u8], actual_len: u64, path: &Path) -> Result<Header, SnapshotError> {
        let bad = |why| SnapshotError::Header { path: path.to_path_buf(), why };
        if bytes.len() >= 8 && bytes[..8] != MAGIC {
            return Err(SnapshotError::Magic { path: path.to_path_buf() });
        }
        // The version comes before any other check, so that a file of another format (whose header may be
        // shorter or laid out differently) is named as such instead of as corrupt.
        if bytes.len() < 12 {
            return Err(bad("file is shorter than a header"));
        }
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let version = u32_at(8);
        if version != VERSION {
            return Err(SnapshotError::Version { path: path.to_path_buf(), found: version });
        }
        if bytes.len() < FIXED_HEADER {
            return Err(bad("file is shorter than a header"));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let header_len = u32_at(12) as usize;
        let source_len = u32_at(100) as usize;
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
            slot_count: u64_at(24),
            home_range: u64_at(32),
            overflow_len: u64_at(56),
            content_checksum: u64_at(72),
            built_at: u64_at(88),
            slot_size: u32_at(96),
            source: source.to_string(),
        };
        let size_ok =
            (MIN_SLOT_SIZE..=MAX_SLOT_SIZE).contains(&header.slot_size) && header.slot_size % SLOT_GRANULE == 0;
        if !size_ok {
            return Err(bad("slot size"));
        }
        // Bounded first, so that the section arithmetic below cannot overflow.
        if header.slot_count > MAX_COUNT || header.overflow_len > MAX_OVERFLOW_LEN {
            return Err(bad("section sizes"));
        }
        // A lookup indexes slots from its home slot on, so every home slot must exist, and there must be room for
        // every product.
        if header.count > header.slot_count
            || header.home_range > header.slot_count
            || (header.home_range == 0) != (header.slot_count == 0)
        {
            return Err(bad("slot counts"));
        }
        let expected_len = header.file_len();
        if header.header_len() != header_len as u64
            || u64_at(40) != header.slots_offset()
            || u64_at(48) != header.overflow_offset()
            || u64_at(64) != expected_len
        {
            return Err(bad("section offsets"));
        }
        if expected_len != actual_len {
            return Err(SnapshotError::Length { path: path.to_path_buf(), expected: expected_len, actual: actual_len });
        }
        Ok(header)
    }
}

/// The 64-bit mix that orders the slots. A bijection (xor-shifts and odd multipliers each are), so two keys
/// never share a hash and the hash order is a total order on keys. Not adversarial: keys come from our export.
#[inline]
pub fn key_hash(key: u64) -> u64 {
    let mut z = key ^ 0x5851_f42d_4c95_7f2d;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The slot a hash would occupy in an empty table: monotone in the hash, so the table is sorted by it.
#[inline]
pub fn home_slot(hash: u64, home_range: u64) -> u64 {
    ((u128::from(hash) * u128::from(home_range)) >> 64) as u64
}

/// An opened, memory-mapped snapshot. Shared read-only between all requests.
#[derive(Debug)]
pub struct Snapshot {
    map: Mmap,
    path: PathBuf,
    header: Header,
    slots: Range<usize>,
    overflow: Range<usize>,
    slot_size: usize,
    slot_count: usize,
}

/// Per-file figures of the slot table, for the benchmark report (a full scan, not for the serving path).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotStats {
    pub slot_size: u32,
    pub slots: u64,
    pub products: u64,
    pub overflowed: u64,
    /// How far keys sit past their home slot.
    pub mean_displacement: f64,
    pub max_displacement: u64,
}

impl Snapshot {
    /// Maps `path` and checks its header and section sizes. Constant time: no data is read.
    pub fn open(path: &Path) -> Result<Snapshot, SnapshotError> {
        let io_err = |source| SnapshotError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len < 12 {
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
        let slots = usize_of(header.slots_offset())?..usize_of(header.overflow_offset())?;
        let overflow = slots.end..usize_of(header.file_len())?;
        let slot_size = header.slot_size as usize;
        let slot_count = usize_of(header.slot_count)?;
        // Every lookup lands somewhere random in the file: read-ahead around a fault would only evict useful
        // pages. One call for the whole mapping, so that the kernel keeps it one area that can be mapped in
        // 2 MB pages throughout.
        let _ = map.advise(Advice::Random);
        // With 4 KB pages nearly every lookup is a TLB miss, and under virtualisation the page walk costs as
        // much as the cache miss itself. The builder writes the file in aligned 2 MB pieces so the page cache
        // holds it in 2 MB folios (Linux 6.16 and later on ext4; XFS earlier); with THP in `madvise` mode this
        // lets the kernel map those folios whole (`FilePmdMapped` in smaps). Elsewhere it is a no-op.
        #[cfg(target_os = "linux")]
        let _ = map.advise(Advice::HugePage);
        Ok(Snapshot { map, path: path.to_path_buf(), header, slots, overflow, slot_size, slot_count })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Products in the snapshot.
    pub fn len(&self) -> usize {
        self.header.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }

    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Touches every page of the slot table so that lookups after a swap do not pay a page fault each. Meant
    /// for a background thread; returns the pages touched. The overflow section is left to fault on demand.
    pub fn warm_index(&self) -> usize {
        let index = self.slots.clone();
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

    /// Looks a product up by GTIN: finds its slot and decodes the record in it. Lock-free and allocation-free
    /// unless the record is corrupt.
    pub fn get(&self, gtin: Gtin) -> Result<Option<Product<'_>>, SnapshotError> {
        match self.find_slot(gtin.key()) {
            Some(slot) => self.product_in_slot(slot).map(Some),
            None => Ok(None),
        }
    }

    /// Starts loading the slots `gtin` would be found in, without waiting: a caller with several lookups to
    /// make (a batch) issues these first, so the memory reads of all of them overlap.
    pub fn prefetch(&self, gtin: Gtin) {
        if self.slot_count > 0 {
            let home = home_slot(key_hash(gtin.key()), self.header.home_range) as usize;
            let slots = &self.map[self.slots.clone()];
            let start = home * self.slot_size;
            prefetch(&slots[start..(start + PROBE_PREFETCH).min(slots.len())]);
        }
    }

    /// The slot holding `key`, if any. Only the key is compared: `get` is the lookup a request makes.
    pub fn find_slot(&self, key: u64) -> Option<usize> {
        // The empty marker is no GTIN; refused here so that it never matches an empty slot below.
        if self.slot_count == 0 || key == EMPTY_KEY {
            return None;
        }
        let hash = key_hash(key);
        let mut slot = home_slot(hash, self.header.home_range) as usize;
        let slots = &self.map[self.slots.clone()];
        let size = self.slot_size;
        // The run from the home slot is usually a slot or two long: ask for its lines together, so they arrive
        // in one memory round trip instead of one after the other.
        let start = slot * size;
        prefetch(&slots[start..(start + PROBE_PREFETCH).min(slots.len())]);
        // Bounded by the table: the loop ends at the last slot even if a corrupt file had no empty slot.
        while slot < self.slot_count {
            let found = read_u64(slots, slot * size / 8);
            if found == key {
                return Some(slot);
            }
            // Slots are in increasing hash order from the home slot on: an empty slot or a larger hash means
            // the key would have been placed before it.
            if found == EMPTY_KEY || key_hash(found) > hash {
                return None;
            }
            slot += 1;
        }
        None
    }

    /// The first word of `key`'s home slot and nothing else: the one memory round trip every lookup pays at
    /// least, so that a measurement can tell it from what `get` adds (probe, decode).
    pub fn read_home(&self, key: u64) -> u64 {
        if self.slot_count == 0 {
            return 0;
        }
        let home = home_slot(key_hash(key), self.header.home_range) as usize;
        read_u64(&self.map[self.slots.clone()], home * self.slot_size / 8)
    }

    /// How many slots past its home slot `key` sits, if it is in the table.
    pub fn displacement(&self, key: u64) -> Option<usize> {
        let slot = self.find_slot(key)?;
        Some(slot - home_slot(key_hash(key), self.header.home_range) as usize)
    }

    /// The key in `slot`, `None` for an empty slot or one past the table.
    pub fn key_in_slot(&self, slot: usize) -> Option<u64> {
        if slot >= self.slot_count {
            return None;
        }
        let key = read_u64(&self.map[self.slots.clone()], slot * self.slot_size / 8);
        (key != EMPTY_KEY).then_some(key)
    }

    /// Every key, in slot (hash) order.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.slot_count).filter_map(|slot| self.key_in_slot(slot))
    }

    /// Decodes the product in `slot`, following the overflow pointer of a long record.
    pub fn product_in_slot(&self, slot: usize) -> Result<Product<'_>, SnapshotError> {
        let record_err = |source| SnapshotError::Record { path: self.path.clone(), index: slot as u64, source };
        if slot >= self.slot_count {
            return Err(record_err(RecordError::Truncated("slot")));
        }
        let start = self.slots.start + slot * self.slot_size;
        let bytes = &self.map[start..start + self.slot_size];
        let record = match overflow_pointer(bytes) {
            None => bytes,
            Some((offset, len)) => {
                let blob = &self.map[self.overflow.clone()];
                let range = usize::try_from(offset).ok().and_then(|o| Some(o..o.checked_add(len as usize)?));
                range.and_then(|r| blob.get(r)).ok_or_else(|| record_err(RecordError::Truncated("overflow")))?
            }
        };
        record::decode(record).map_err(record_err)
    }

    /// Reads the whole file: content checksum, slots in strictly increasing hash order, each key reachable from
    /// its home slot (no empty slot in between), every record decoding to the key of its slot, and the count.
    pub fn verify(&self) -> Result<(), SnapshotError> {
        let start = self.slots.start;
        let actual = checksum(&self.map[start..]);
        if actual != self.header.content_checksum {
            return Err(SnapshotError::Checksum {
                path: self.path.clone(),
                expected: self.header.content_checksum,
                actual,
            });
        }
        let mut previous: Option<u64> = None;
        let mut last_empty: Option<usize> = None;
        let mut occupied = 0u64;
        for slot in 0..self.slot_count {
            let Some(key) = self.key_in_slot(slot) else {
                last_empty = Some(slot);
                continue;
            };
            occupied += 1;
            let hash = key_hash(key);
            let home = home_slot(hash, self.header.home_range) as usize;
            let reachable = home <= slot && last_empty.map_or(true, |e| e < home);
            if previous.is_some_and(|p| p >= hash) || !reachable {
                return Err(SnapshotError::Order { path: self.path.clone(), index: slot as u64, key });
            }
            previous = Some(hash);
            let found = self.product_in_slot(slot)?.gtin.key();
            if found != key {
                return Err(SnapshotError::Mismatch {
                    path: self.path.clone(),
                    index: slot as u64,
                    expected: key,
                    found,
                });
            }
        }
        if occupied != self.header.count {
            return Err(SnapshotError::Count { path: self.path.clone(), expected: self.header.count, found: occupied });
        }
        Ok(())
    }

    /// Slot size, fill, overflow and displacement figures. Reads every slot.
    pub fn slot_stats(&self) -> SlotStats {
        let mut stats =
            SlotStats { slot_size: self.header.slot_size, slots: self.slot_count as u64, ..SlotStats::default() };
        let mut total = 0u64;
        for slot in 0..self.slot_count {
            let Some(key) = self.key_in_slot(slot) else { continue };
            let start = self.slots.start + slot * self.slot_size;
            stats.products += 1;
            stats.overflowed += u64::from(overflow_pointer(&self.map[start..start + self.slot_size]).is_some());
            let home = home_slot(key_hash(key), self.header.home_range);
            let displacement = (slot as u64).saturating_sub(home);
            total += displacement;
            stats.max_displacement = stats.max_displacement.max(displacement);
        }
        stats.mean_displacement = total as f64 / stats.products.max(1) as f64;
        stats
    }
}

/// `(offset, len)` in the overflow section when `slot` holds a pointer rather than a record. The caller passes
/// a whole slot, at least [`MIN_SLOT_SIZE`] bytes.
#[inline]
fn overflow_pointer(slot: &[u8]) -> Option<(u64, u32)> {
    let mark = u32::from_le_bytes([slot[8], slot[9], slot[10], slot[11]]);
    (mark == OVERFLOW_MARK).then(|| {
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&slot[12..20]);
        (u64::from_le_bytes(offset), u32::from_le_bytes([slot[20], slot[21], slot[22], slot[23]]))
    })
}

/// Writes the slot that points a too-long record at `offset` in the overflow section.
pub fn overflow_slot(key: u64, offset: u64, len: u32, out: &mut [u8]) {
    out.fill(0);
    out[..8].copy_from_slice(&key.to_le_bytes());
    out[8..12].copy_from_slice(&OVERFLOW_MARK.to_le_bytes());
    out[12..20].copy_from_slice(&offset.to_le_bytes());
    out[20..24].copy_from_slice(&len.to_le_bytes());
}

/// Reads the `index`th little-endian u64 of `bytes`. Callers index below `bytes.len() / 8`: slots are whole
/// multiples of 16 bytes and the header check at open made the table a whole number of slots.
#[inline]
fn read_u64(bytes: &[u8], index: usize) -> u64 {
    let at = index * 8;
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Asks the CPU to start loading `bytes` into cache without waiting for them: the lines of a probe run then
/// cost one memory round trip instead of one each.
#[inline(always)]
pub(crate) fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch is a hint: it never faults, never writes, and produces no value. The pointer comes
        // from a live slice. SSE, which provides the instruction, is part of the x86_64 baseline.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
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
            slot_count: 5,
            home_range: 4,
            slot_size: 64,
            overflow_len: 100,
            content_checksum: 42,
            built_at: 1_700_000_000,
            source: "test ü".into(),
        };
        let bytes = h.to_bytes();
        assert_eq!(bytes.len() as u64, h.header_len());
        assert_eq!(h.header_len() % 64, 0);
        assert_eq!(h.slots_offset() % 64, 0);
        assert_eq!(h.overflow_offset(), h.slots_offset() + 5 * 64);
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

    #[test]
    fn headers_that_would_break_lookups_are_refused() {
        let good = Header {
            count: 3,
            slot_count: 5,
            home_range: 4,
            slot_size: 64,
            overflow_len: 0,
            content_checksum: 0,
            built_at: 0,
            source: String::new(),
        };
        let p = Path::new("x.gtin");
        for bad in [
            Header { slot_size: 24, ..good.clone() },
            Header { slot_size: 72, ..good.clone() },
            Header { slot_size: 2048, ..good.clone() },
            Header { count: 6, ..good.clone() },
            Header { home_range: 6, ..good.clone() },
            Header { home_range: 0, ..good.clone() },
            Header { count: 0, slot_count: 0, ..good.clone() },
            Header { slot_count: MAX_COUNT + 1, ..good.clone() },
        ] {
            let err = Header::parse(&bad.to_bytes(), bad.file_len(), p).unwrap_err();
            assert!(matches!(err, SnapshotError::Header { .. }), "{bad:?}: {err}");
        }
        let empty = Header { count: 0, slot_count: 0, home_range: 0, ..good };
        assert_eq!(Header::parse(&empty.to_bytes(), empty.file_len(), p).unwrap(), empty);
    }

    #[test]
    fn other_format_versions_are_named_not_called_corrupt() {
        let p = Path::new("dir/old.gtin");
        // The opening bytes of a version 1 file: its 96-byte header is shorter than this version's.
        let mut v1 = Vec::from(MAGIC);
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&96u32.to_le_bytes());
        v1.resize(96, 0);
        let err = Header::parse(&v1, 96, p).unwrap_err();
        assert!(matches!(err, SnapshotError::Version { found: 1, .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("dir/old.gtin") && message.contains("version 1"), "{message}");
    }

    #[test]
    fn home_slots_are_monotone_and_in_range() {
        for range in [1u64, 2, 7, 1000, 22_500_000] {
            assert_eq!(home_slot(0, range), 0);
            assert_eq!(home_slot(u64::MAX, range), range - 1);
            let mut previous = 0;
            for i in 0..1000u64 {
                let h = i.wrapping_mul(u64::MAX / 999);
                let home = home_slot(h, range);
                assert!(home >= previous && home < range);
                previous = home;
            }
        }
        // A bijection on the keys it sees: no two keys share a hash.
        let mut hashes: Vec<u64> = (0..100_000u64).map(|k| key_hash(k * 7_919)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), 100_000);
    }
}
