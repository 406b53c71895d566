//! The HTTP API: routing, handlers and JSON shapes. It sits between the connection loop in [`crate::server`] and
//! the [`Store`]; it has no sockets of its own, so every handler is a plain async function of a request.
//!
//! Every lookup goes through the same three steps: parse the code ([`Gtin::parse_with`]), load the current
//! snapshot once (one atomic load, held for the whole request, batch included), look up. The status follows
//! from where it failed: 400 malformed code, 422 a real barcode that is not a trade item, 404 not in the
//! snapshot, 503 no snapshot yet, 500 a corrupt record.
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use crate::gtin::{ErrorKind, Format, Gtin, GtinError};
use crate::record::Product;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::telemetry as t;

mod admin;
mod json;

pub use admin::publish_gauges;
use admin::Status;
use admin::{not_ready, ready, reload, render_metrics, rollback};
use json::{
    echo, error, json, method_not_allowed, percent_decode, BatchItem, BatchResponse, ErrorJson, LegacyJson, ProductJson,
};

/// The most codes one batch request may hold.
pub const MAX_BATCH: usize = 1000;
/// The largest batch body read; room for `MAX_BATCH` codes with generous separators.
pub const MAX_BODY: usize = 256 * 1024;
/// An oversized body up to this size is read and discarded before the 413, so that an HTTP/1.1 client that is
/// still sending gets the answer instead of a reset connection; beyond it the connection is closed.
const MAX_DRAIN: usize = 4 * 1024 * 1024;
/// A batch's codes are independent: the memory reads of this many codes ahead are started while the current one
/// is answered, so that they overlap instead of each waiting its turn.
const BATCH_LOOKAHEAD: usize = 8;
/// Inputs are echoed back in answers, cut to this many bytes.
pub(super) const MAX_ECHO: usize = 100;
/// The legacy catalog prices everything in US dollars.
pub(super) const CURRENCY: &str = "USD";

pub type HttpResponse = Response<Full<Bytes>>;

/// What every handler shares.
pub struct App {
    pub store: Store,
    /// `None` when no global recorder was installed (tests, benchmarks).
    pub metrics: Option<PrometheusHandle>,
}

/// Answers one request and records its metrics.
pub async fn handle<B>(app: Arc<App>, req: Request<B>) -> HttpResponse
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let (route, response) = dispatch(&app, req).await;
    let code = response.status().as_u16().to_string();
    metrics::counter!(t::HTTP_REQUESTS, "route" => route, "code" => code).increment(1);
    metrics::histogram!(t::HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

async fn dispatch<B>(app: &Arc<App>, req: Request<B>) -> (&'static str, HttpResponse)
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let query = parts.uri.query();
    let method = &parts.method;
    let only = |allowed: Method, route: &'static str, run: &dyn Fn() -> HttpResponse| {
        if *method == allowed || (allowed == Method::GET && *method == Method::HEAD) {
            (route, run())
        } else {
            (route, method_not_allowed(&allowed))
        }
    };
    match path {
        "/health/live" => only(Method::GET, "live", &|| json(StatusCode::OK, &Status::live())),
        "/health/ready" => only(Method::GET, "ready", &|| ready(app)),
        "/metrics" => only(Method::GET, "metrics", &|| render_metrics(app)),
        "/v1/gtins:batch" if *method == Method::POST => ("batch", batch(app, &parts, body, query).await),
        "/v1/gtins:batch" => ("batch", method_not_allowed(&Method::POST)),
        "/admin/reload" if *method == Method::POST => ("admin_reload", reload(app).await),
        "/admin/reload" => ("admin_reload", method_not_allowed(&Method::POST)),
        "/admin/rollback" if *method == Method::POST => ("admin_rollback", rollback(app).await),
        "/admin/rollback" => ("admin_rollback", method_not_allowed(&Method::POST)),
        _ => {
            if let Some(code) = path.strip_prefix("/v1/gtins/").filter(|c| !c.contains('/')) {
                return only(Method::GET, "gtin", &|| get_gtin(app, code, query));
            }
            if let Some((store, code)) = legacy_path(path) {
                return only(Method::GET, "legacy_gtin", &|| get_legacy(app, store, code, query));
            }
            let message = format!("no route for {path}");
            ("unknown", error(StatusCode::NOT_FOUND, "no_route", message, None, None))
        }
    }
}

/// `/stores/{store}/gtins/{gtin}`, the legacy app's path.
fn legacy_path(path: &str) -> Option<(&str, &str)> {
    let (store, code) = path.strip_prefix("/stores/")?.split_once("/gtins/")?;
    (!store.is_empty() && !store.contains('/') && !code.contains('/')).then_some((store, code))
}

