//! Ficus's end-to-end tests, in one test binary: every module drives real processes (the `ficus` binary, the
//! legacy catalog, the GTIN service, etcd), real sockets and real clients, through the harness in `common`.
//!
//! One binary rather than one per file: the harness is compiled and linked once, a test run starts one process,
//! and nothing in `common` needs to pretend it is used (dead code here is dead). Pick a part with a filter:
//! `cargo test --test e2e etcd_watch::` runs one module, `cargo test --test e2e -- --list` lists them all.

mod common;

mod canary;
mod compose;
mod dashboard;
mod etcd_auth;
mod etcd_cluster;
mod etcd_faults;
mod etcd_ops;
mod etcd_watch;
mod hostile;
mod middleware;
mod middleware_answers;
mod pool;
mod proxy;
mod readme_etcdctl;
mod readme_recipes;
mod reload;
mod resilience;
mod rollout;
mod routing;
mod server_codec;
mod shadow;
mod shutdown;
mod source_contract;
mod strangler;
mod systemd;
mod telemetry;
mod tls_sni;
mod upgrade;
mod upstream_tls;
mod workers;
