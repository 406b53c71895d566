//! Shadow traffic: a copy of a frontend's selected requests goes to another backend, and its answers are
//! compared with the primary's. It sits beside the request path, never in it: the proxy offers each request
//! after building the upstream request (`select`, then `offer`: a few atomic operations and one `try_reserve`
//! on a bounded queue; a copied request's small body is read whole first and shared, reference-counted, by
//! both sides); the response body, on its way to the client, hands a copy of its frames (reference-counted, no
//! byte copied) to a [`Capture`] that sends them to the comparison when the body ends. Everything else (the
//! shadow request, reading its answer, the comparison, the report) runs in a worker task per frontend, off
//! the client's path: a shadow backend that hangs fills the queue, and further copies are dropped and
//! counted, while the client sees only the primary's latency.
//!
//! The workers run on a runtime of their own, one thread at the kernel's idle priority (`SCHED_IDLE`), with
//! connection pools of their own: shadowing uses only CPU the clients leave unused, and when the gateway is
//! busy the copies wait, the queue fills and the rest are dropped and counted instead of slowing the
//! clients down. Its connections never enter the request path's pools, so no client request ends up driven
//! by a task on that thread.
//!
//! State per frontend ([`Shadow`]) is compiled with the table and handed on to the next one while the
//! frontend's `Shadow` value is unchanged (the [`Registry`]), so a reload elsewhere does not reset the
//! report. The admin listener reads the report at `/shadow/<frontend>`; each outcome is also counted in
//! `ficus_shadow_total{frontend,result}`.
//!
//! Noise, the way Diffy learns it: when `LearnNoise` is on, a GET or HEAD is sent to the primary a second time,
//! and the fields where the primary disagrees with itself (timestamps, request ids) are ignored from then on.

mod diff;

pub use diff::{compare, covered_by, Answer};

use crate::model::ValidatedShadow;
use crate::upstream::pool::Pool;
use crate::upstream::{RequestBody, Server};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use metrics::Counter;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Copies a frontend's worker has in flight at once; the queue (`Shadow.Queue`) holds the ones waiting.
const IN_FLIGHT: usize = 32;
/// Differing pairs the report keeps, newest first.
const LAST_PAIRS: usize = 20;
/// Bytes of each body shown in the report's pairs.
const EXCERPT: usize = 2048;
/// The longest a copy waits for the primary's body to end (a client may read it slowly); then it is skipped.
const PRIMARY_WAIT: Duration = Duration::from_secs(300);
/// The longest request body copied: it is read whole before the request goes upstream (the client's upload is
/// then held in memory once, for both readers), as failover does for the bodies it may send again.
pub const REQUEST_BODY_LIMIT: u64 = crate::upstream::failover::REPLAY_BODY_LIMIT;

/// How a copy ended, as counted in the report and `ficus_shadow_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Compared, no difference outside ignored paths and noise.
    Equal,
    Different,
    /// The queue was full: never sent.
    Dropped,
    /// The shadow backend failed (no server, refused, timed out, cut).
    Error,
    /// Not compared: a request body too long to copy, a primary that did not finish, a body over the limit.
    Skipped,
}

const OUTCOMES: [(Outcome, &str); 5] = [
    (Outcome::Equal, "equal"),
    (Outcome::Different, "different"),
    (Outcome::Dropped, "dropped"),
    (Outcome::Error, "error"),
    (Outcome::Skipped, "skipped"),
];

/// Every frontend's shadow state, handed from table to table while its value is unchanged.
#[derive(Default)]
pub struct Registry {
    shadows: Mutex<HashMap<String, Weak<Shadow>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state for `frontend`'s `Shadow` value: the one in use when the value is unchanged, else a new one.
    pub fn compile(&self, frontend: &Arc<str>, spec: &ValidatedShadow) -> Arc<Shadow> {
        let mut map = self.shadows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&**frontend).and_then(Weak::upgrade) {
            if s.inner.spec == *spec {
                return s;
            }
        }
        map.retain(|_, w| w.strong_count() > 0);
        let s = Arc::new(Shadow::new(frontend.clone(), spec.clone()));
        map.insert(frontend.to_string(), Arc::downgrade(&s));
        s
    }

    /// The report of `frontend`'s shadow, if it has one in force.
    pub fn report(&self, frontend: &str) -> Option<Report> {
        let s = self.shadows.lock().unwrap_or_else(|p| p.into_inner()).get(frontend).and_then(Weak::upgrade)?;
        Some(s.inner.report())
    }
}

