//! Key paths of the store, relative to the prefix (`/vulcand` by default).
//!
//! Both config sources (etcd and the routes directory) name every object by the same relative key, so the
//! same strangler plan can live in files or in etcd unchanged. Ids are taken from the key and compared
//! exactly, which is what keeps backend `b1` from picking up the servers of `b10`.

use std::fmt;

/// What a key names. Ids are whole path segments, never prefixes of one another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Backend { backend: String },
    Server { backend: String, server: String },
    Frontend { frontend: String },
    Middleware { frontend: String, middleware: String },
    Host { host: String },
    Listener { listener: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{key}: not a Ficus key (expected backends/<b>/backend, backends/<b>/servers/<s>, frontends/<f>/frontend, frontends/<f>/middlewares/<m>, hosts/<h>/host or listeners/<l>)")]
    Unknown { key: String },
    #[error("{key}: bad id `{id}`: {why}")]
    BadId { key: String, id: String, why: &'static str },
}

/// Keys under `<prefix>/ficus/` hold the state of Ficus's own operator commands (a rollout's progress under
/// `ficus/rollouts/<frontend>`), not routing config: the sources skip them rather than report them as unknown,
/// and `apply` and `export` leave them alone. Under the prefix, so an etcd role granted the prefix covers them.
pub const OWN_STATE_DIR: &str = "ficus/";

/// Whether a key relative to the prefix is Ficus's own state (see [`OWN_STATE_DIR`]).
pub fn is_own_state(rel: &str) -> bool {
    rel.trim_start_matches('/').starts_with(OWN_STATE_DIR)
}

impl Key {
    /// Parses a key relative to the prefix (what follows `<prefix>/`). Nothing is trimmed: etcd keys are
    /// plain strings, so `frontends/f/frontend/` and `/frontends/f/frontend` (from `/vulcand//frontends/...`)
    /// are other keys than `frontends/f/frontend`, and reading them as the same one would let a put or
    /// delete of the stray key refuse or remove the real one.
    pub fn parse(rel: &str) -> Result<Key, KeyError> {
        let parts: Vec<&str> = rel.split('/').collect();
        let unknown = || KeyError::Unknown { key: rel.to_string() };
        let key = match parts.as_slice() {
            ["backends", b, "backend"] => Key::Backend { backend: id(rel, b)? },
            ["backends", b, "servers", s] => Key::Server { backend: id(rel, b)?, server: id(rel, s)? },
            ["frontends", f, "frontend"] => Key::Frontend { frontend: id(rel, f)? },
            ["frontends", f, "middlewares", m] => Key::Middleware { frontend: id(rel, f)?, middleware: id(rel, m)? },
            ["hosts", h, "host"] => Key::Host { host: id(rel, h)? },
            ["listeners", l] => Key::Listener { listener: id(rel, l)? },
            _ => return Err(unknown()),
        };
        Ok(key)
    }

    /// The kind of object, as used in metric labels and `/status`.
    pub fn kind(&self) -> &'static str {
        match self {
            Key::Backend { .. } => "backend",
            Key::Server { .. } => "server",
            Key::Frontend { .. } => "frontend",
            Key::Middleware { .. } => "middleware",
            Key::Host { .. } => "host",
            Key::Listener { .. } => "listener",
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Backend { backend } => write!(f, "backends/{backend}/backend"),
            Key::Server { backend, server } => write!(f, "backends/{backend}/servers/{server}"),
            Key::Frontend { frontend } => write!(f, "frontends/{frontend}/frontend"),
            Key::Middleware { frontend, middleware } => write!(f, "frontends/{frontend}/middlewares/{middleware}"),
            Key::Host { host } => write!(f, "hosts/{host}/host"),
            Key::Listener { listener } => write!(f, "listeners/{listener}"),
        }
    }
}

fn id(key: &str, raw: &str) -> Result<String, KeyError> {
    let bad = |why| KeyError::BadId { key: key.to_string(), id: raw.to_string(), why };
    if raw.is_empty() {
        return Err(bad("empty"));
    }
    if raw.len() > 253 {
        return Err(bad("longer than 253 bytes"));
    }
    // Ids end up in metric labels, log lines and file names; keep them to printable, shell-safe ASCII.
    if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'*')) {
        return Err(bad("only letters, digits and - _ . : @ * are allowed"));
    }
    if raw == "." || raw == ".." {
        return Err(bad("`.` and `..` are not ids"));
    }
    Ok(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_round_trips() {
        for k in [
            "backends/b1/backend",
            "backends/b1/servers/srv-1",
            "frontends/f1/frontend",
            "frontends/f1/middlewares/rl",
            "hosts/example.com/host",
            "listeners/https",
        ] {
            let key = Key::parse(k).unwrap();
            assert_eq!(key.to_string(), k);
            assert!(matches!(Key::parse(&format!("/{k}")), Err(KeyError::Unknown { .. })), "/{k}");
        }
    }

    #[test]
    fn own_state_keys_are_not_config_keys() {
        assert!(is_own_state("ficus/rollouts/gtin"));
        assert!(is_own_state("/ficus/rollouts/gtin"));
        assert!(!is_own_state("frontends/ficus/frontend"));
        assert!(!is_own_state("ficus-x/y"));
    }

    #[test]
    fn ids_are_exact_segments() {
        let a = Key::parse("backends/b1/servers/s").unwrap();
        let b = Key::parse("backends/b10/servers/s").unwrap();
        assert_ne!(a, b);
        assert!(matches!(a, Key::Server { ref backend, .. } if backend == "b1"));
    }

    #[test]
    fn rejects_unknown_and_bad_ids() {
        assert!(matches!(Key::parse("backends/b1"), Err(KeyError::Unknown { .. })));
        assert!(matches!(Key::parse("frontends/f1/frontend/extra"), Err(KeyError::Unknown { .. })));
        for stray in ["frontends/f1/frontend/", "/backends/b1/backend/", "//listeners/l1", "listeners/l1//"] {
            assert!(matches!(Key::parse(stray), Err(KeyError::Unknown { .. })), "{stray}");
        }
        assert!(matches!(Key::parse("backends//backend"), Err(KeyError::Unknown { .. }) | Err(KeyError::BadId { .. })));
        assert!(matches!(Key::parse("backends/a b/backend"), Err(KeyError::BadId { .. })));
        let msg = Key::parse("backends/../backend").unwrap_err().to_string();
        assert!(msg.contains("backends/../backend"), "{msg}");
    }
}