/// What one code came to.
enum Outcome<'s> {
    Found(Product<'s>),
    NotFound(Gtin),
    Bad(GtinError),
    Corrupt,
}

fn lookup<'s>(snapshot: &'s Snapshot, input: &str, format: Format) -> Outcome<'s> {
    let gtin = match Gtin::parse_with(input, format) {
        Ok(gtin) => gtin,
        Err(e) => {
            let result = if e.kind() == ErrorKind::Invalid { "invalid" } else { "unprocessable" };
            metrics::counter!(t::LOOKUPS, "result" => result).increment(1);
            return Outcome::Bad(e);
        }
    };
    let started = Instant::now();
    let found = snapshot.get(gtin);
    metrics::histogram!(t::LOOKUP_DURATION).record(started.elapsed().as_secs_f64());
    match found {
        Ok(Some(product)) => {
            metrics::counter!(t::LOOKUPS, "result" => "found").increment(1);
            Outcome::Found(product)
        }
        Ok(None) => {
            metrics::counter!(t::LOOKUPS, "result" => "not_found").increment(1);
            Outcome::NotFound(gtin)
        }
        Err(e) => {
            tracing::error!(error = %e, "corrupt record in the served snapshot");
            Outcome::Corrupt
        }
    }
}

fn get_gtin(app: &App, raw: &str, query: Option<&str>) -> HttpResponse {
    let (input, format) = match request_code(raw, query) {
        Ok(parsed) => parsed,
        Err(bad) => return bad.response(),
    };
    let Some(snapshot) = app.store.current() else {
        return not_ready();
    };
    match lookup(&snapshot, &input, format) {
        Outcome::Found(p) => json(StatusCode::OK, &ProductJson::new(&input, &p)),
        other => outcome_error(other, &input),
    }
}

fn get_legacy(app: &App, store: &str, raw: &str, query: Option<&str>) -> HttpResponse {
    if store.len() > 32 || !store.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        let message = "store must be 1 to 32 letters, digits, '-' or '_'".to_string();
        return error(StatusCode::BAD_REQUEST, "invalid_store", message, Some(store), None);
    }
    let (input, format) = match request_code(raw, query) {
        Ok(parsed) => parsed,
        Err(bad) => return bad.response(),
    };
    let Some(snapshot) = app.store.current() else {
        return not_ready();
    };
    match lookup(&snapshot, &input, format) {
        Outcome::Found(p) => json(
            StatusCode::OK,
            &LegacyJson {
                store,
                upc: p.gtin.canonical().short_form(),
                item_no: p.sku,
                desc: p.description,
                brand: p.brand,
                dept: p.department,
                price: p.price_decimal(),
            },
        ),
        other => outcome_error(other, &input),
    }
}

/// A request that cannot be looked up at all: always a 400.
struct BadRequest {
    code: &'static str,
    message: String,
    input: Option<String>,
}

impl BadRequest {
    fn response(self) -> HttpResponse {
        error(StatusCode::BAD_REQUEST, self.code, self.message, self.input.as_deref(), None)
    }
}

/// The decoded code from the path and the format from the query.
fn request_code<'a>(raw: &'a str, query: Option<&str>) -> Result<(Cow<'a, str>, Format), BadRequest> {
    let input = percent_decode(raw).ok_or_else(|| BadRequest {
        code: "invalid_gtin",
        message: "GTIN in the path is not valid percent-encoded UTF-8".to_string(),
        input: Some(echo(raw).to_string()),
    })?;
    let format = format_param(query)?;
    Ok((input, format))
}

fn format_param(query: Option<&str>) -> Result<Format, BadRequest> {
    let value = query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| kv.strip_prefix("format="));
    let Some(value) = value else {
        return Ok(Format::Auto);
    };
    Format::from_param(value).ok_or_else(|| BadRequest {
        code: "invalid_format",
        message: format!("unknown format {:?}: use format=upc-e or leave it out", echo(value)),
        input: None,
    })
}

