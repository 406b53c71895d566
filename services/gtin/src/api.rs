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
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

use crate::gtin::{ErrorKind, Format, Gtin, GtinError};
use crate::record::Product;
use crate::snapshot::Snapshot;
use crate::store::{Loaded, ReloadOutcome, Store, StoreError};
use crate::telemetry as t;

/// The most codes one batch request may hold.
pub const MAX_BATCH: usize = 1000;
/// The largest batch body read; room for `MAX_BATCH` codes with generous separators.
pub const MAX_BODY: usize = 256 * 1024;
/// Inputs are echoed back in answers, cut to this many bytes.
const MAX_ECHO: usize = 100;
/// The legacy catalog prices everything in US dollars.
const CURRENCY: &str = "USD";

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
    let status = response.status().as_u16().to_string();
    metrics::counter!(t::HTTP_REQUESTS, "route" => route, "status" => status).increment(1);
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
        "/health/live" => only(Method::GET, "live", &|| {
            json(StatusCode::OK, &Status::live())
        }),
        "/health/ready" => only(Method::GET, "ready", &|| ready(app)),
        "/metrics" => only(Method::GET, "metrics", &|| render_metrics(app)),
        "/v1/gtins:batch" if *method == Method::POST => {
            ("batch", batch(app, &parts, body, query).await)
        }
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
                return only(Method::GET, "legacy_gtin", &|| {
                    get_legacy(app, store, code, query)
                });
            }
            let message = format!("no route for {path}");
            (
                "unknown",
                error(StatusCode::NOT_FOUND, "no_route", message, None, None),
            )
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
            let result = if e.kind() == ErrorKind::Invalid {
                "invalid"
            } else {
                "unprocessable"
            };
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
    if store.len() > 32
        || !store
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        let message = "store must be 1 to 32 letters, digits, '-' or '_'".to_string();
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_store",
            message,
            Some(store),
            None,
        );
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
        error(
            StatusCode::BAD_REQUEST,
            self.code,
            self.message,
            self.input.as_deref(),
            None,
        )
    }
}

/// The decoded code from the path and the format from the query.
fn request_code<'a>(
    raw: &'a str,
    query: Option<&str>,
) -> Result<(Cow<'a, str>, Format), BadRequest> {
    let input = percent_decode(raw).ok_or_else(|| BadRequest {
        code: "invalid_gtin",
        message: "GTIN in the path is not valid percent-encoded UTF-8".to_string(),
        input: Some(echo(raw).to_string()),
    })?;
    let format = format_param(query)?;
    Ok((input, format))
}

fn format_param(query: Option<&str>) -> Result<Format, BadRequest> {
    let value = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("format="));
    let Some(value) = value else {
        return Ok(Format::Auto);
    };
    Format::from_param(value).ok_or_else(|| BadRequest {
        code: "invalid_format",
        message: format!(
            "unknown format {:?}: use format=upc-e or leave it out",
            echo(value)
        ),
        input: None,
    })
}

fn outcome_error(outcome: Outcome<'_>, input: &str) -> HttpResponse {
    match outcome {
        Outcome::Found(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            String::new(),
            None,
            None,
        ),
        Outcome::NotFound(gtin) => {
            let message = format!("no product with GTIN {gtin}");
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                message,
                Some(input),
                Some(gtin),
            )
        }
        Outcome::Bad(e) => error(status_of(&e), e.code(), e.to_string(), Some(input), None),
        Outcome::Corrupt => {
            let message = "the snapshot being served has a corrupt record".to_string();
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "corrupt_snapshot",
                message,
                Some(input),
                None,
            )
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

async fn batch<B>(
    app: &App,
    parts: &http::request::Parts,
    body: B,
    query: Option<&str>,
) -> HttpResponse
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        let message = format!("request body is larger than {MAX_BODY} bytes");
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            message,
            None,
            None,
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return too_large();
    }
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return too_large(),
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
        let message = format!(
            "a batch holds at most {MAX_BATCH} GTINs, got {}",
            request.gtins.len()
        );
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_gtins",
            message,
            None,
            None,
        );
    }
    let format = match format_param(query) {
        Ok(f) => f,
        Err(bad) => return bad.response(),
    };
    let Some(snapshot) = app.store.current() else {
        return not_ready();
    };
    let results: Vec<BatchItem<'_>> = request
        .gtins
        .iter()
        .map(|input| match lookup(&snapshot, input, format) {
            Outcome::Found(p) => BatchItem::Found {
                input: echo(input),
                status: 200,
                product: ProductJson::new(input, &p),
            },
            other => {
                let (status, e) = error_body(other, input);
                BatchItem::Failed {
                    input: echo(input),
                    status,
                    error: e.error,
                    message: e.message,
                    gtin: e.gtin,
                }
            }
        })
        .collect();
    json(StatusCode::OK, &BatchResponse { results })
}

