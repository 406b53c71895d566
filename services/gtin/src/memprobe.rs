//! `gtin-service bench-memory`: the floor under `Snapshot::get`. A lookup cannot be faster than one random
//! read of a cache line somewhere in a buffer as large as the snapshot, and what that read costs depends on how
//! the buffer is mapped (4 KB or 2 MB pages; under virtualisation a TLB miss is a nested page walk). This
//! measures that read in the mappings a snapshot could get, so that the lookup's own figures can be read
//! against it instead of against a guess. Not on the serving path.
//!
//! Three figures per mapping:
//! - chase: dependent loads through a random single-cycle permutation of the lines, no timer; the mean per hop
//!   is the memory round trip (TLB miss included) and nothing else.
//! - single: one random line read between two `Instant::now()` calls, as `bench-lookup` times a lookup; the
//!   timer's cost is included, not subtracted (it is reported on its own).
//! - burst of 3: three adjacent lines prefetched together then read, as a probe run from a home slot is.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memmap2::{Advice, Mmap, MmapMut};

use crate::bench::Percentiles;
use crate::snapshot::prefetch;
use crate::synth::Rng;

const LINE: usize = 64;
const HUGE: usize = 2 << 20;

/// How the buffer is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Anonymous memory with `MADV_NOHUGEPAGE`: 4 KB pages.
    Anon4k,
    /// Anonymous memory with `MADV_HUGEPAGE`, 2 MB aligned: 2 MB pages where the kernel can find them.
    Anon2m,
    /// A file written in aligned 2 MB pieces and mapped with `MADV_HUGEPAGE`, exactly as a snapshot is.
    File2m,
    /// The same file mapped with `MADV_NOHUGEPAGE`: what a snapshot in small pages costs.
    File4k,
}

impl Backing {
    pub const ALL: [Backing; 4] = [Backing::Anon4k, Backing::Anon2m, Backing::File2m, Backing::File4k];

    pub fn name(self) -> &'static str {
        match self {
            Backing::Anon4k => "anon, 4 KB pages",
            Backing::Anon2m => "anon, 2 MB pages",
            Backing::File2m => "file, 2 MB pages",
            Backing::File4k => "file, 4 KB pages",
        }
    }
}

#[derive(Debug, Clone)]
pub struct MemoryReport {
    pub backing: Backing,
    pub bytes: usize,
    /// KiB of this mapping held in 2 MB pages (`AnonHugePages` or `FilePmdMapped` in smaps).
    pub huge_kib: u64,
    pub chase_mean: Duration,
    pub single: Percentiles,
    pub burst3: Percentiles,
}

#[derive(Debug, Clone)]
pub struct TimerReport {
    /// Mean of one `Instant::now()` over many back-to-back calls.
    pub now_mean: Duration,
    /// `elapsed()` of an empty timed region: what every individually timed figure carries on top.
    pub empty_pair: Percentiles,
}

/// The cost of the timer that every per-lookup figure includes.
pub fn timer(samples: usize) -> TimerReport {
    let t = Instant::now();
    for _ in 0..samples {
        std::hint::black_box(Instant::now());
    }
    let now_mean = t.elapsed() / samples.max(1) as u32;
    let mut timings = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        timings.push(t.elapsed());
    }
    TimerReport { now_mean, empty_pair: percentiles_of(timings) }
}

/// Measures one mapping of `bytes` (rounded down to whole lines). `dir` holds the file of the file-backed
/// mappings; it is created there and removed afterwards.
pub fn measure(backing: Backing, bytes: usize, dir: &Path, hops: usize, timed: usize) -> io::Result<MemoryReport> {
    let lines = bytes / LINE;
    if lines < 2 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "buffer smaller than two cache lines"));
    }
    let next = cycle(lines);
    let buffer = match backing {
        Backing::Anon4k | Backing::Anon2m => Buffer::anon(&next, backing == Backing::Anon2m)?,
        Backing::File2m | Backing::File4k => Buffer::file(&next, dir, backing == Backing::File2m)?,
    };
    drop(next);
    let mem = buffer.bytes();
    // Every page faulted in before the clock starts: the figures are of mapped memory, not of page faults.
    let mut sum = 0u64;
    for at in (0..mem.len()).step_by(4096) {
        sum = sum.wrapping_add(u64::from(mem[at]));
    }
    std::hint::black_box(sum);
    let huge_kib = huge_kib_of(mem);

    let chase = |hops: usize| {
        let mut line = 0usize;
        for _ in 0..hops {
            line = read_u64(mem, line * LINE) as usize;
        }
        line
    };
    std::hint::black_box(chase(hops / 10));
    let t = Instant::now();
    std::hint::black_box(chase(hops));
    let chase_mean = t.elapsed() / hops.max(1) as u32;

    let mut rng = Rng::new(7);
    let picks: Vec<usize> = (0..timed).map(|_| rng.below(lines as u64 - 2) as usize).collect();
    let mut timings = Vec::with_capacity(timed);
    for &line in &picks {
        let t = Instant::now();
        std::hint::black_box(read_volatile(mem, line * LINE));
        timings.push(t.elapsed());
    }
    let single = percentiles_of(timings);
    let picks: Vec<usize> = (0..timed).map(|_| rng.below(lines as u64 - 2) as usize).collect();
    let mut timings = Vec::with_capacity(timed);
    for &line in &picks {
        let t = Instant::now();
        let at = line * LINE;
        prefetch(&mem[at..at + 3 * LINE]);
        let v = read_volatile(mem, at) ^ read_volatile(mem, at + LINE) ^ read_volatile(mem, at + 2 * LINE);
        std::hint::black_box(v);
        timings.push(t.elapsed());
    }
    let burst3 = percentiles_of(timings);
    drop(buffer);
    Ok(MemoryReport { backing, bytes: lines * LINE, huge_kib, chase_mean, single, burst3 })
}

