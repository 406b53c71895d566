//! Request handling: one function from a request to a response, for every endpoint of the monolith.
//!
//! `server` hands each request here. This is where the legacy GTIN bug lives on purpose: the lookup takes
//! exactly 12 digits and answers everything else with a bare 404. Every response, errors included, leaves
//! through `finish`, which adds the `Server: legacy-catalog/2009` header.
//!
//! | path | response |
//! |---|---|
//! | `/` | HTML home page |
//! | `/catalog?page=N` | HTML, 50 products per page |
//! | `/products/{item_no}` | HTML product page, 404 HTML if unknown |
//! | `/api/products/{item_no}` | JSON product record |
//! | `/stores/{store}/gtins/{gtin}` | JSON lookup, 12-digit UPC-A only |
//! | `/export` | the streamed bulk export (EXPORT.md) |
//! | `/health` | `ok` |

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, SERVER};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use serde::Serialize;

use crate::data::{Catalog, Product};
use crate::export::{DirtyRate, Export};
use crate::pages;

/// The response body type for every endpoint: a buffer, or the streamed export.
pub type Body = BoxBody<Bytes, Infallible>;

/// The value of the `Server` header on every response.
pub const SERVER_NAME: &str = "legacy-catalog/2009";

const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// Everything a request can see. Immutable after start, shared by every connection.
#[derive(Debug)]
pub struct App {
    pub catalog: Arc<Catalog>,
    pub dirty_rate: DirtyRate,
    /// Added before every response except `/health`, to imitate a slow monolith.
    pub latency: Duration,
    request_ids: AtomicU64,
}

impl App {
    pub fn new(catalog: Catalog, dirty_rate: DirtyRate, latency: Duration) -> App {
        App { catalog: Arc::new(catalog), dirty_rate, latency, request_ids: AtomicU64::new(1) }
    }
}

/// The hyper service function.
pub async fn handle<B>(app: Arc<App>, req: Request<B>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let id = app.request_ids.fetch_add(1, Ordering::Relaxed);
    let (method, uri) = (req.method().clone(), req.uri().clone());
    if !app.latency.is_zero() && uri.path() != "/health" {
        tokio::time::sleep(app.latency).await;
    }
    let mut response = finish(route(&app, &method, &uri));
    if method == Method::HEAD {
        response = without_body(response);
    }
    tracing::debug!(
        request_id = id,
        %method,
        path = uri.path(),
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(response)
}

/// Picks the endpoint. Pure apart from the export's logging, so unit tests call it directly.
pub fn route(app: &App, method: &Method, uri: &Uri) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut response =
            html(StatusCode::METHOD_NOT_ALLOWED, pages::error("Method not allowed", "This catalog only answers GET."));
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let path = uri.path();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match segments.as_slice() {
        [""] => html(StatusCode::OK, pages::home(&app.catalog)),
        ["catalog"] => catalog_page(app, uri.query()),
        ["products", item_no] => match find_item(&app.catalog, item_no) {
            Some(product) => html(StatusCode::OK, pages::product(&product)),
            None => html(StatusCode::NOT_FOUND, pages::not_found(path)),
        },
        ["api", "products", item_no] => match find_item(&app.catalog, item_no) {
            Some(product) => json(StatusCode::OK, &ProductRecord::from(&product)),
            None => json_not_found(),
        },
        ["stores", store, "gtins", gtin] => gtin_lookup(&app.catalog, store, gtin),
        ["export"] => export(app),
        ["health"] => text(StatusCode::OK, "ok\n"),
        _ => html(StatusCode::NOT_FOUND, pages::not_found(path)),
    }
}

/// The legacy lookup as the 2009 code wrote it: a store number and exactly 12 ASCII digits that are a
/// product's UPC-A. Anything else, a 13-digit EAN or a zero-padded UPC included, is a bare 404 that does not
/// say why. This is the bug the GTIN service exists to fix.
fn gtin_lookup(catalog: &Catalog, store: &str, gtin: &str) -> Response<Body> {
    let store_ok = (1..=10).contains(&store.len()) && store.bytes().all(|b| b.is_ascii_digit());
    match catalog.by_upc(gtin).filter(|_| store_ok) {
        Some(product) => json(StatusCode::OK, &GtinRecord::new(store, &product)),
        None => json_not_found(),
    }
}

