//! Answer shapes and the small helpers that build responses: the JSON bodies of the API (the service's own
//! product shape, the legacy catalog's shape, errors, batch results) and request-text decoding.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::{HttpResponse, CURRENCY, MAX_ECHO};
use crate::gtin::Gtin;
use crate::record::Product;

pub(super) fn method_not_allowed(allowed: &Method) -> HttpResponse {
    let message = format!("use {allowed}");
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message, None, None);
    let allow = if *allowed == Method::GET { "GET, HEAD" } else { "POST" };
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

pub(super) fn error(
    status: StatusCode,
    code: &str,
    message: String,
    input: Option<&str>,
    gtin: Option<Gtin>,
) -> HttpResponse {
    let body = ErrorJson { error: code, message, input: input.map(echo), gtin: gtin.map(|g| g.to_string()) };
    json(status, &body)
}

pub(super) fn json(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    // Serialising these plain structs cannot fail; an empty object is still valid JSON if it somehow did.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `input` cut to at most `MAX_ECHO` bytes on a character boundary.
pub(super) fn echo(input: &str) -> &str {
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
pub(super) fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
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
pub(super) struct ProductJson<'a> {
    pub(super) gtin: String,
    pub(super) input: &'a str,
    pub(super) sku: &'a str,
    pub(super) description: &'a str,
    pub(super) brand: &'a str,
    pub(super) department: &'a str,
    pub(super) price: Price,
    pub(super) updated: String,
}

impl<'a> ProductJson<'a> {
    pub(super) fn new(input: &'a str, p: &Product<'a>) -> ProductJson<'a> {
        ProductJson {
            gtin: p.gtin.to_string(),
            input: echo(input),
            sku: p.sku,
            description: p.description,
            brand: p.brand,
            department: p.department,
            price: Price { amount_cents: p.price_cents, currency: CURRENCY },
            updated: p.updated.to_string(),
        }
    }
}

#[derive(Serialize)]
pub(super) struct Price {
    pub(super) amount_cents: u64,
    pub(super) currency: &'static str,
}

/// The legacy catalog's answer, field for field.
#[derive(Serialize)]
pub(super) struct LegacyJson<'a> {
    pub(super) store: &'a str,
    pub(super) upc: &'a str,
    pub(super) item_no: &'a str,
    pub(super) desc: &'a str,
    pub(super) brand: &'a str,
    pub(super) dept: &'a str,
    pub(super) price: String,
}

#[derive(Serialize)]
pub(super) struct ErrorJson<'a> {
    pub(super) error: &'a str,
    pub(super) message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) input: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) gtin: Option<String>,
}

#[derive(Serialize)]
pub(super) struct BatchResponse<'a> {
    pub(super) results: Vec<BatchItem<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum BatchItem<'a> {
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
