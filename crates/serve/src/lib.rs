//! The serving kit: what every Ficus binary (the gateway, its admin listener, `gtin-service`,
//! `legacy-catalog`) does the same way around its own request handling. It sits below all three crates and
//! knows nothing about routes, snapshots or catalogs.
//!
//! - [`accept`]: the cap on open connections and the bounded back-off after failed accepts.
//! - [`http`]: one HTTP/1.1 + h2c accept loop over [`accept`], with a header read timeout and a graceful
//!   drain bounded by a deadline (the gateway's main listener keeps its own loop for connection parking and
//!   TLS, but uses the same cap and back-off).
//! - [`signals`]: the two-signal shutdown (the first SIGTERM/SIGINT drains, a second one exits now).
//! - [`logging`]: text or JSON lines filtered by `RUST_LOG`.
//! - [`duration`]: Go's duration grammar (Vulcand stores timeouts that way) and its serde helpers.
//! - [`upkeep`]: the Prometheus recorder's periodic upkeep.

#![forbid(unsafe_code)]

pub mod accept;
pub mod duration;
pub mod http;
pub mod logging;
pub mod signals;
pub mod upkeep;
