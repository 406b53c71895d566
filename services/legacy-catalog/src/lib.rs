//! `legacy-catalog`: the stand-in for the retailer's 2009 catalog monolith that Ficus strangles.
//!
//! It serves HTML pages, a small JSON API, the GTIN lookup that only understands 12-digit UPCs (the bug the
//! new GTIN service fixes), and a bulk export in a legacy pipe-separated format (EXPORT.md) that the GTIN
//! service's sync job reads. All data is generated from a seed, so 18 million products cost no memory.
//!
//! Modules, from the bottom up:
//! - `gs1`: check digits and the UPC-A / EAN-13 code type.
//! - `codes`: the invertible permutation from a product's rank to its barcode (uniqueness and O(1) lookup).
//! - `words`: the word lists products are made of.
//! - `data`: the catalog, product `i` from `(seed, i)`, and the lookups back by item number and barcode.
//! - `export`: the bulk export as a lazy iterator of chunks, with its deterministic dirty rows.
//! - `pages`: the HTML pages.
//! - `routes`: request -> response for every endpoint; adds the `Server` header.
//! - `server`: bind, accept loop (HTTP/1.1 and h2c), connection cap, graceful drain.
//!
//! `main.rs` parses the command line, installs the signal handlers and runs `server::serve`.

pub mod codes;
pub mod data;
pub mod export;
pub mod gs1;
pub mod pages;
pub mod routes;
pub mod server;
pub mod words;

pub use data::{Catalog, CatalogError, Product};
pub use export::{DirtyRate, Export, ExportError};
pub use routes::App;
pub use server::{bind, serve, ServeError, Stopped};
