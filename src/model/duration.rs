//! Go-style durations (`"5s"`, `"1m30s"`, `"250ms"`), the form Vulcand stores timeouts in. The grammar lives in
//! the serving kit (`serve::duration`), shared with the companion services; the model names it here so specs
//! keep reading `model::GoDuration`. Decoded at model time so the proxy only ever sees `std::time::Duration`.

pub use serve::duration::{de_duration, format_duration, parse_duration, DurationError, GoDuration};
