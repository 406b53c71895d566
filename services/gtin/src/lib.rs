//! The GTIN lookup service: the first service Ficus takes over from the legacy catalog.
//!
//! A map of the crate, in the order data moves through it:
//!
//! - [`gtin`]: parse and normalise every GTIN form to the 14-digit GS1 key; pure.
pub mod gtin;