/// One frontend's shadow: what to copy, the queue to the worker, and the report.
pub struct Shadow {
    inner: Arc<Inner>,
    methods: Box<[Method]>,
    selected: AtomicU64,
    queue: mpsc::Sender<Job>,
    /// The worker's end of the queue until the first copy starts it (a table may be built outside a runtime).
    worker: Mutex<Option<mpsc::Receiver<Job>>>,
    started: AtomicBool,
}

/// What the worker shares with the frontend's state.
struct Inner {
    frontend: Arc<str>,
    spec: ValidatedShadow,
    compare: Arc<[HeaderName]>,
    counters: [(AtomicU64, Counter); 5],
    detail: Mutex<Detail>,
    /// The worker's own connections, by server (backend, id and URL).
    pools: Mutex<HashMap<ServerKey, Arc<Pool<RequestBody>>>>,
}

type ServerKey = (Arc<str>, Arc<str>, String);

/// Past this many pools a worker starts its map afresh (servers that left keep no idle connections for long).
const MAX_POOLS: usize = 1024;

#[derive(Default)]
struct Detail {
    by_field: BTreeMap<String, u64>,
    noise: BTreeSet<String>,
    last: VecDeque<Pair>,
}

/// One copy on its way: the request as the primary got it, the servers, and the primary's answer to come.
struct Job {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    /// The request's body, read whole before it went to the primary (empty for none).
    body: Bytes,
    request_id: Option<HeaderValue>,
    primary_server: Arc<Server>,
    shadow_server: Arc<Server>,
    /// Taken by the worker when it starts waiting.
    primary: Option<oneshot::Receiver<Primary>>,
}

/// The primary's answer as the client got it.
struct Primary {
    status: u16,
    headers: Vec<Option<HeaderValue>>,
    /// `None` when it was longer than the limit.
    body: Option<Vec<Bytes>>,
}

/// Carried with the primary's response body: collects the frames (reference-counted) up to the limit and sends
/// them to the comparison when the body ends complete. Dropped without [`finish`](Self::finish), the copy is
/// skipped.
pub struct Capture {
    tx: oneshot::Sender<Primary>,
    compare: Arc<[HeaderName]>,
    limit: u64,
    status: u16,
    headers: Vec<Option<HeaderValue>>,
    chunks: Vec<Bytes>,
    len: u64,
    too_large: bool,
}

impl Capture {
    /// The response head the client gets.
    pub fn head(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.status = status.as_u16();
        self.headers = self.compare.iter().map(|n| headers.get(n).cloned()).collect();
    }

    /// A frame of the body the client gets.
    #[inline]
    pub fn data(&mut self, data: &Bytes) {
        if self.too_large {
            return;
        }
        self.len += data.len() as u64;
        if self.len > self.limit {
            self.too_large = true;
            self.chunks = Vec::new();
        } else {
            self.chunks.push(data.clone());
        }
    }

    /// The body ended complete: hand the answer to the comparison.
    pub fn finish(self) {
        let body = (!self.too_large).then_some(self.chunks);
        let _ = self.tx.send(Primary { status: self.status, headers: self.headers, body });
    }
}

