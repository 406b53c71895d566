//! What the dashboard shows, built per request from what the admin listener already has: the status board
//! (generation, source, refused keys, draining servers), the config in force (frontends, their splits,
//! backends' roles and servers) and the sampler's windows. One value, two renderings: JSON for tools
//! (`/dashboard/data.json`) and HTML (the page, and the fragment its script swaps in), so the two never
//! disagree.
//!
//! Frontends and backends are listed a page at a time (in id order, optionally filtered by a substring), so
//! the payload stays small with 10,000 frontends; the strangling summary counts all of them.

use super::sampler::{Rates, RolePoint, RoleRates, Sampler};
use crate::model::{ConfigError, Rejection, Role, ValidatedConfig};
use crate::table::reload::{Counts, Status};
use crate::telemetry::live::Kind;
use crate::upstream::health::{self, State};
use crate::upstream::{DrainingServer, Registry};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

/// Rows per page of frontends and of backends.
pub const PER_PAGE: usize = 50;
/// Seconds over which the strangling summary's "now" is averaged.
const NOW_SECONDS: usize = 10;

/// The query string the page and the data endpoint take: `page`, `bpage` (1-based) and `q` (a substring of
/// the frontend or backend id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub page: usize,
    pub bpage: usize,
    pub q: String,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut out = Query { page: 1, bpage: 1, q: String::new() };
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "page" => out.page = v.parse().unwrap_or(1).max(1),
                "bpage" => out.bpage = v.parse().unwrap_or(1).max(1),
                "q" => out.q = percent_decode(v),
                _ => {}
            }
        }
        out
    }

    fn href(&self, page: usize, bpage: usize) -> String {
        let mut s = format!("?page={page}&bpage={bpage}");
        if !self.q.is_empty() {
            s.push_str("&q=");
            s.push_str(&percent_encode(&self.q));
        }
        s
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[derive(Debug, Serialize)]
pub struct View<'a> {
    pub generated_at_unix_ms: u64,
    pub config: ConfigView<'a>,
    pub strangling: Strangling,
    pub frontends: Page<FrontendRow>,
    pub backends: Page<BackendRow>,
    /// Servers that left the config (or were marked draining) and still have requests in flight.
    pub draining: &'a [DrainingServer],
}

#[derive(Debug, Serialize)]
pub struct ConfigView<'a> {
    pub generation: u64,
    pub reloaded_at_unix: u64,
    /// `file` or `etcd`.
    pub source: &'static str,
    pub location: &'a str,
    /// `starting`, `watching` or `error`.
    pub state: &'static str,
    /// The last etcd revision applied, or the routes directory's rescan count.
    pub revision: u64,
    pub last_source_error: Option<&'a str>,
    pub counts: &'a Counts,
    pub rejected: &'a [Rejection],
    pub errors: &'a [ConfigError],
    pub unsupported: &'a [ConfigError],
}

#[derive(Debug, Serialize)]
pub struct Strangling {
    /// Requests per second by backend role, averaged over the last 10 s.
    pub now: RoleRates,
    /// The new backends' share of the requests that went to a legacy or new backend, 0..1.
    pub new_share: Option<f64>,
    /// Frontends by where their split sends traffic (weights, not measured traffic).
    pub frontends: Progress,
    /// Requests per second by role, one point per second, oldest first (the last 5 minutes).
    pub history: Vec<RolePoint>,
}

#[derive(Debug, Default, Serialize)]
pub struct Progress {
    /// Every weight on legacy backends.
    pub legacy: usize,
    /// Weight on both legacy and new backends: being moved.
    pub moving: usize,
    /// Every weight on new backends: taken over.
    pub new: usize,
    /// Some weight on backends without a role.
    pub unmarked: usize,
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub total: usize,
    pub page: usize,
    pub pages: usize,
    pub per_page: usize,
    pub items: Vec<T>,
}

#[derive(Debug, Serialize)]
pub struct FrontendRow {
    pub id: String,
    pub route: String,
    pub split: Vec<SplitPart>,
    /// Its middleware chain in the order it runs (empty for most frontends).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub middlewares: Vec<MiddlewareRow>,
    /// Where its shadow copies go, and its comparison report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowRow>,
    #[serde(flatten)]
    pub rates: Rates,
}

