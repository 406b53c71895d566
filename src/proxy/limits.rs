//! What a client may send before it is refused: request-head sizes, header count, connections per listener,
//! and what an encoded slash in a path means. Read once from `ficus.toml` (`[limits]`) and the command line,
//! then copied into each listener (hyper's buffer and header caps, the connection cap) and into the proxy
//! (the per-request checks in `headers` and `path`).
//!
//! The defaults follow nginx and HAProxy: nginx reads a request line or a header line into 8 KiB buffers and
//! a whole head into at most 4 of them (32 KiB); HAProxy keeps a head in a 16 KiB buffer and 101 headers.

use serde::Deserialize;
use std::time::Duration;

/// What `%2F` (an encoded `/`) in a request path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EncodedSlash {
    /// 400: a backend that decodes it would see a different path than the one routed (the default).
    #[default]
    Reject,
    /// Kept encoded, routed as an ordinary character and forwarded as it came. Only for backends that never
    /// decode `%2F` into a separator.
    Keep,
}

impl std::str::FromStr for EncodedSlash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reject" => Ok(EncodedSlash::Reject),
            "keep" => Ok(EncodedSlash::Keep),
            other => Err(format!("encoded_slash: `{other}` is neither `reject` nor `keep`")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A whole request head (request line and headers), in bytes; more is 431. It is also the most an HTTP/1.1
    /// connection buffers of an unfinished head, and the HTTP/2 header list limit.
    pub max_head_bytes: usize,
    /// The request line (method, target, version); more is 414.
    pub max_request_line_bytes: usize,
    /// One header line (name and value); more is 431.
    pub max_header_bytes: usize,
    /// Header lines in one request; more is 431.
    pub max_headers: usize,
    /// Open connections per listener; past it a new connection is closed at once and counted in
    /// `ficus_connections_refused_total`. 0: derived from the open-file limit (see [`Limits::connection_cap`]).
    pub max_connections: usize,
    pub encoded_slash: EncodedSlash,
    /// How long a client has to send a request head (slowloris protection); a partial head is then answered
    /// 408. Go-style duration in the config file.
    #[serde(deserialize_with = "crate::model::de_duration")]
    pub header_timeout: Duration,
}

pub const DEFAULT_MAX_HEAD_BYTES: usize = 32 * 1024;
pub const DEFAULT_MAX_LINE_BYTES: usize = 8 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// hyper refuses a read buffer smaller than this, so a head limit below it is raised to it.
pub const MIN_HEAD_BYTES: usize = 8192;
/// Descriptors kept out of the listeners' reach: the admin listener, etcd, route files, logs.
pub const FD_RESERVE: u64 = 128;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_request_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_header_bytes: DEFAULT_MAX_LINE_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_connections: 0,
            encoded_slash: EncodedSlash::Reject,
            header_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error("limits.{field}: must be at least {min}, got {value}")]
    TooSmall { field: &'static str, min: usize, value: usize },
    #[error("limits.{field}: must be at least 1s")]
    TooShort { field: &'static str },
}

impl Limits {
    /// Checks the values an operator gave; a head limit under hyper's minimum buffer is refused rather than
    /// silently raised, so the number in the config is the number enforced.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let check =
            |field, min, value| if value < min { Err(LimitsError::TooSmall { field, min, value }) } else { Ok(()) };
        check("max_head_bytes", MIN_HEAD_BYTES, self.max_head_bytes)?;
        check("max_request_line_bytes", 16, self.max_request_line_bytes)?;
        check("max_header_bytes", 16, self.max_header_bytes)?;
        check("max_headers", 1, self.max_headers)?;
        if self.header_timeout < Duration::from_secs(1) {
            return Err(LimitsError::TooShort { field: "header_timeout" });
        }
        Ok(())
    }

    /// The per-listener connection cap: the setting, or half the open-file limit less a reserve (a proxied
    /// connection holds two descriptors, the client's and the upstream's), so the process never runs out of
    /// descriptors and the admin listener can still accept.
    pub fn connection_cap(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let nofile = open_file_limit().unwrap_or(1024);
        (nofile.saturating_sub(FD_RESERVE) / 2).max(1) as usize
    }
}

fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    ok.then_some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_small_values_name_their_field() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let l = Limits { max_head_bytes: 4096, ..Limits::default() };
        let err = l.validate().unwrap_err();
        assert_eq!(err, LimitsError::TooSmall { field: "max_head_bytes", min: MIN_HEAD_BYTES, value: 4096 });
        assert!(err.to_string().contains("limits.max_head_bytes"));
        let l = Limits { max_connections: 7, ..Limits::default() };
        assert_eq!(l.connection_cap(), 7);
        assert!(Limits::default().connection_cap() >= 1);
        assert_eq!("keep".parse::<EncodedSlash>(), Ok(EncodedSlash::Keep));
        assert!("drop".parse::<EncodedSlash>().is_err());
    }
}