/// The body of a successful GTIN lookup. The field names and order are the legacy API's; the GTIN service's
/// legacy-compatible endpoint returns the same shape.
#[derive(Debug, Serialize)]
struct GtinRecord<'a> {
    store: &'a str,
    upc: String,
    item_no: String,
    desc: String,
    brand: &'a str,
    dept: &'a str,
    price: String,
}

impl<'a> GtinRecord<'a> {
    fn new(store: &'a str, p: &Product) -> GtinRecord<'a> {
        GtinRecord {
            store,
            upc: p.code.to_string(),
            item_no: p.item_no.to_string(),
            desc: p.desc.to_string(),
            brand: p.brand,
            dept: p.dept.code,
            price: p.price.to_string(),
        }
    }
}

/// `/api/products/{item_no}`: the product as the monolith's internal JSON API shows it.
#[derive(Debug, Serialize)]
struct ProductRecord {
    item_no: String,
    upc_ean: String,
    desc: String,
    brand: &'static str,
    dept: &'static str,
    price: String,
    upd_dt: String,
}

impl From<&Product> for ProductRecord {
    fn from(p: &Product) -> ProductRecord {
        ProductRecord {
            item_no: p.item_no.to_string(),
            upc_ean: p.code.to_string(),
            desc: p.desc.to_string(),
            brand: p.brand,
            dept: p.dept.code,
            price: p.price.to_string(),
            upd_dt: p.updated.yyyymmdd().to_string(),
        }
    }
}

fn find_item(catalog: &Catalog, item_no: &str) -> Option<Product> {
    if item_no.len() != 9 || !item_no.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    catalog.by_item_no(item_no.parse().ok()?)
}

fn catalog_page(app: &App, query: Option<&str>) -> Response<Body> {
    let page = query.unwrap_or("").split('&').find_map(|pair| pair.strip_prefix("page="));
    let page = match page.map(str::parse::<u64>) {
        None => 1,
        Some(Ok(page)) => page,
        Some(Err(_)) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error("Bad request", "The page number must be a whole number."),
            )
        }
    };
    match pages::catalog_page(&app.catalog, page) {
        Some(body) => html(StatusCode::OK, body),
        None => html(
            StatusCode::NOT_FOUND,
            pages::error("Page not found", &format!("There are {} catalog pages.", pages::page_count(&app.catalog))),
        ),
    }
}

fn export(app: &App) -> Response<Body> {
    let export =
        LoggedExport { inner: Export::new(app.catalog.clone(), app.dirty_rate), started: None, finished: false };
    let frames = futures_util::stream::iter(export.map(|chunk| Ok(Frame::data(chunk))));
    let mut response = Response::new(StreamBody::new(frames).boxed());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(TEXT));
    response
}

/// Logs when an export starts being sent and how it ended: all of it, or cut (the client went away or the
/// server shut down). A body that is never polled (a HEAD request) logs nothing.
struct LoggedExport {
    inner: Export,
    started: Option<Instant>,
    finished: bool,
}

impl Iterator for LoggedExport {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.started.is_none() {
            self.started = Some(Instant::now());
            tracing::info!("export started");
        }
        let chunk = self.inner.next();
        self.finished = chunk.is_none();
        chunk
    }
}