#[derive(Debug, Serialize)]
pub struct ShadowRow {
    pub backend: String,
    pub percent: u32,
    /// The admin path of the comparison report (`/shadow/<frontend>`).
    pub report: String,
}

#[derive(Debug, Serialize)]
pub struct MiddlewareRow {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// False for a type Ficus decodes but does not act on yet.
    pub enforced: bool,
    /// A circuit breaker's state: `standby`, `tripped` or `recovering`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SplitPart {
    pub backend: String,
    pub weight: u32,
    /// This backend's share of the frontend's weights, in percent.
    pub percent: f64,
    pub role: &'static str,
}

#[derive(Debug, Serialize)]
pub struct BackendRow {
    pub id: String,
    pub role: &'static str,
    pub servers: Vec<ServerRow>,
    #[serde(flatten)]
    pub rates: Rates,
    /// The cumulative counters as they are now (not the sampler's reading), for tools that take their own
    /// differences: `ficus canary --steps` judges each step by them. `None` before the first table holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<crate::telemetry::live::Totals>,
}

#[derive(Debug, Serialize)]
pub struct ServerRow {
    pub id: String,
    pub url: String,
    pub weight: u32,
    pub draining: bool,
    /// Requests in flight on it now (`None` for a draining server: see `draining`).
    pub inflight: Option<usize>,
    /// `healthy`, `failing` (active checks) or `ejected` (passive); `None` for a draining server.
    pub health: Option<State>,
    /// Passive ejections since it joined.
    pub ejections: u64,
}

fn role_name(role: Option<Role>) -> &'static str {
    match role {
        Some(Role::Legacy) => "legacy",
        Some(Role::New) => "new",
        None => "unmarked",
    }
}

fn paged<T>(total: usize, page: usize, items: impl FnOnce(usize, usize) -> Vec<T>) -> Page<T> {
    let pages = total.div_ceil(PER_PAGE).max(1);
    let page = page.min(pages);
    let skip = (page - 1) * PER_PAGE;
    Page { total, page, pages, per_page: PER_PAGE, items: items(skip, PER_PAGE) }
}