fn error_body<'a>(outcome: Outcome<'_>, input: &'a str) -> (u16, ErrorJson<'a>) {
    let input = Some(echo(input));
    match outcome {
        Outcome::Found(_) | Outcome::Corrupt => {
            let message = "the snapshot being served has a corrupt record".to_string();
            (
                500,
                ErrorJson {
                    error: "corrupt_snapshot",
                    message,
                    input,
                    gtin: None,
                },
            )
        }
        Outcome::NotFound(gtin) => {
            let message = format!("no product with GTIN {gtin}");
            (
                404,
                ErrorJson {
                    error: "not_found",
                    message,
                    input,
                    gtin: Some(gtin.to_string()),
                },
            )
        }
        Outcome::Bad(e) => (
            status_of(&e).as_u16(),
            ErrorJson {
                error: e.code(),
                message: e.to_string(),
                input,
                gtin: None,
            },
        ),
    }
}

async fn reload(app: &Arc<App>) -> HttpResponse {
    let worker = Arc::clone(app);
    // Scanning the directory and unlinking old files is blocking I/O; keep it off the request threads.
    let result = tokio::task::spawn_blocking(move || worker.store.reload()).await;
    match result {
        Ok(Ok(outcome)) => {
            let (status, path, products, generation) = match outcome {
                ReloadOutcome::Swapped {
                    path,
                    products,
                    generation,
                } => ("swapped", path, products, generation),
                ReloadOutcome::Unchanged {
                    path,
                    products,
                    generation,
                } => ("unchanged", path, products, generation),
            };
            metrics::counter!(t::RELOADS, "result" => status).increment(1);
            if let Some(loaded) = app.store.loaded() {
                publish_gauges(&loaded);
            }
            let snapshot = path.file_name().map(|n| n.to_string_lossy().into_owned());
            json(
                StatusCode::OK,
                &AdminJson {
                    status,
                    snapshot,
                    products,
                    generation,
                },
            )
        }
        Ok(Err(e)) => {
            metrics::counter!(t::RELOADS, "result" => "failed").increment(1);
            tracing::error!(error = %e, "reload failed; still serving the previous snapshot");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reload_failed",
                e.to_string(),
                None,
                None,
            )
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reload_failed",
            e.to_string(),
            None,
            None,
        ),
    }
}

async fn rollback(app: &Arc<App>) -> HttpResponse {
    let worker = Arc::clone(app);
    match tokio::task::spawn_blocking(move || worker.store.rollback()).await {
        Ok(Ok(loaded)) => {
            metrics::counter!(t::RELOADS, "result" => "rolled_back").increment(1);
            publish_gauges(&loaded);
            let snapshot = loaded
                .current
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let body = AdminJson {
                status: "rolled_back",
                snapshot,
                products: loaded.current.len(),
                generation: loaded.generation,
            };
            json(StatusCode::OK, &body)
        }
        Ok(Err(e @ StoreError::NoPrevious)) => error(
            StatusCode::CONFLICT,
            "no_previous_snapshot",
            e.to_string(),
            None,
            None,
        ),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rollback_failed",
            e.to_string(),
            None,
            None,
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rollback_failed",
            e.to_string(),
            None,
            None,
        ),
    }
}

/// Sets the snapshot gauges from what is being served.
pub fn publish_gauges(loaded: &Loaded) {
    metrics::gauge!(t::SNAPSHOT_PRODUCTS).set(loaded.current.len() as f64);
    metrics::gauge!(t::SNAPSHOT_GENERATION).set(loaded.generation as f64);
    metrics::gauge!(t::SNAPSHOT_BUILT_AT).set(loaded.current.header().built_at as f64);
}