impl Shadow {
    fn new(frontend: Arc<str>, spec: ValidatedShadow) -> Self {
        let compare: Arc<[HeaderName]> =
            spec.compare_headers.iter().filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok()).collect();
        let methods = spec.methods.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect();
        let counters = OUTCOMES.map(|(_, name)| {
            let counter = metrics::counter!(crate::telemetry::SHADOW_TOTAL, "frontend" => frontend.to_string(),
                "result" => name);
            (AtomicU64::new(0), counter)
        });
        let (queue, rx) = mpsc::channel(spec.queue as usize);
        let inner =
            Arc::new(Inner { frontend, spec, compare, counters, detail: Mutex::default(), pools: Mutex::default() });
        Shadow {
            inner,
            methods,
            selected: AtomicU64::new(0),
            queue,
            worker: Mutex::new(Some(rx)),
            started: AtomicBool::new(false),
        }
    }

    /// On the request path, first: whether this request is to be copied. `Some(true)` when its body must be
    /// read whole first (a declared length up to [`REQUEST_BODY_LIMIT`]); a body longer than that or of unknown
    /// length is not copied (counted as skipped), since copying it would mean holding the client's upload for a
    /// second reader.
    pub fn select<B: http_body::Body>(&self, req: &Request<B>) -> Option<bool> {
        if !self.methods.contains(req.method()) || req.headers().contains_key(header::UPGRADE) {
            return None;
        }
        if !chosen(self.selected.fetch_add(1, Ordering::Relaxed), self.inner.spec.percent) {
            return None;
        }
        if req.body().is_end_stream() {
            return Some(false);
        }
        match req.body().size_hint().exact() {
            Some(n) if n <= REQUEST_BODY_LIMIT => Some(true),
            _ => {
                self.inner.count(Outcome::Skipped);
                None
            }
        }
    }

    /// Then, for a selected request: the copy goes into the queue, and the capture its response body carries
    /// comes back. `req` is the request as it goes to `primary`, `body` its body read whole (empty for none);
    /// `target` a server of the shadow backend. `forwarded`: the fields the primary's request gets on its
    /// way out (the map does not hold them), which the copy carries too.
    pub fn offer<B>(
        &self,
        req: &Request<B>,
        forwarded: &crate::upstream::Forwarded,
        body: Bytes,
        primary: &Arc<Server>,
        target: Option<&Arc<Server>>,
    ) -> Option<Capture> {
        let Some(target) = target else {
            self.inner.count(Outcome::Error);
            return None;
        };
        self.start_worker();
        let Ok(slot) = self.queue.try_reserve() else {
            self.inner.count(Outcome::Dropped);
            return None;
        };
        let (tx, rx) = oneshot::channel();
        let mut headers = req.headers().clone();
        forwarded.apply(&mut headers);
        slot.send(Job {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers,
            body,
            request_id: Some(forwarded.request_id.clone()),
            primary_server: primary.clone(),
            shadow_server: target.clone(),
            primary: Some(rx),
        });
        Some(Capture {
            tx,
            compare: self.inner.compare.clone(),
            limit: self.inner.spec.max_body_bytes,
            status: 0,
            headers: Vec::new(),
            chunks: Vec::new(),
            len: 0,
            too_large: false,
        })
    }

    fn start_worker(&self) {
        if self.started.load(Ordering::Relaxed) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let rx = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rx) = rx {
            match idle_runtime() {
                Some(rt) => drop(rt.spawn(work(rx, self.inner.clone()))),
                None => drop(tokio::spawn(work(rx, self.inner.clone()))),
            }
        }
    }
}

/// Whether the `n`-th request with a listed method is copied at `percent`: exactly `percent` of every 100
/// consecutive ones, spread out rather than bunched (as the balancer's sequences are).
fn chosen(n: u64, percent: u32) -> bool {
    let p = u64::from(percent);
    (n + 1) * p / 100 != n * p / 100
}

/// The worker: takes copies off the queue, at most [`IN_FLIGHT`] at once, until the frontend's state is gone
/// (the queue's sender dropped with it).
async fn work(mut rx: mpsc::Receiver<Job>, inner: Arc<Inner>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let Some(job) = rx.recv().await else { return };
        let inner = inner.clone();
        tokio::spawn(async move {
            let _permit = permit;
            inner.compare_one(job).await;
        });
    }
}

impl Inner {
    fn count(&self, outcome: Outcome) {
        if let Some(i) = OUTCOMES.iter().position(|(o, _)| *o == outcome) {
            self.counters[i].0.fetch_add(1, Ordering::Relaxed);
            self.counters[i].1.increment(1);
        }
    }

