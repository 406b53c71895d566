//! The exact-host table of the [`Router`](super::Router): the first thing every request looks up.
//! Part of route/: filled when a table is built, read once per request. It is an
//! open-addressing table of cache-line entries holding the hash, the host (inline when short)
//! and the bucket, so a lookup usually reads one line, where a general map reads its control
//! bytes, then its slot, then the key behind a pointer.

use std::hash::Hasher;

use super::trie::{FastHasher, Key};

/// Maps lower-case host names to `V`. Keys come from configuration, so the unkeyed hash is safe:
/// a request chooses what it looks up, not how the table is laid out.
pub(super) struct HostTable<V> {
    entries: Box<[Entry<V>]>,
    /// `entries.len() - 1`; the length is a power of two.
    mask: usize,
}

/// One slot. Hosts of up to 30 bytes (most of them) are compared without leaving the line.
#[repr(align(64))]
pub(super) struct Entry<V> {
    hash: u64,
    host: Key<30>,
    /// `None` marks a free slot, which ends a probe.
    value: Option<V>,
}

impl<V> HostTable<V> {
    pub(super) fn new(hosts: Vec<(Box<str>, V)>) -> Self {
        // At most half full, so probes stay short and always reach a free slot.
        let capacity = (hosts.len() * 2).next_power_of_two();
        let mut entries: Vec<Entry<V>> =
            (0..capacity).map(|_| Entry { hash: 0, host: Key::new(""), value: None }).collect();
        let mask = capacity - 1;
        for (host, value) in hosts {
            let hash = hash(host.as_bytes());
            let mut i = hash as usize & mask;
            while entries[i].value.is_some() {
                i = (i + 1) & mask;
            }
            entries[i] = Entry { hash, host: Key::new(&host), value: Some(value) };
        }
        HostTable { entries: entries.into_boxed_slice(), mask }
    }

    pub(super) fn get(&self, host: &str) -> Option<&V> {
        let hash = hash(host.as_bytes());
        let mut i = hash as usize & self.mask;
        loop {
            let entry = self.entries.get(i)?;
            let value = entry.value.as_ref()?;
            if entry.hash == hash && entry.host.as_bytes() == host.as_bytes() {
                return Some(value);
            }
            i = (i + 1) & self.mask;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.iter().filter(|entry| entry.value.is_some()).count()
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = FastHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_host_and_nothing_else() {
        let hosts: Vec<(Box<str>, usize)> =
            (0..1000).map(|i| (format!("host-{i}.{}", "x".repeat(i % 40)).into_boxed_str(), i)).collect();
        let table = HostTable::new(hosts.clone());
        assert_eq!(table.len(), 1000);
        for (host, value) in &hosts {
            assert_eq!(table.get(host), Some(value));
        }
        assert_eq!(table.get("host-1000."), None);
        assert_eq!(table.get(""), None);
        assert_eq!(HostTable::<()>::new(Vec::new()).get("a"), None);
    }
}