/// A uniformly random permutation of `0..n` that is one single cycle (Sattolo's algorithm), so a chase from any
/// line visits every line before it repeats.
fn cycle(n: usize) -> Vec<u32> {
    assert!(n <= u32::MAX as usize, "buffer too large for 32-bit line numbers");
    let mut next: Vec<u32> = (0..n as u32).collect();
    let mut rng = Rng::new(3);
    for i in (1..n).rev() {
        let j = rng.below(i as u64) as usize;
        next.swap(i, j);
    }
    next
}

enum Buffer {
    Anon { map: MmapMut, start: usize, len: usize },
    File { map: Mmap, path: PathBuf },
}

impl Buffer {
    fn anon(next: &[u32], huge: bool) -> io::Result<Buffer> {
        let len = next.len() * LINE;
        // One spare 2 MB so that the buffer can start on a 2 MB boundary: only aligned 2 MB ranges can be huge.
        let mut map = MmapMut::map_anon(len + HUGE)?;
        map.advise(if huge { Advice::HugePage } else { Advice::NoHugePage })?;
        let start = (HUGE - map.as_ptr() as usize % HUGE) % HUGE;
        let mem = &mut map[start..start + len];
        for (line, &to) in mem.chunks_exact_mut(LINE).zip(next) {
            line[..8].copy_from_slice(&u64::from(to).to_le_bytes());
        }
        Ok(Buffer::Anon { map, start, len })
    }

    fn file(next: &[u32], dir: &Path, huge: bool) -> io::Result<Buffer> {
        let path = dir.join(format!("memory-probe-{}.bin", std::process::id()));
        let mut file = File::create(&path)?;
        // Whole aligned 2 MB writes, as the snapshot builder does, so the page cache keeps 2 MB folios.
        let mut chunk = vec![0u8; HUGE];
        for lines in next.chunks(HUGE / LINE) {
            chunk.fill(0);
            for (line, &to) in chunk.chunks_exact_mut(LINE).zip(lines) {
                line[..8].copy_from_slice(&u64::from(to).to_le_bytes());
            }
            file.write_all(&chunk[..lines.len() * LINE])?;
        }
        drop(file);
        let file = File::open(&path)?;
        // SAFETY: the file is this process's own, under a name nothing else uses, and is not written again while
        // mapped.
        let map = unsafe { Mmap::map(&file) }?;
        map.advise(Advice::Random)?;
        map.advise(if huge { Advice::HugePage } else { Advice::NoHugePage })?;
        Ok(Buffer::File { map, path })
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Buffer::Anon { map, start, len } => &map[*start..*start + *len],
            Buffer::File { map, .. } => map,
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Buffer::File { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// KiB of the mapping that holds `mem` that are mapped with 2 MB pages, from /proc/self/smaps (Linux only; 0
/// elsewhere).
fn huge_kib_of(mem: &[u8]) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let (lo, hi) = (mem.as_ptr() as usize, mem.as_ptr() as usize + mem.len());
    let mut inside = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some(v) = first.strip_suffix(':').and_then(|name| {
            let wanted = name == "AnonHugePages" || name == "FilePmdMapped";
            wanted.then(|| line[first.len()..].trim().trim_end_matches("kB").trim())
        }) {
            if inside {
                kib += v.parse::<u64>().unwrap_or(0);
            }
        } else if let Some((a, b)) = first.split_once('-') {
            // A mapping's header line: "start-end perms offset ...". Its fields follow until the next header.
            let start = usize::from_str_radix(a, 16).unwrap_or(usize::MAX);
            let end = usize::from_str_radix(b, 16).unwrap_or(0);
            inside = start < hi && end > lo;
        }
    }
    kib
}

fn percentiles_of(mut timings: Vec<Duration>) -> Percentiles {
    timings.sort_unstable();
    let at = |q: f64| timings.get(((timings.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    Percentiles { p50: at(0.5), p99: at(0.99), p999: at(0.999) }
}

#[inline]
fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// A load the compiler may not move out of the timed region or merge with another.
#[inline]
fn read_volatile(bytes: &[u8], at: usize) -> u64 {
    let word = &bytes[at..at + 8];
    // SAFETY: `word` is 8 in-bounds bytes of a live slice, and a byte array has alignment 1.
    u64::from_le_bytes(unsafe { std::ptr::read_volatile(word.as_ptr().cast::<[u8; 8]>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chase_is_one_cycle_through_every_line() {
        let next = cycle(1000);
        let mut seen = vec![false; next.len()];
        let mut at = 0usize;
        for _ in 0..next.len() {
            assert!(!seen[at], "line {at} visited twice");
            seen[at] = true;
            at = next[at] as usize;
        }
        assert_eq!(at, 0);
    }

    #[test]
    fn every_backing_measures_a_small_buffer() {
        let dir = tempfile::tempdir().unwrap();
        for backing in Backing::ALL {
            let r = measure(backing, 4 << 20, dir.path(), 10_000, 1_000).unwrap();
            assert_eq!(r.bytes, 4 << 20);
            assert!(r.single.p50 <= r.single.p99);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "probe file left behind");
    }
}