fn outcome_error(outcome: Outcome<'_>, input: &str) -> HttpResponse {
    match outcome {
        Outcome::Found(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", String::new(), None, None),
        Outcome::NotFound(gtin) => {
            let message = format!("no product with GTIN {gtin}");
            error(StatusCode::NOT_FOUND, "not_found", message, Some(input), Some(gtin))
        }
        Outcome::Bad(e) => error(status_of(&e), e.code(), e.to_string(), Some(input), None),
        Outcome::Corrupt => {
            let message = "the snapshot being served has a corrupt record".to_string();
            error(StatusCode::INTERNAL_SERVER_ERROR, "corrupt_snapshot", message, Some(input), None)
        }
    }
}

fn status_of(e: &GtinError) -> StatusCode {
    match e.kind() {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

#[derive(Deserialize)]
struct BatchRequest {
    gtins: Vec<String>,
}

async fn batch<B>(app: &App, parts: &http::request::Parts, body: B, query: Option<&str>) -> HttpResponse
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        let message = format!("request body is larger than {MAX_BODY} bytes");
        error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message, None, None)
    };
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_DRAIN as u64) {
        return too_large();
    }
    let bytes = match read_capped(body, MAX_BODY).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return too_large(),
        Err(e) => {
            let message = format!("could not read the request body: {e}");
            return error(StatusCode::BAD_REQUEST, "invalid_body", message, None, None);
        }
    };
    let request: BatchRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("expected {{\"gtins\":[\"...\"]}}: {e}");
            return error(StatusCode::BAD_REQUEST, "invalid_json", message, None, None);
        }
    };
    if request.gtins.len() > MAX_BATCH {
        let message = format!("a batch holds at most {MAX_BATCH} GTINs, got {}", request.gtins.len());
        return error(StatusCode::PAYLOAD_TOO_LARGE, "too_many_gtins", message, None, None);
    }
    let format = match format_param(query) {
        Ok(f) => f,
        Err(bad) => return bad.response(),
    };
    let Some(snapshot) = app.store.current() else {
        return not_ready();
    };
    let parsed: Vec<Option<Gtin>> = request.gtins.iter().map(|input| Gtin::parse_with(input, format).ok()).collect();
    for gtin in parsed.iter().take(BATCH_LOOKAHEAD).flatten() {
        snapshot.prefetch(*gtin);
    }
    let results: Vec<BatchItem<'_>> = request
        .gtins
        .iter()
        .enumerate()
        .map(|(i, input)| {
            if let Some(Some(gtin)) = parsed.get(i + BATCH_LOOKAHEAD) {
                snapshot.prefetch(*gtin);
            }
            (input, lookup(&snapshot, input, format))
        })
        .map(|(input, outcome)| match outcome {
            Outcome::Found(p) => {
                BatchItem::Found { input: echo(input), status: 200, product: ProductJson::new(input, &p) }
            }
            other => {
                let (status, e) = error_body(other, input);
                BatchItem::Failed { input: echo(input), status, error: e.error, message: e.message, gtin: e.gtin }
            }
        })
        .collect();
    json(StatusCode::OK, &BatchResponse { results })
}

/// Reads at most `cap` bytes of `body`: `Ok(None)` if it is longer (then at most `MAX_DRAIN` bytes are read).
async fn read_capped<B>(body: B, cap: usize) -> Result<Option<Bytes>, String>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.into().to_string())?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= cap {
                kept.extend_from_slice(&data);
            } else if total > MAX_DRAIN {
                return Ok(None);
            }
        }
    }
    Ok((total <= cap).then(|| Bytes::from(kept)))
}

fn error_body<'a>(outcome: Outcome<'_>, input: &'a str) -> (u16, ErrorJson<'a>) {
    let input = Some(echo(input));
    match outcome {
        Outcome::Found(_) | Outcome::Corrupt => {
            let message = "the snapshot being served has a corrupt record".to_string();
            (500, ErrorJson { error: "corrupt_snapshot", message, input, gtin: None })
        }
        Outcome::NotFound(gtin) => {
            let message = format!("no product with GTIN {gtin}");
            (404, ErrorJson { error: "not_found", message, input, gtin: Some(gtin.to_string()) })
        }
        Outcome::Bad(e) => {
            (status_of(&e).as_u16(), ErrorJson { error: e.code(), message: e.to_string(), input, gtin: None })
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_are_read_strictly() {
        assert_eq!(legacy_path("/stores/1/gtins/0123"), Some(("1", "0123")));
        assert_eq!(legacy_path("/stores//gtins/0123"), None);
        assert_eq!(legacy_path("/stores/1/x/gtins/0123"), None);
        assert_eq!(percent_decode("0%2012-3").as_deref(), Some("0 12-3"));
        assert_eq!(percent_decode("abc").as_deref(), Some("abc"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert!(matches!(format_param(Some("a=1&format=upc-e")), Ok(Format::UpcE)));
        assert!(matches!(format_param(None), Ok(Format::Auto)));
        assert!(format_param(Some("format=ean-99")).is_err());
        let long = "é".repeat(80);
        assert!(echo(&long).len() <= MAX_ECHO);
        assert!(long.starts_with(echo(&long)));
    }
}