    fn detail(&self) -> std::sync::MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pool(&self, server: &Server) -> Arc<Pool<RequestBody>> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if pools.len() > MAX_POOLS {
            pools.clear();
        }
        let key = (server.backend.clone(), server.id.clone(), server.url.clone());
        pools.entry(key).or_insert_with(|| Arc::new(server.separate_pool())).clone()
    }

    async fn compare_one(&self, mut job: Job) {
        let limit = self.spec.max_body_bytes;
        let to = &job.shadow_server;
        let shadow = fetch(to, &self.pool(to), job.request(Some(to)), &self.compare, limit).await;
        let Some(rx) = job.primary.take() else { return self.count(Outcome::Skipped) };
        let primary = match tokio::time::timeout(PRIMARY_WAIT, rx).await {
            Ok(Ok(p)) => p,
            _ => return self.count(Outcome::Skipped),
        };
        let primary = Answer {
            status: primary.status,
            headers: self.named(primary.headers.iter().map(Option::as_ref)),
            body: primary.body.map(|chunks| concat(&chunks)),
        };
        let shadow = match shadow {
            Ok(a) => a,
            Err(error) => {
                tracing::debug!(frontend = %self.frontend, backend = %job.shadow_server.backend, %error,
                    "shadow copy failed");
                return self.count(Outcome::Error);
            }
        };
        let shadow =
            Answer { status: shadow.0, headers: self.named(shadow.1.iter().map(Option::as_ref)), body: shadow.2 };
        if primary.body.is_none() || shadow.body.is_none() {
            return self.count(Outcome::Skipped);
        }
        if self.spec.learn_noise && (job.method == Method::GET || job.method == Method::HEAD) {
            if let Ok((status, headers, body)) =
                fetch(&job.primary_server, &self.pool(&job.primary_server), job.request(None), &self.compare, limit)
                    .await
            {
                let again = Answer { status, headers: self.named(headers.iter().map(Option::as_ref)), body };
                if again.body.is_some() {
                    let noise = compare(&primary, &again, &|_| false);
                    if !noise.is_empty() {
                        self.detail().noise.extend(noise);
                    }
                }
            }
        }
        let noise: Vec<String> = self.detail().noise.iter().cloned().collect();
        let ignored = |field: &str| {
            self.spec.ignore_paths.iter().any(|p| field.strip_prefix("body:").is_some_and(|f| covered_by(f, p)))
                || noise.iter().any(|n| covered_by(field, n))
        };
        let fields = compare(&primary, &shadow, &ignored);
        if fields.is_empty() {
            return self.count(Outcome::Equal);
        }
        let pair = Pair {
            method: job.method.to_string(),
            target: job.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string(),
            request_id: job.request_id.as_ref().and_then(|v| v.to_str().ok()).map(str::to_string),
            primary: Side::of(&primary),
            shadow: Side::of(&shadow),
            fields,
        };
        let mut d = self.detail();
        // Counted under the lock the report takes, so a report never shows a difference its fields lack.
        self.count(Outcome::Different);
        for f in &pair.fields {
            *d.by_field.entry(f.clone()).or_default() += 1;
        }
        if d.last.len() == LAST_PAIRS {
            d.last.pop_back();
        }
        d.last.push_front(pair);
    }

    fn named<'a>(&self, values: impl Iterator<Item = Option<&'a HeaderValue>>) -> Vec<(String, Option<String>)> {
        self.compare
            .iter()
            .zip(values)
            .map(|(n, v)| (n.as_str().to_string(), v.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())))
            .collect()
    }

    fn report(&self) -> Report {
        let n = |o: Outcome| {
            OUTCOMES.iter().position(|(x, _)| *x == o).map_or(0, |i| self.counters[i].0.load(Ordering::Relaxed))
        };
        let d = self.detail();
        Report {
            frontend: self.frontend.to_string(),
            backend: self.spec.backend.clone(),
            percent: self.spec.percent,
            compared: n(Outcome::Equal) + n(Outcome::Different),
            equal: n(Outcome::Equal),
            different: n(Outcome::Different),
            dropped: n(Outcome::Dropped),
            errors: n(Outcome::Error),
            skipped: n(Outcome::Skipped),
            different_by_field: d.by_field.clone(),
            ignored: self.spec.ignore_paths.clone(),
            noise: d.noise.iter().cloned().collect(),
            last_different: d.last.iter().cloned().collect(),
        }
    }
}

impl Job {
    /// The copy for `to` (the shadow server): the primary's request, with `Host` naming the shadow server when
    /// it named the primary server.
    fn request(&self, to: Option<&Arc<Server>>) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::kept(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if let Some(to) = to {
            if self.headers.get(header::HOST) == Some(&self.primary_server.host_header) {
                req.headers_mut().insert(header::HOST, to.host_header.clone());
            }
        }
        req
    }
}

fn concat(chunks: &[Bytes]) -> Bytes {
    match chunks {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => Bytes::from(many.concat()),
    }
}

