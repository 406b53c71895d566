//! The dashboard on the admin listener: `/dashboard/` (one HTML page), `/dashboard/main` (its live part, which
//! the page's script fetches every second and swaps in), `/dashboard/data.json` (the same data for tools) and
//! the page's script and style sheet, compiled into the binary (no CDN; it works offline).
//!
//! It is a view of what the gateway already knows (the status board, the config in force) plus the one thing
//! it remembers itself: the last minutes of the telemetry's live counters, sampled once a second by a task on
//! the admin side ([`sampler`]). It is read-only: nothing here changes the gateway.

pub mod sampler;
pub mod view;

use crate::lifecycle::Shutdown;
use crate::table::reload::Status;
use crate::table::RoutingTable;
use crate::upstream::Registry;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use sampler::Sampler;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use view::Query;

const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

#[derive(Default)]
pub struct Dashboard {
    sampler: Mutex<Sampler>,
}

impl Dashboard {
    /// Samples the live counters once a second until shutdown.
    pub async fn run(self: Arc<Self>, table: crate::table::SharedTable, shutdown: Shutdown) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.wait() => return,
            }
            let config = table.load().config.clone();
            self.sampler.lock().unwrap_or_else(|p| p.into_inner()).sample(&config);
        }
    }

    /// The dashboard's answer for `path`, or `None` when the path is not the dashboard's.
    pub fn answer(
        &self,
        path: &str,
        query: Option<&str>,
        status: impl FnOnce() -> Status,
        table: &RoutingTable,
        registry: &Registry,
    ) -> Option<Response<Full<Bytes>>> {
        let render = |f: &dyn Fn(&view::View, &Query) -> (Bytes, &'static str)| {
            let status = status();
            let query = Query::parse(query);
            let sampler = self.sampler.lock().unwrap_or_else(|p| p.into_inner());
            let view = view::build(&status, &table.config, registry, &sampler, &query);
            let (body, kind) = f(&view, &query);
            drop(sampler);
            respond(StatusCode::OK, body, kind)
        };
        Some(match path {
            "/" | "/dashboard" => redirect("/dashboard/"),
            "/dashboard/" => render(&|v, q| (view::render_page(v, q).into(), "text/html; charset=utf-8")),
            "/dashboard/main" => render(&|v, q| {
                let mut out = String::with_capacity(16 * 1024);
                view::render_main(v, q, &mut out);
                (out.into(), "text/html; charset=utf-8")
            }),
            "/dashboard/data.json" => render(&|v, _| match serde_json::to_vec(v) {
                Ok(body) => (body.into(), "application/json"),
                Err(e) => (format!("{{\"error\":\"cannot render: {e}\"}}").into(), "application/json"),
            }),
            "/dashboard/app.js" => respond(StatusCode::OK, APP_JS.into(), "text/javascript; charset=utf-8"),
            "/dashboard/app.css" => respond(StatusCode::OK, APP_CSS.into(), "text/css; charset=utf-8"),
            _ => return None,
        })
    }
}

fn respond(status: StatusCode, body: Bytes, kind: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Only our own script and style; no inline script runs, no frame embeds the page.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

fn redirect(to: &'static str) -> Response<Full<Bytes>> {
    let mut r = respond(StatusCode::FOUND, Bytes::new(), "text/plain; charset=utf-8");
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(to));
    r
}