fn ready(app: &App) -> HttpResponse {
    match app.store.loaded() {
        Some(loaded) => json(StatusCode::OK, &Status::ready(&loaded)),
        None => json(StatusCode::SERVICE_UNAVAILABLE, &Status::not_ready()),
    }
}

fn not_ready() -> HttpResponse {
    let message =
        "no snapshot loaded yet: run `gtin-service sync`, then POST /admin/reload".to_string();
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        message,
        None,
        None,
    )
}

fn render_metrics(app: &App) -> HttpResponse {
    let text = app.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn method_not_allowed(allowed: &Method) -> HttpResponse {
    let message = format!("use {allowed}");
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
        None,
        None,
    );
    let allow = if *allowed == Method::GET {
        "GET, HEAD"
    } else {
        "POST"
    };
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn error(
    status: StatusCode,
    code: &str,
    message: String,
    input: Option<&str>,
    gtin: Option<Gtin>,
) -> HttpResponse {
    let body = ErrorJson {
        error: code,
        message,
        input: input.map(echo),
        gtin: gtin.map(|g| g.to_string()),
    };
    json(status, &body)
}

fn json(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    // Serialising these plain structs cannot fail; an empty object is still valid JSON if it somehow did.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `input` cut to at most `MAX_ECHO` bytes on a character boundary.
fn echo(input: &str) -> &str {
    if input.len() <= MAX_ECHO {
        return input;
    }
    let mut end = MAX_ECHO;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    &input[..end]
}

/// Decodes `%XX` escapes. `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[derive(Serialize)]
struct ProductJson<'a> {
    gtin: String,
    input: &'a str,
    sku: &'a str,
    description: &'a str,
    brand: &'a str,
    department: &'a str,
    price: Price,
    updated: String,
}

impl<'a> ProductJson<'a> {
    fn new(input: &'a str, p: &Product<'a>) -> ProductJson<'a> {
        ProductJson {
            gtin: p.gtin.to_string(),
            input: echo(input),
            sku: p.sku,
            description: p.description,
            brand: p.brand,
            department: p.department,
            price: Price {
                amount_cents: p.price_cents,
                currency: CURRENCY,
            },
            updated: p.updated.to_string(),
        }
    }
}

#[derive(Serialize)]
struct Price {
    amount_cents: u64,
    currency: &'static str,
}

/// The legacy catalog's answer, field for field.
#[derive(Serialize)]
struct LegacyJson<'a> {
    store: &'a str,
    upc: &'a str,
    item_no: &'a str,
    desc: &'a str,
    brand: &'a str,
    dept: &'a str,
    price: String,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gtin: Option<String>,
}

#[derive(Serialize)]
struct BatchResponse<'a> {
    results: Vec<BatchItem<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum BatchItem<'a> {
    Found {
        input: &'a str,
        status: u16,
        product: ProductJson<'a>,
    },
    Failed {
        input: &'a str,
        status: u16,
        error: &'a str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        gtin: Option<String>,
    },
}

#[derive(Serialize)]
struct AdminJson {
    status: &'static str,
    snapshot: Option<String>,
    products: usize,
    generation: u64,
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    products: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<String>,
}

impl Status {
    fn live() -> Status {
        Status {
            status: "live",
            products: None,
            generation: None,
            snapshot: None,
        }
    }
    fn not_ready() -> Status {
        Status {
            status: "not_ready",
            products: None,
            generation: None,
            snapshot: None,
        }
    }
    fn ready(loaded: &Loaded) -> Status {
        Status {
            status: "ready",
            products: Some(loaded.current.len()),
            generation: Some(loaded.generation),
            snapshot: loaded
                .current
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
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
        assert!(matches!(
            format_param(Some("a=1&format=upc-e")),
            Ok(Format::UpcE)
        ));
        assert!(matches!(format_param(None), Ok(Format::Auto)));
        assert!(format_param(Some("format=ean-99")).is_err());
        let long = "é".repeat(80);
        assert!(echo(&long).len() <= MAX_ECHO);
        assert!(long.starts_with(echo(&long)));
    }
}
