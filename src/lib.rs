//! Ficus: a programmable reverse proxy and strangler gateway.
//!
//! The data moves one way, and the modules follow it (docs/ARCHITECTURE.md; `architecture.rs` fails the tests
//! when an import goes against it):
//!
//! - [`source`]: where config comes from (the routes directory; etcd). A full listing, then changes, each key
//!   with its location.
//! - [`model`]: Vulcand's schema as stored (`*Spec`), decoded per key and validated across keys, with the last
//!   good value of every key kept.
//! - [`route`]: the route language and its index, a pure leaf (no I/O, no `unsafe`) used by the model to parse,
//!   the table to build and the proxy to match.
//! - [`predicate`]: the expression language of breaker conditions and failover predicates (`NetworkErrorRatio()
//!   > 0.5`), parsed and bound to a caller's vocabulary at config time, evaluated without allocating; a pure leaf.
//! - [`table`]: the compiled immutable [`table::RoutingTable`], the one `ArcSwap`, and the reload loop that
//!   builds and publishes it.
//! - [`middleware`]: a frontend's middleware chain (rate and connection limits, rewrites, circuit breakers,
//!   traces), compiled into the table, its
//!   state kept across reloads; run by the proxy between route and pick.
//! - [`shadow`]: copies of a frontend's requests to another backend, compared with the primary's answers off
//!   the request path; the report behind the admin listener's `/shadow/<frontend>`.
//! - [`proxy`]: the phases of a request (route, pick, forward, respond, log), with [`balance`] (exact weighted
//!   choice) and [`upstream`] (pools and per-server state that survive table swaps: in-flight counts, health
//!   from active checks and passive ejection; the body sent upstream).
//! - [`listen`] and [`lifecycle`]: accept, TLS, HTTP/1.1 and HTTP/2; shutdown and drain, inherited sockets and
//!   hot upgrade, systemd socket activation and notification.
//! - [`admin`] and [`telemetry`]: `/metrics`, `/status`, `/config`, the dashboard; metric names; logging.
//! - [`ops`]: operator commands that write etcd (`apply`, `export`, `canary`, `drain`), beside the flow; a
//!   rollout (`canary --to`) also reads every instance's live counters (`telemetry::live`) from its admin
//!   listener; [`check`] validates a routes directory the way the gateway would load it.
//! - [`worker`]: thread-per-core mode (`--threads N`): which worker thread this is, and the workers that
//!   accepted connections are handed to; a leaf below `listen`, `upstream` (idle connections per worker) and
//!   `admin` (the spread in `/status`).
//! - [`app`] wires them together and owns start and stop order; `main.rs` parses the command line.
//!
//! Below all of them, the serving kit (`crates/serve`, shared with the companion services): the connection
//! cap and accept back-off, the admin listener's accept loop, the two-signal shutdown, the log format and
//! filter, Go's duration grammar.

pub mod admin;
pub mod app;
pub mod balance;
pub mod check;
pub mod http1;
pub mod kept;
pub mod lifecycle;
pub mod listen;
pub mod middleware;
pub mod model;
pub mod ops;
pub mod predicate;
pub mod proxy;
pub mod route;
pub mod shadow;
pub mod source;
pub mod table;
pub mod telemetry;
pub mod upstream;
pub mod worker;

#[cfg(test)]
mod architecture;
#[cfg(test)]
mod test_rng;