/// Status, the `compare`d headers and the body up to `limit` (`None` past it), from `server`, within its
/// backend's Read timeout, cut by its drain deadline.
async fn fetch(
    server: &Arc<Server>,
    pool: &Pool<RequestBody>,
    req: Request<RequestBody>,
    compare: &[HeaderName],
    limit: u64,
) -> Result<(u16, Vec<Option<HeaderValue>>, Option<Bytes>), String> {
    let guard = server.begin();
    let exchange = async {
        let (resp, conn) = pool.send(req, None, Instant::now(), None).await.map_err(|e| e.to_string())?;
        let (parts, mut body) = resp.into_parts();
        let mut buf: Vec<u8> = Vec::new();
        let mut complete = true;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            if let Some(d) = frame.data_ref() {
                if (buf.len() + d.len()) as u64 > limit {
                    complete = false;
                    break;
                }
                buf.extend_from_slice(d);
            }
        }
        if complete {
            pool.put(conn);
        }
        let headers = compare.iter().map(|n| parts.headers.get(n).cloned()).collect();
        Ok::<_, String>((parts.status.as_u16(), headers, complete.then(|| Bytes::from(buf))))
    };
    let read = server.settings.read_timeout;
    let (status, headers, body) = tokio::select! {
        r = tokio::time::timeout(read, exchange) => r.map_err(|_| format!("no answer within {read:?}"))??,
        _ = guard.server().aborted() => return Err("cut by the server's drain deadline".to_string()),
    };
    drop(guard);
    Ok((status, headers, body))
}

/// The shadow workers' runtime: one thread at idle priority, started on first use. `None` if it could not be
/// started (the workers then run on the caller's runtime).
fn idle_runtime() -> Option<&'static tokio::runtime::Handle> {
    static RUNTIME: std::sync::OnceLock<Option<tokio::runtime::Handle>> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new().name("ficus-shadow".into()).spawn(move || {
                lower_priority();
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => {
                        let _ = tx.send(Some(rt.handle().clone()));
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no runtime for shadow copies; they share the proxy's");
                        let _ = tx.send(None);
                    }
                }
            });
            match spawned {
                Ok(_) => rx.recv().ok().flatten(),
                Err(e) => {
                    tracing::warn!(error = %e, "no thread for shadow copies; they share the proxy's");
                    None
                }
            }
        })
        .as_ref()
}

/// Puts the calling thread in the kernel's idle class: it runs only when no other thread wants the CPU.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 names the calling thread, and `param` is a valid, initialised sched_param that
        // outlives the call; lowering one's own policy needs no privilege and touches no memory of ours.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "shadow thread keeps normal priority");
        }
    }
}

/// `/shadow/<frontend>`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub frontend: String,
    pub backend: String,
    pub percent: u32,
    /// Copies compared (equal + different).
    pub compared: u64,
    pub equal: u64,
    pub different: u64,
    /// Copies never sent: the queue was full.
    pub dropped: u64,
    /// Copies the shadow backend failed (refused, timed out, no server).
    pub errors: u64,
    /// Requests not compared: with a body, a primary that did not finish, a body over `MaxBodyBytes`.
    pub skipped: u64,
    /// Differing copies by field (`status`, `header:<name>`, `body`, `body:<JSON pointer>`).
    pub different_by_field: BTreeMap<String, u64>,
    /// Configured paths never compared.
    pub ignored: Vec<String>,
    /// Fields learned as noise (the primary disagreed with itself there).
    pub noise: Vec<String>,
    /// The last differing pairs, newest first.
    pub last_different: Vec<Pair>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub method: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub fields: Vec<String>,
    pub primary: Side,
    pub shadow: Side,
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    /// The start of the body, as text.
    pub body: String,
}

impl Side {
    fn of(a: &Answer) -> Side {
        let body = a.body.as_ref().map_or_else(String::new, |b| {
            let cut = &b[..b.len().min(EXCERPT)];
            String::from_utf8_lossy(cut).into_owned()
        });
        let headers = a.headers.iter().filter_map(|(n, v)| Some((n.clone(), v.clone()?))).collect();
        Side { status: a.status, headers, body }
    }
}

#[cfg(test)]
mod tests {
    use super::chosen;

    #[test]
    fn the_percentage_is_exact_over_every_100_requests_and_spread_out() {
        for percent in 0..=100u32 {
            let picks: Vec<bool> = (0..1000).map(|n| chosen(n, percent)).collect();
            for window in picks.windows(100) {
                assert_eq!(window.iter().filter(|p| **p).count(), percent as usize, "{percent}%");
            }
            if (1..=50).contains(&percent) {
                assert!(picks.windows(2).all(|w| !(w[0] && w[1])), "{percent}%: two copies in a row");
            }
        }
    }
}