impl Drop for LoggedExport {
    fn drop(&mut self) {
        let Some(started) = self.started else {
            return;
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if self.finished {
            tracing::info!(rows = self.inner.rows(), elapsed_ms, "export finished");
        } else {
            tracing::warn!(rows = self.inner.rows(), elapsed_ms, "export cut short");
        }
    }
}

fn finish(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(SERVER, HeaderValue::from_static(SERVER_NAME));
    response
}

/// A HEAD response: the same headers with the length the body would have had, and no body. hyper's
/// HTTP/1.1 side would drop a body on its own, but on HTTP/2 a HEAD response with data is a stream error.
fn without_body(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    if let Some(length) = hyper::body::Body::size_hint(&body).exact() {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    Response::from_parts(parts, Empty::new().boxed())
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    full(status, HTML, body)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    full(status, TEXT, body)
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => full(status, JSON, body),
        Err(error) => {
            tracing::error!(%error, "could not encode a JSON response");
            full(StatusCode::INTERNAL_SERVER_ERROR, JSON, r#"{"error":"internal error"}"#)
        }
    }
}

fn json_not_found() -> Response<Body> {
    full(StatusCode::NOT_FOUND, JSON, r#"{"error":"not found"}"#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::DirtyRate;

    fn app() -> App {
        let catalog = Catalog::new(1, 1000).expect("size");
        let rate = DirtyRate::new(0.01).expect("rate");
        App::new(catalog, rate, Duration::ZERO)
    }

    fn get(app: &App, uri: &str) -> (StatusCode, String, String) {
        let uri: Uri = uri.parse().expect("test uri");
        let response = finish(route(app, &Method::GET, &uri));
        assert_eq!(response.headers()[SERVER], SERVER_NAME);
        let status = response.status();
        let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap_or_default().to_string();
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a test runtime");
        let body = runtime.block_on(response.into_body().collect()).map(|b| b.to_bytes()).unwrap_or_default();
        (status, content_type, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn twelve_digit_lookup_returns_the_legacy_json() {
        let (status, content_type, body) = get(&app(), "/stores/1/gtins/123456789012");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, JSON);
        assert_eq!(
            body,
            r#"{"store":"1","upc":"123456789012","item_no":"100000001","desc":"Demo Product 123456789012","brand":"ACME","dept":"GROC","price":"1.99"}"#
        );
    }

    #[test]
    fn everything_but_a_known_twelve_digit_upc_is_a_bare_404() {
        let app = app();
        for uri in [
            "/stores/1/gtins/0123456789012",
            "/stores/1/gtins/7501031311309",
            "/stores/1/gtins/123456789013",
            "/stores/1/gtins/12345678901",
            "/stores/1/gtins/%20123456789012",
            "/stores/abc/gtins/123456789012",
            "/stores//gtins/123456789012",
        ] {
            let (status, _, body) = get(&app, uri);
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(body, r#"{"error":"not found"}"#, "{uri}");
        }
    }

    #[test]
    fn html_pages_and_their_errors() {
        let app = app();
        assert_eq!(get(&app, "/").0, StatusCode::OK);
        assert_eq!(get(&app, "/catalog").0, StatusCode::OK);
        assert_eq!(get(&app, "/catalog?page=20").0, StatusCode::OK);
        assert_eq!(get(&app, "/catalog?page=21").0, StatusCode::NOT_FOUND);
        assert_eq!(get(&app, "/catalog?page=x").0, StatusCode::BAD_REQUEST);
        let (status, content_type, body) = get(&app, "/products/100000004");
        assert_eq!((status, content_type.as_str()), (StatusCode::OK, HTML));
        assert!(body.contains("9780471117094"));
        for missing in ["/products/100001001", "/products/1", "/products/x", "/nope"] {
            let (status, content_type, _) = get(&app, missing);
            assert_eq!((status, content_type.as_str()), (StatusCode::NOT_FOUND, HTML));
        }
    }

    #[test]
    fn product_api_and_health() {
        let app = app();
        let (status, _, body) = get(&app, "/api/products/100000002");
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(r#""upc_ean":"036000291452""#), "{body}");
        assert_eq!(get(&app, "/api/products/100009999").0, StatusCode::NOT_FOUND);
        assert_eq!(get(&app, "/health"), (StatusCode::OK, TEXT.into(), "ok\n".into()));
    }

    #[test]
    fn only_get_and_head_are_allowed() {
        let uri: Uri = "/health".parse().expect("uri");
        let response = route(&app(), &Method::POST, &uri);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
    }

    #[test]
    fn export_streams_the_whole_catalog() {
        let (status, content_type, body) = get(&app(), "/export");
        assert_eq!((status, content_type.as_str()), (StatusCode::OK, TEXT));
        assert!(body.starts_with("#LEGACY-CATALOG-EXPORT v1 seed=1 products=1000\n"));
        assert!(body.contains("\n#END rows="));
    }
}