/// Builds the view of one request.
pub fn build<'a>(
    status: &'a Status,
    config: &ValidatedConfig,
    registry: &Registry,
    sampler: &Sampler,
    query: &Query,
) -> View<'a> {
    let role = |backend: &str| config.backends.get(backend).and_then(|b| b.role);
    let mut progress = Progress::default();
    for f in config.frontends.values() {
        let (mut legacy, mut new, mut unmarked) = (false, false, false);
        for (b, w) in &f.backends {
            if *w == 0 {
                continue;
            }
            match role(b) {
                Some(Role::Legacy) => legacy = true,
                Some(Role::New) => new = true,
                None => unmarked = true,
            }
        }
        match (legacy, new, unmarked) {
            (_, _, true) => progress.unmarked += 1,
            (true, true, _) => progress.moving += 1,
            (false, true, _) => progress.new += 1,
            (true, false, _) => progress.legacy += 1,
            (false, false, false) => {}
        }
    }
    let now = sampler.role_rates(NOW_SECONDS);
    let moved = now.legacy + now.new;
    let strangling = Strangling {
        now,
        new_share: (moved > 0.0).then(|| now.new / moved),
        frontends: progress,
        history: sampler.history().copied().collect(),
    };

    let q = query.q.as_str();
    let matching = |id: &str| q.is_empty() || id.contains(q);
    let total =
        if q.is_empty() { config.frontends.len() } else { config.frontends.keys().filter(|id| matching(id)).count() };
    let frontends = paged(total, query.page, |skip, take| {
        config
            .frontends
            .iter()
            .filter(|(id, _)| matching(id))
            .skip(skip)
            .take(take)
            .map(|(id, f)| {
                let sum: u64 = f.backends.iter().map(|(_, w)| u64::from(*w)).sum();
                FrontendRow {
                    id: id.clone(),
                    route: f.route.clone(),
                    split: f
                        .backends
                        .iter()
                        .map(|(b, w)| SplitPart {
                            backend: b.clone(),
                            weight: *w,
                            percent: if sum == 0 { 0.0 } else { f64::from(*w) * 100.0 / sum as f64 },
                            role: role_name(role(b)),
                        })
                        .collect(),
                    middlewares: status
                        .chains
                        .get(id)
                        .map(|chain| {
                            chain
                                .iter()
                                .map(|m| MiddlewareRow {
                                    id: m.id.clone(),
                                    kind: m.kind.clone(),
                                    enforced: m.enforced,
                                    // The breaker's view prints as its state's name.
                                    state: m.state.as_ref().map(|b| format!("{b:?}")),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    shadow: f.shadow.as_ref().map(|sh| ShadowRow {
                        backend: sh.backend.clone(),
                        percent: sh.percent,
                        report: format!("/shadow/{id}"),
                    }),
                    rates: sampler.rates(Kind::Frontend, id),
                }
            })
            .collect()
    });
    let total =
        if q.is_empty() { config.backends.len() } else { config.backends.keys().filter(|id| matching(id)).count() };
    let mut backends = paged(total, query.bpage, |skip, take| {
        config
            .backends
            .iter()
            .filter(|(id, _)| matching(id))
            .skip(skip)
            .take(take)
            .map(|(id, b)| BackendRow {
                id: id.clone(),
                role: role_name(b.role),
                servers: b
                    .servers
                    .iter()
                    .map(|s| ServerRow {
                        id: s.id.clone(),
                        url: s.url.clone(),
                        weight: s.weight,
                        draining: s.draining,
                        inflight: None,
                        health: None,
                        ejections: 0,
                    })
                    .collect(),
                rates: sampler.rates(Kind::Backend, id),
                totals: crate::telemetry::live::read(Kind::Backend, id),
            })
            .collect()
    });
    // In-flight counts and health of the listed servers, in one pass over the servers in use.
    let listed: HashMap<&str, usize> = backends.items.iter().enumerate().map(|(i, b)| (b.id.as_str(), i)).collect();
    let now = health::millis(std::time::Instant::now());
    let mut live: HashMap<(usize, Arc<str>), (usize, State, u64)> = HashMap::new();
    registry.for_each_server(|s| {
        if let Some(&row) = listed.get(&*s.backend) {
            live.insert((row, s.id.clone()), (s.inflight(), s.health.state(now), s.health.ejections()));
        }
    });
    for (i, row) in backends.items.iter_mut().enumerate() {
        for server in row.servers.iter_mut().filter(|s| !s.draining) {
            if let Some(&(inflight, state, ejections)) = live.get(&(i, Arc::from(server.id.as_str()))) {
                server.inflight = Some(inflight);
                server.health = Some(state);
                server.ejections = ejections;
            }
        }
    }
    View {
        generated_at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        config: ConfigView {
            generation: status.generation,
            reloaded_at_unix: status.reloaded_at_unix,
            source: status.source.kind,
            location: &status.source.location,
            state: status.source.state,
            revision: status.source.revision,
            last_source_error: status.source.last_error.as_deref(),
            counts: &status.counts,
            rejected: &status.rejected,
            errors: &status.errors,
            unsupported: &status.unsupported,
        },
        strangling,
        frontends,
        backends,
        draining: &status.draining,
    }
}

/// Text for HTML element content and attribute values.
fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out.into()
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A percentage without a trailing `.0` when it is whole (`50%`, `33.3%`).
fn pct(v: f64) -> String {
    if (v - v.round()).abs() < 0.005 {
        format!("{v:.0}")
    } else {
        num(v)
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{} ms", num(v)))
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{}%", num(v * 100.0)))
}

fn unix_time(secs: u64) -> String {
    // UTC, without a calendar crate: days since the epoch to a civil date (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

/// The live part of the page (what the script replaces every second).
pub fn render_main(view: &View, query: &Query, out: &mut String) {
    strangling(view, out);
    frontends(view, query, out);
    backends(view, query, out);
    config(view, out);
}

fn strangling(view: &View, out: &mut String) {
    let s = &view.strangling;
    let share = s.new_share.map_or_else(|| "no traffic yet".to_string(), |v| format!("{}% to new", pct(v * 100.0)));
    let _ = write!(
        out,
        r#"<section aria-labelledby="h-strangling"><h2 id="h-strangling">Strangling progress</h2>
<p class="big" id="share">{share}</p>
<ul class="stats"><li><span class="sw legacy"></span>legacy <b id="rps-legacy">{}</b> req/s</li><li><span class="sw new"></span>new <b id="rps-new">{}</b> req/s</li>"#,
        num(s.now.legacy),
        num(s.now.new)
    );
    if s.now.unmarked > 0.0 {
        let _ =
            write!(out, r#"<li><span class="sw unmarked"></span>unmarked <b>{}</b> req/s</li>"#, num(s.now.unmarked));
    }
    let p = &s.frontends;
    let _ = write!(
        out,
        "</ul><p>Frontends: <b>{}</b> taken over, <b>{}</b> moving, <b>{}</b> still legacy{}.</p>",
        p.new,
        p.moving,
        p.legacy,
        if p.unmarked > 0 { format!(", {} with unmarked backends", p.unmarked) } else { String::new() }
    );
    chart(&s.history, out);
    out.push_str("</section>\n");
}

fn chart(history: &[RolePoint], out: &mut String) {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    let slots = super::sampler::HISTORY_SECONDS as f64;
    let max = history.iter().map(|p| p.legacy.max(p.new).max(p.unmarked)).max().unwrap_or(0).max(1) as f64;
    let offset = slots - history.len() as f64;
    let line = |f: &dyn Fn(&RolePoint) -> u64| {
        let mut pts = String::with_capacity(history.len() * 12);
        for (i, p) in history.iter().enumerate() {
            let x = (offset + i as f64) / (slots - 1.0) * W;
            let y = H - f(p) as f64 / max * (H - 4.0) - 2.0;
            let _ = write!(pts, "{x:.1},{y:.1} ");
        }
        pts
    };
    let last = history.last().copied().unwrap_or_default();
    let _ = write!(
        out,
        r#"<figure><svg viewBox="0 0 {W} {H}" preserveAspectRatio="none" role="img" aria-label="Requests per second to legacy and new backends over the last 5 minutes; in the last second legacy {}, new {}"><title>Legacy and new requests per second, last 5 minutes</title><polyline class="legacy" points="{}"/><polyline class="new" points="{}"/>"#,
        last.legacy,
        last.new,
        line(&|p| p.legacy),
        line(&|p| p.new)
    );
    if history.iter().any(|p| p.unmarked > 0) {
        let _ = write!(out, r#"<polyline class="unmarked" points="{}"/>"#, line(&|p| p.unmarked));
    }
    let _ = write!(
        out,
        "</svg><figcaption>req/s over the last 5 minutes (peak {max:.0}); legacy, new</figcaption></figure>"
    );
}

fn pager(out: &mut String, what: &str, page: usize, pages: usize, href: impl Fn(usize) -> String) {
    if pages <= 1 {
        return;
    }
    let _ = write!(out, r#"<nav class="pager" aria-label="{what} pages">"#);
    if page > 1 {
        let _ = write!(out, r#"<a href="{}" data-nav>previous</a> "#, esc(&href(page - 1)));
    }
    let _ = write!(out, "page {page} of {pages}");
    if page < pages {
        let _ = write!(out, r#" <a href="{}" data-nav>next</a>"#, esc(&href(page + 1)));
    }
    out.push_str("</nav>");
}

fn frontends(view: &View, query: &Query, out: &mut String) {
    let f = &view.frontends;
    let _ = write!(
        out,
        r#"<section aria-labelledby="h-frontends"><h2 id="h-frontends">Frontends <small>({} {})</small></h2>"#,
        f.total,
        if query.q.is_empty() { "in all".to_string() } else { format!("matching “{}”", esc(&query.q)) }
    );
    pager(out, "frontend", f.page, f.pages, |p| query.href(p, view.backends.page));
    out.push_str(
        r#"<div class="scroll"><table id="frontends"><thead><tr><th scope="col">frontend</th><th scope="col">split</th><th scope="col">req/s</th><th scope="col">errors</th><th scope="col">p50</th><th scope="col">p99</th></tr></thead><tbody>"#,
    );
    for row in &f.items {
        let _ = write!(
            out,
            r#"<tr data-frontend="{id}"><th scope="row">{id}<div class="route">{route}</div>"#,
            id = esc(&row.id),
            route = esc(&row.route),
        );
        if !row.middlewares.is_empty() {
            out.push_str(r#"<div class="route">middlewares:"#);
            for m in &row.middlewares {
                let _ = write!(out, " {} <code>{}</code>", esc(&m.kind), esc(&m.id));
                match (&m.state, m.enforced) {
                    (Some(state), _) => {
                        let _ = write!(out, " ({})", esc(state));
                    }
                    (None, false) => out.push_str(" (not enforced)"),
                    (None, true) => {}
                }
            }
            out.push_str("</div>");
        }
        if let Some(sh) = &row.shadow {
            let _ = write!(
                out,
                r#"<div class="route">shadow: {pct}% to <code>{b}</code>, <a href="{report}">comparison report</a></div>"#,
                pct = sh.percent,
                b = esc(&sh.backend),
                report = esc(&sh.report),
            );
        }
        let _ = write!(out, r#"</th><td><div class="bar" role="img" aria-label="{}">"#, esc(&split_text(&row.split)));
        // A backend at weight 0 gets no bar (it would show as a sliver); the label above still names it.
        for part in row.split.iter().filter(|p| p.weight > 0) {
            let _ = write!(
                out,
                r#"<span class="part {role}" style="width:{pct:.2}%" data-backend="{b}" data-weight="{w}">{b} {pct_text}%</span>"#,
                role = part.role,
                pct = part.percent,
                b = esc(&part.backend),
                w = part.weight,
                pct_text = pct(part.percent),
            );
        }
        let _ = write!(
            out,
            "</div></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            num(row.rates.rps),
            opt_pct(row.rates.error_rate),
            opt_ms(row.rates.p50_ms),
            opt_ms(row.rates.p99_ms)
        );
    }
    out.push_str("</tbody></table></div></section>\n");
}

fn split_text(split: &[SplitPart]) -> String {
    let parts: Vec<String> = split.iter().map(|p| format!("{} ({}) {}%", p.backend, p.role, pct(p.percent))).collect();
    parts.join(", ")
}

fn backends(view: &View, query: &Query, out: &mut String) {
    let b = &view.backends;
    let _ = write!(
        out,
        r#"<section aria-labelledby="h-backends"><h2 id="h-backends">Backends and servers <small>({})</small></h2>"#,
        b.total
    );
    pager(out, "backend", b.page, b.pages, |p| query.href(view.frontends.page, p));
    out.push_str(
        r#"<div class="scroll"><table id="backends"><thead><tr><th scope="col">backend</th><th scope="col">role</th><th scope="col">servers</th><th scope="col">req/s</th><th scope="col">errors</th><th scope="col">p50</th><th scope="col">p99</th></tr></thead><tbody>"#,
    );
    for row in &b.items {
        let _ = write!(
            out,
            r#"<tr><th scope="row">{}</th><td><span class="sw {role}"></span>{role}</td><td><ul class="servers">"#,
            esc(&row.id),
            role = row.role
        );
        for s in &row.servers {
            let _ = write!(
                out,
                "<li>{} <span class=\"url\">{}</span> weight {}{}{}</li>",
                esc(&s.id),
                esc(&s.url),
                s.weight,
                match (s.draining, s.health) {
                    (true, _) => " <b>draining</b>",
                    (false, Some(State::Healthy)) => ", <span class=\"ok\">healthy</span>",
                    (false, Some(State::Failing)) => ", <b class=\"bad\">failing its checks</b>",
                    (false, Some(State::Ejected)) => ", <b class=\"bad\">ejected</b>",
                    (false, None) => "",
                },
                match (s.inflight, s.ejections) {
                    (Some(n), 0) => format!(", {n} in flight"),
                    (Some(n), e) => format!(", {n} in flight, ejected {e}×"),
                    (None, _) => String::new(),
                }
            );
        }
        let _ = write!(
            out,
            "</ul></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            num(row.rates.rps),
            opt_pct(row.rates.error_rate),
            opt_ms(row.rates.p50_ms),
            opt_ms(row.rates.p99_ms)
        );
    }
    out.push_str("</tbody></table></div>");
    if view.draining.is_empty() {
        out.push_str("<p>No server is draining.</p>");
    } else {
        out.push_str("<h3>Draining</h3><ul>");
        for d in view.draining {
            let _ = write!(
                out,
                "<li>{} / {} ({}): {} in flight</li>",
                esc(&d.backend),
                esc(&d.server),
                esc(&d.url),
                d.inflight
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>\n");
}

fn config(view: &View, out: &mut String) {
    let c = &view.config;
    let _ = write!(
        out,
        r#"<section aria-labelledby="h-config"><h2 id="h-config">Config</h2><dl class="config">
<dt>generation</dt><dd id="generation">{}</dd><dt>last reload</dt><dd>{}</dd><dt>source</dt><dd>{} {} ({}, revision {})</dd>
<dt>in force</dt><dd>{} frontends, {} backends, {} servers, {} middlewares</dd>"#,
        c.generation,
        if c.reloaded_at_unix == 0 { "never".to_string() } else { unix_time(c.reloaded_at_unix) },
        esc(c.source),
        esc(c.location),
        esc(c.state),
        c.revision,
        c.counts.frontends,
        c.counts.backends,
        c.counts.servers,
        c.counts.middlewares,
    );
    if let Some(e) = c.last_source_error {
        let _ = write!(out, "<dt>last source error</dt><dd>{}</dd>", esc(e));
    }
    out.push_str("</dl>");
    let list = |out: &mut String, title: &str, items: &mut dyn Iterator<Item = (&ConfigError, Option<bool>)>| {
        let mut items = items.peekable();
        if items.peek().is_none() {
            let _ = write!(out, "<p>{title}: none.</p>");
            return;
        }
        let _ = write!(out, r#"<h3>{title}</h3><ul class="problems">"#);
        for (e, kept) in items {
            let _ = write!(out, "<li><code>{}</code>", esc(&e.key));
            if let Some(field) = &e.field {
                let _ = write!(out, " <code>{}</code>", esc(field));
            }
            let _ = write!(out, ": {}", esc(&e.message));
            if kept == Some(true) {
                out.push_str(" <i>(previous value still serving)</i>");
            }
            out.push_str("</li>");
        }
        out.push_str("</ul>");
    };
    list(out, "Refused keys", &mut c.rejected.iter().map(|r| (&r.error, Some(r.kept_previous))));
    list(out, "Config problems", &mut c.errors.iter().map(|e| (e, None)));
    list(out, "Unsupported values", &mut c.unsupported.iter().map(|e| (e, None)));
    out.push_str("</section>\n");
}

/// The whole page: static frame, the live part, the script that refreshes it.
pub fn render_page(view: &View, query: &Query) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ficus dashboard</title><link rel="stylesheet" href="/dashboard/app.css"></head>
<body><header><h1>Ficus</h1><p>Read-only view of the gateway, refreshed every second (<span id="live">live updates need JavaScript; reload to refresh</span>). <a href="/dashboard/data.json">JSON</a> · <a href="/status">status</a> · <a href="/metrics">metrics</a></p>
<form method="get" action="/dashboard/" role="search"><label for="q">Find a frontend or backend</label> <input id="q" name="q" value="{}"> <button>find</button></form></header>
<main id="main">"#,
        esc(&query.q)
    );
    render_main(view, query, &mut out);
    out.push_str("</main><script src=\"/dashboard/app.js\"></script></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_string_names_pages_and_a_filter() {
        assert_eq!(Query::parse(None), Query { page: 1, bpage: 1, q: String::new() });
        let q = Query::parse(Some("page=3&bpage=0&q=gtin%2Fv2+x&other=1"));
        assert_eq!(q, Query { page: 3, bpage: 1, q: "gtin/v2 x".to_string() });
        assert_eq!(Query::parse(Some("page=x&q=%zz%")).q, "%zz%");
        assert_eq!(q.href(2, 1), "?page=2&bpage=1&q=gtin%2Fv2%20x");
    }

    #[test]
    fn markup_in_ids_is_escaped() {
        assert_eq!(esc("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
        assert_eq!(esc("plain"), "plain");
    }

    #[test]
    fn unix_times_read_as_utc_dates() {
        assert_eq!(unix_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(unix_time(1_709_210_096), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn pages_are_clamped_to_what_exists() {
        let p = paged(120, 9, |skip, take| vec![(skip, take)]);
        assert_eq!((p.page, p.pages, p.items[0]), (3, 3, (100, 50)));
        let p = paged(0, 1, |skip, _| vec![skip]);
        assert_eq!((p.page, p.pages), (1, 1));
    }
}
