//! The GTIN lookup service: the first service Ficus takes over from the legacy catalog.
//!
//! A map of the crate, in the order data moves through it:
//!
//! - [`gtin`]: parse and normalise every GTIN form to the 14-digit GS1 key. Pure.
//! - [`clock`]: dates (`yyyymmdd`), UTC timestamps for file names. Pure. (Durations are the serving kit's.)
//! - [`record`]: the service's own product model and its compact binary record.
//! - [`snapshot`]: the immutable snapshot file format; open (constant time), lookup, verify.
//! - [`builder`]: writes a new snapshot from a stream of products without holding them all in memory.
//! - [`store`]: which snapshot is served now and which one a rollback returns to (one `ArcSwap`).
//! - [`legacy`]: reads the legacy export format and translates rows into the service's model (the ACL).
//! - [`sync`]: streams the export, builds, verifies and publishes a snapshot, notifies the service.
//! - [`api`]: HTTP routes and JSON shapes; handlers are plain async functions of a request.
//! - [`server`]: the serving process over the serving kit's accept loop (HTTP/1.1 and h2c) and drain.
//! - [`telemetry`]: metric names, the Prometheus recorder.
//! - [`synth`]: synthetic products and export text for benchmarks and tests.
//! - `bench` (feature `bench`): `bench-build` / `bench-lookup`, the end-to-end build/open/lookup measurement.
//! - `memprobe` (feature `bench`): `bench-memory`, the cost of one random memory read in each kind of mapping:
//!   the floor under a lookup.
//!
//! The measurement code is built only with `--features bench`, so the service binary does not ship it.

pub mod api;
#[cfg(feature = "bench")]
pub mod bench;
pub mod builder;
pub mod clock;
pub mod gtin;
pub mod legacy;
#[cfg(feature = "bench")]
pub mod memprobe;
pub mod record;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod sync;
pub mod synth;
pub mod telemetry;
