//! `ficus canary <frontend> --to <backend> --steps 5,25,50,100 ...`: a canary moved in steps, each judged from
//! what the gateways themselves counted, with rollback on a breach. It sits beside the data flow like the other
//! operator commands: it writes the frontend's `Backends` weights to etcd (every instance follows them), and
//! reads each instance's live counters of the canary backend from its admin listener
//! (`/dashboard/data.json`, the cumulative `totals` of a backend row). A step is judged by the difference
//! between the readings at its start and its end, summed over instances: requests, the error rate weighted by
//! requests, and the worst instance's p99. During the step the same difference is looked at every second, so a
//! breach rolls back when it shows rather than at the end of the interval; promotion waits for the interval.
//!
//! The rollout's progress is state in etcd, not in this process: `<prefix>/ficus/rollouts/<frontend>` (a key the
//! config sources skip, see `model::OWN_STATE_DIR`), written right after each step's weights. Every write is
//! guarded by the mod revisions of both keys as the rollout last saw them, so an operator's own write to the
//! frontend pauses the rollout instead of being overwritten, `ficus rollout abort` stops a running command,
//! and running the same command again after it was killed continues from the stored step.
//!
//! `judge` holds the pure half (steps, weights, the judgement); `admin` reads an instance.

mod admin;
mod judge;

pub use judge::{delta, judge, parse_rate, parse_steps, weights, Verdict};

use super::{checked, object, read, OpsError, Stored};
use crate::model::Key;
use crate::source::etcd::{connect, rpc, EtcdSettings};
use crate::telemetry::live::Totals;
use admin::AdminClient;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use judge::{human, pct};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a held step looks at the counters for a breach (one read of each admin listener).
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct RolloutSpec {
    /// The canary backend.
    pub to: String,
    /// Percentages of traffic on the canary, strictly increasing, each 1..=100.
    pub steps: Vec<u32>,
    /// How long each step is held before it is judged.
    pub interval: Duration,
    /// Highest share of 5xx answers, 0..1.
    pub max_error_rate: f64,
    pub max_p99: Duration,
    /// Fewer canary requests than this in a step (over all instances) is too little to judge: the step is held
    /// for another interval, and says so.
    pub min_requests: u64,
    /// Each instance's admin listener, `http://host:port`.
    pub admin: Vec<String>,
    /// Sent as `Authorization: Bearer` when the admin listeners want a token.
    pub admin_token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Running,
    /// Stopped without rollback (an operator's write, an admin endpoint that cannot be read); the same command
    /// continues it.
    Paused,
    RolledBack,
    Aborted,
    Done,
}

impl Phase {
    fn active(self) -> bool {
        matches!(self, Phase::Running | Phase::Paused)
    }
}

/// A weight as the frontend stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weight {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Weight")]
    pub weight: u32,
}

/// The stored state of one frontend's rollout (JSON at `ficus/rollouts/<frontend>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub frontend: String,
    pub to: String,
    pub steps: Vec<u32>,
    /// The canary's percentage now (what the rollout last wrote).
    pub percent: u32,
    /// The other backends' weights when the rollout began: what a step scales and a rollback restores.
    pub baseline: Vec<Weight>,
    pub phase: Phase,
    /// The frontend key's mod revision as the rollout last wrote it.
    pub frontend_revision: i64,
    pub interval_ms: u64,
    pub max_error_rate: f64,
    pub max_p99_ms: u64,
    pub min_requests: u64,
    /// The last judgement, or why it stopped.
    pub note: String,
    pub updated_unix: u64,
}

/// The rollout's state key, relative to the prefix.
pub fn state_key(frontend: &str) -> String {
    format!("{}rollouts/{frontend}", crate::model::OWN_STATE_DIR)
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Where progress goes: whole lines, and (on a terminal) a one-line display redrawn in place.
pub trait Report {
    fn line(&mut self, text: &str);
    fn progress(&mut self, text: &str);
}

/// How a rollout command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    RolledBack(String),
    Paused(String),
    /// Stopped without writing more: aborted by another command, taken over by another run, or etcd failed.
    Stopped(String),
}

/// The keys' mod revisions as the rollout last saw them: every write is guarded by both.
struct Guard {
    frontend: i64,
    state: i64,
}

struct Run<'a> {
    settings: &'a EtcdSettings,
    client: etcd_client::Client,
    spec: &'a RolloutSpec,
    state: RolloutState,
    guard: Guard,
    http: AdminClient,
}

/// `ficus canary <frontend> --to <backend> --steps ...`: starts a rollout, or continues the one stored for this
/// frontend.
pub async fn rollout(
    settings: &EtcdSettings,
    frontend: &str,
    spec: &RolloutSpec,
    out: &mut dyn Report,
) -> Result<Outcome, OpsError> {
    if spec.steps.is_empty() {
        return Err(OpsError::Usage("--steps: give at least one step".into()));
    }
    if spec.admin.is_empty() {
        return Err(OpsError::Usage("--admin: give every instance's admin listener, http://host:port".into()));
    }
    let mut client = connect(settings).await?;
    let backend_key = Key::Backend { backend: spec.to.clone() }.to_string();
    if read(settings, &mut client, &backend_key).await?.is_none() {
        return Err(OpsError::Missing { key: backend_key });
    }
    let rel = Key::Frontend { frontend: frontend.to_string() }.to_string();
    let stored = read(settings, &mut client, &rel).await?.ok_or_else(|| OpsError::Missing { key: rel.clone() })?;
    let skey = state_key(frontend);
    let previous = read(settings, &mut client, &skey).await?;
    let previous_state = match &previous {
        Some(s) => Some(parse_state(&skey, s)?),
        None => None,
    };
    let (state, first) = match previous_state {
        Some(st) if st.phase.active() && st.to != spec.to => {
            return Err(OpsError::Usage(format!(
                "a rollout of {frontend} to {} is {}; abort it first (ficus rollout abort {frontend})",
                st.to,
                phase_name(st.phase)
            )));
        }
        Some(st) if st.phase.active() => {
            // Continue at the stored percentage: the first step at or above it, held again from its start.
            let first = spec.steps.iter().position(|p| *p >= st.percent).unwrap_or(spec.steps.len() - 1);
            if stored.mod_revision != st.frontend_revision {
                out.line(&format!(
                    "{rel} changed since the rollout wrote it (mod revision {} -> {}): continuing from it",
                    st.frontend_revision, stored.mod_revision
                ));
            }
            out.line(&format!(
                "resuming the rollout of {frontend} to {} ({} at {}%) at step {}/{} ({}%)",
                spec.to,
                phase_name(st.phase),
                st.percent,
                first + 1,
                spec.steps.len(),
                spec.steps[first]
            ));
            (RolloutState { phase: Phase::Running, ..st }, first)
        }
        _ => {
            let baseline = baseline(&rel, &stored, &spec.to)?;
            let state = RolloutState {
                frontend: frontend.to_string(),
                to: spec.to.clone(),
                steps: spec.steps.clone(),
                percent: 0,
                baseline,
                phase: Phase::Running,
                frontend_revision: stored.mod_revision,
                interval_ms: 0,
                max_error_rate: 0.0,
                max_p99_ms: 0,
                min_requests: 0,
                note: String::new(),
                updated_unix: 0,
            };
            (state, 0)
        }
    };
    let state = RolloutState {
        steps: spec.steps.clone(),
        interval_ms: spec.interval.as_millis() as u64,
        max_error_rate: spec.max_error_rate,
        max_p99_ms: spec.max_p99.as_millis() as u64,
        min_requests: spec.min_requests,
        ..state
    };
    let guard = Guard { frontend: stored.mod_revision, state: previous.map_or(0, |s| s.mod_revision) };
    let http = AdminClient::new(spec.admin_token.clone());
    let mut run = Run { settings, client, spec, state, guard, http };
    match run.steps(first, out).await {
        // etcd failed between writes (a read of the keys, or the state after a step): nothing more is written.
        Err(OpsError::Etcd(e)) => Err(OpsError::Stopped(format!(
            "etcd failed, the rollout stopped: {e}; {rel} keeps the weights last written ({} at {}%); run the same \
             command to continue",
            spec.to, run.state.percent
        ))),
        other => other,
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Running => "running",
        Phase::Paused => "paused",
        Phase::RolledBack => "rolled back",
        Phase::Aborted => "aborted",
        Phase::Done => "done",
    }
}

fn parse_state(key: &str, stored: &Stored) -> Result<RolloutState, OpsError> {
    serde_json::from_slice(&stored.value).map_err(|e| OpsError::NotJson { key: key.to_string(), why: e.to_string() })
}

/// The frontend's split without the canary: what the rollout moves traffic away from.
fn baseline(rel: &str, stored: &Stored, to: &str) -> Result<Vec<Weight>, OpsError> {
    let obj = object(rel, stored)?;
    let mut out: Vec<Weight> = match obj.get("Backends") {
        Some(list) => serde_json::from_value(list.clone())
            .map_err(|e| OpsError::NotJson { key: rel.to_string(), why: format!("Backends: {e}") })?,
        None => match obj.get("BackendId").and_then(Value::as_str) {
            Some(id) => vec![Weight { id: id.to_string(), weight: 100 }],
            None => Vec::new(),
        },
    };
    out.retain(|w| w.id != to);
    if out.iter().all(|w| w.weight == 0) {
        return Err(OpsError::Usage(format!(
            "{rel}: no backend other than {to} carries traffic, so there is nothing to move from"
        )));
    }
    Ok(out)
}

enum Written {
    Ok,
    /// Someone else wrote one of the keys: the outcome says who and what happens now.
    Conflict(Outcome),
}

impl Run<'_> {
    async fn steps(&mut self, first: usize, out: &mut dyn Report) -> Result<Outcome, OpsError> {
        let total = self.spec.steps.len();
        for i in first..total {
            let percent = self.spec.steps[i];
            let label = format!("step {}/{total} ({percent}%)", i + 1);
            let note = format!("{label}: holding");
            match self.write(percent, Phase::Running, &note, out).await? {
                Written::Ok => {}
                Written::Conflict(o) => return Ok(o),
            }
            out.line(&format!(
                "{label}: {} written at revision {}",
                split_text(&weights(&self.state.baseline, &self.spec.to, percent)),
                self.guard.frontend
            ));
            match self.hold(&label, out).await? {
                Held::Healthy(why) => out.line(&format!("{label}: healthy: {why}")),
                Held::End(o) => return Ok(o),
                Held::Breach(why) => {
                    out.line(&format!("{label}: BREACH: {why}"));
                    let note = format!("{label}: rolled back: {why}");
                    return match self.write(0, Phase::RolledBack, &note, out).await? {
                        Written::Ok => {
                            out.line(&format!(
                                "{label}: rolled back to {}",
                                split_text(&weights(&self.state.baseline, &self.spec.to, 0))
                            ));
                            Ok(Outcome::RolledBack(note))
                        }
                        Written::Conflict(o) => Ok(o),
                    };
                }
            }
        }
        let note = format!("done: {} at {}%", self.spec.to, self.state.percent);
        self.write_state_only(Phase::Done, &note).await?;
        out.line(&format!("{}: {note}", self.state.frontend));
        Ok(Outcome::Done)
    }

    /// Holds the current step for the interval (longer while there is too little traffic to judge), watching
    /// the keys for an operator's write or an abort, then judges it.
    async fn hold(&mut self, label: &str, out: &mut dyn Report) -> Result<Held, OpsError> {
        let start = match self.readings(Some(self.guard.frontend)).await {
            Ok(r) => r,
            Err(why) => return self.pause(&format!("{label}: {why}"), out).await.map(Held::End),
        };
        let tick = (self.spec.interval / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            let began = Instant::now();
            let mut next_look = began + LOOK_EVERY;
            while began.elapsed() < self.spec.interval {
                tokio::time::sleep(tick.min(self.spec.interval.saturating_sub(began.elapsed()))).await;
                if let Some(o) = self.interfered(out).await? {
                    return Ok(Held::End(o));
                }
                out.progress(&bar(label, self.state.percent, began.elapsed(), self.spec.interval));
                // A breach is acted on when it shows, not at the end of the step: a bad canary at 50% for
                // the rest of a 10-minute interval is what the rollback is there to prevent. Promotion still
                // waits for the whole interval.
                if Instant::now() >= next_look && began.elapsed() < self.spec.interval {
                    next_look = Instant::now() + LOOK_EVERY;
                    if let Some(now) = self.quick_readings().await {
                        let deltas: Vec<(String, Totals)> =
                            start.iter().zip(&now).map(|((inst, s), (_, e))| (inst.clone(), delta(s, e))).collect();
                        if let Verdict::Breach(why) = judge(self.spec, &deltas) {
                            let when = format!(
                                "{:.1}s into the step's {}",
                                began.elapsed().as_secs_f64(),
                                human(self.spec.interval)
                            );
                            return Ok(Held::Breach(format!("{why} ({when})")));
                        }
                    }
                }
            }
            let end = match self.readings(None).await {
                Ok(r) => r,
                Err(why) => return self.pause(&format!("{label}: {why}"), out).await.map(Held::End),
            };
            let deltas: Vec<(String, Totals)> =
                start.iter().zip(&end).map(|((inst, s), (_, e))| (inst.clone(), delta(s, e))).collect();
            match judge(self.spec, &deltas) {
                Verdict::Healthy(why) => return Ok(Held::Healthy(why)),
                Verdict::Breach(why) => return Ok(Held::Breach(why)),
                Verdict::TooFew(why) => {
                    out.line(&format!("{label}: {why}; holding another {}", human(self.spec.interval)));
                }
            }
        }
    }

    /// Whether someone else wrote the frontend or the rollout's state since we did.
    async fn interfered(&mut self, out: &mut dyn Report) -> Result<Option<Outcome>, OpsError> {
        let skey = state_key(&self.state.frontend);
        let state = read(self.settings, &mut self.client, &skey).await?;
        if state.as_ref().map_or(0, |s| s.mod_revision) != self.guard.state {
            return Ok(Some(self.taken_over(state.as_ref(), out)));
        }
        let rel = Key::Frontend { frontend: self.state.frontend.clone() }.to_string();
        let found = read(self.settings, &mut self.client, &rel).await?.map_or(0, |s| s.mod_revision);
        if found != self.guard.frontend {
            return self.operator_wrote(found, out).await.map(Some);
        }
        Ok(None)
    }

    fn taken_over(&self, state: Option<&Stored>, out: &mut dyn Report) -> Outcome {
        let skey = state_key(&self.state.frontend);
        let why = match state.map(|s| parse_state(&skey, s)) {
            Some(Ok(st)) if st.phase == Phase::Aborted => format!("aborted: {}", st.note),
            Some(Ok(st)) => format!(
                "another command took the rollout over ({} at {}%); this one stops without writing",
                phase_name(st.phase),
                st.percent
            ),
            Some(Err(e)) => format!("{e}; stopping without writing"),
            None => format!("{skey} was deleted; stopping without writing"),
        };
        out.line(&format!("{}: {why}", self.state.frontend));
        Outcome::Stopped(why)
    }

    async fn operator_wrote(&mut self, found: i64, out: &mut dyn Report) -> Result<Outcome, OpsError> {
        let rel = Key::Frontend { frontend: self.state.frontend.clone() }.to_string();
        let why = format!(
            "{rel} was written by someone else (mod revision {} -> {found}): rollout paused at {}% rather than \
             overwrite it; run the same command to continue, or `ficus rollout abort {}` to roll back",
            self.guard.frontend, self.state.percent, self.state.frontend
        );
        self.pause(&why, out).await
    }

    async fn pause(&mut self, why: &str, out: &mut dyn Report) -> Result<Outcome, OpsError> {
        self.write_state_only(Phase::Paused, why).await?;
        out.line(&format!("{}: paused: {why}", self.state.frontend));
        Ok(Outcome::Paused(why.to_string()))
    }

    /// Writes the step's weights and the state in one transaction guarded by both keys' mod revisions.
    async fn write(
        &mut self,
        percent: u32,
        phase: Phase,
        note: &str,
        out: &mut dyn Report,
    ) -> Result<Written, OpsError> {
        let rel = Key::Frontend { frontend: self.state.frontend.clone() }.to_string();
        let stored =
            read(self.settings, &mut self.client, &rel).await?.ok_or_else(|| OpsError::Missing { key: rel.clone() })?;
        if stored.mod_revision != self.guard.frontend {
            return self.operator_wrote(stored.mod_revision, out).await.map(Written::Conflict);
        }
        let mut obj = object(&rel, &stored)?;
        obj.remove("BackendId");
        let split = weights(&self.state.baseline, &self.spec.to, percent);
        obj.insert("Backends".into(), serde_json::to_value(&split).unwrap_or(Value::Null));
        let bytes = checked(&rel, &Value::Object(obj))?;
        let mut next = self.state.clone();
        next.percent = percent;
        next.phase = phase;
        next.note = note.to_string();
        next.updated_unix = now_unix();
        let fkey = self.settings.absolute_key(&rel);
        let skey = self.settings.absolute_key(&state_key(&self.state.frontend));
        let state_guard = if self.guard.state == 0 {
            Compare::create_revision(skey.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(skey.clone(), CompareOp::Equal, self.guard.state)
        };
        // The state follows in a second write, since it records this write's revision, which etcd tells only
        // after. A command killed between the two leaves the frontend one step ahead of its state; running it
        // again says so and continues from the state's step.
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(fkey.clone(), CompareOp::Equal, self.guard.frontend), state_guard])
            .and_then(vec![TxnOp::put(fkey, bytes, None)]);
        let resp = rpc(self.settings, "rollout step", self.client.txn(txn)).await.map_err(|e| {
            OpsError::Stopped(format!(
                "etcd write failed, the rollout stopped: {e}; {rel} keeps the weights last written ({} at {}%)",
                self.spec.to, self.state.percent
            ))
        })?;
        if !resp.succeeded() {
            return self.conflict(out).await.map(Written::Conflict);
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        self.guard.frontend = revision;
        next.frontend_revision = revision;
        self.state = next;
        self.put_state().await?;
        Ok(Written::Ok)
    }

    /// Works out who got in between after a guarded write failed.
    async fn conflict(&mut self, out: &mut dyn Report) -> Result<Outcome, OpsError> {
        match self.interfered(out).await? {
            Some(o) => Ok(o),
            None => Ok(Outcome::Stopped("a guarded write failed and nothing has changed since; run it again".into())),
        }
    }

    async fn write_state_only(&mut self, phase: Phase, note: &str) -> Result<(), OpsError> {
        self.state.phase = phase;
        self.state.note = note.to_string();
        self.state.updated_unix = now_unix();
        self.put_state().await
    }

    /// Writes the state, guarded by its own mod revision only (the frontend is not written).
    async fn put_state(&mut self) -> Result<(), OpsError> {
        self.state.updated_unix = now_unix();
        let skey = self.settings.absolute_key(&state_key(&self.state.frontend));
        let value =
            serde_json::to_vec(&self.state).map_err(|e| OpsError::NotJson { key: skey.clone(), why: e.to_string() })?;
        let guard = if self.guard.state == 0 {
            Compare::create_revision(skey.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(skey.clone(), CompareOp::Equal, self.guard.state)
        };
        let txn = Txn::new().when(vec![guard]).and_then(vec![TxnOp::put(skey.clone(), value, None)]);
        let resp = rpc(self.settings, "rollout state", self.client.txn(txn)).await.map_err(|e| {
            OpsError::Stopped(format!(
                "etcd write failed, the rollout stopped: {e}; the frontend keeps the weights last written ({} at {}%)",
                self.spec.to, self.state.percent
            ))
        })?;
        if !resp.succeeded() {
            return Err(OpsError::Conflict {
                key: state_key(&self.state.frontend),
                expected: self.guard.state,
                found: -1,
                outcome: "another command changed the rollout; this one stops".into(),
            });
        }
        self.guard.state = resp.header().map_or(0, |h| h.revision());
        Ok(())
    }

    /// The counters at every instance, one try each, for a look during a step; `None` when one cannot be read
    /// (the judgement at the end of the step retries, and pauses the rollout if it still cannot read).
    async fn quick_readings(&self) -> Option<Vec<(String, Totals)>> {
        let mut out = Vec::with_capacity(self.spec.admin.len());
        for inst in &self.spec.admin {
            let (_, totals) = self.http.backend_totals(inst, &self.spec.to).await.ok()?;
            out.push((inst.clone(), totals));
        }
        Some(out)
    }

    /// The canary backend's counters at every instance, in `--admin` order. With `applied`, first waits (up to
    /// one interval) for each instance to have applied that etcd revision, so a step's reading starts after the
    /// instance switched weights.
    async fn readings(&self, applied: Option<i64>) -> Result<Vec<(String, Totals)>, String> {
        let mut out = Vec::with_capacity(self.spec.admin.len());
        let deadline = Instant::now() + self.spec.interval;
        for inst in &self.spec.admin {
            loop {
                let r = self.http.backend_totals(inst, &self.spec.to).await;
                match r {
                    Ok((revision, totals)) => {
                        if applied.is_some_and(|want| (revision as i64) < want) && Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        out.push((inst.clone(), totals));
                        break;
                    }
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!("{inst}: {e}; trying again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(format!("cannot judge: {e}")),
                }
            }
        }
        Ok(out)
    }
}

enum Held {
    Healthy(String),
    Breach(String),
    End(Outcome),
}

fn split_text(split: &[Weight]) -> String {
    split.iter().map(|w| format!("{} {}%", w.id, w.weight)).collect::<Vec<_>>().join(", ")
}

fn bar(label: &str, percent: u32, elapsed: Duration, interval: Duration) -> String {
    const WIDTH: usize = 20;
    let filled = (percent as usize * WIDTH / 100).min(WIDTH);
    format!(
        "[{}{}] {label} held {:.0}s/{:.0}s",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        elapsed.as_secs_f64().min(interval.as_secs_f64()),
        interval.as_secs_f64()
    )
}

/// `ficus rollout status <frontend>`: the stored state, and whether the frontend still holds what it wrote.
pub async fn status(settings: &EtcdSettings, frontend: &str) -> Result<String, OpsError> {
    let mut client = connect(settings).await?;
    let skey = state_key(frontend);
    let stored = read(settings, &mut client, &skey).await?.ok_or_else(|| OpsError::Missing { key: skey.clone() })?;
    let st = parse_state(&skey, &stored)?;
    let rel = Key::Frontend { frontend: frontend.to_string() }.to_string();
    let now = read(settings, &mut client, &rel).await?.map_or(0, |s| s.mod_revision);
    let steps: Vec<String> = st.steps.iter().map(|s| s.to_string()).collect();
    let frontend_line = if now == st.frontend_revision {
        format!("{rel}: as the rollout wrote it (mod revision {now})")
    } else {
        format!("{rel}: changed since the rollout wrote it (mod revision {} -> {now})", st.frontend_revision)
    };
    Ok(format!(
        "rollout of {frontend} to {}: {} at {}% (steps {}; interval {})\n\
         limits: error rate {}, p99 {}ms, at least {} request(s) a step\n\
         split: {}\n{frontend_line}\nlast: {}\nupdated: {} (unix)",
        st.to,
        phase_name(st.phase),
        st.percent,
        steps.join(","),
        human(Duration::from_millis(st.interval_ms)),
        pct(st.max_error_rate),
        st.max_p99_ms,
        st.min_requests,
        split_text(&weights(&st.baseline, &st.to, st.percent)),
        st.note,
        st.updated_unix
    ))
}

/// `ficus rollout abort <frontend>`: the canary back to 0% (the baseline restored) and the rollout marked
/// aborted, in one transaction; a running command sees it and stops.
pub async fn abort(settings: &EtcdSettings, frontend: &str) -> Result<String, OpsError> {
    let mut client = connect(settings).await?;
    let skey = state_key(frontend);
    let stored_state =
        read(settings, &mut client, &skey).await?.ok_or_else(|| OpsError::Missing { key: skey.clone() })?;
    let mut st = parse_state(&skey, &stored_state)?;
    if !st.phase.active() {
        return Err(OpsError::Usage(format!(
            "the rollout of {frontend} is {}: nothing to abort",
            phase_name(st.phase)
        )));
    }
    let rel = Key::Frontend { frontend: frontend.to_string() }.to_string();
    let stored = read(settings, &mut client, &rel).await?.ok_or_else(|| OpsError::Missing { key: rel.clone() })?;
    let mut obj = object(&rel, &stored)?;
    obj.remove("BackendId");
    let split = weights(&st.baseline, &st.to, 0);
    obj.insert("Backends".into(), serde_json::to_value(&split).unwrap_or(Value::Null));
    let bytes = checked(&rel, &Value::Object(obj))?;
    st.note = format!("aborted at {}% by `ficus rollout abort`", st.percent);
    st.percent = 0;
    st.phase = Phase::Aborted;
    st.updated_unix = now_unix();
    let fkey = settings.absolute_key(&rel);
    let abs_state = settings.absolute_key(&skey);
    let state_bytes =
        serde_json::to_vec(&st).map_err(|e| OpsError::NotJson { key: skey.clone(), why: e.to_string() })?;
    let txn = Txn::new()
        .when(vec![
            Compare::mod_revision(fkey.clone(), CompareOp::Equal, stored.mod_revision),
            Compare::mod_revision(abs_state.clone(), CompareOp::Equal, stored_state.mod_revision),
        ])
        .and_then(vec![TxnOp::put(fkey, bytes, None), TxnOp::put(abs_state, state_bytes, None)]);
    let resp = rpc(settings, "rollout abort", client.txn(txn)).await?;
    if !resp.succeeded() {
        return Err(OpsError::Conflict {
            key: rel,
            expected: stored.mod_revision,
            found: -1,
            outcome: "the rollout moved while we worked; nothing was written, run it again".into(),
        });
    }
    Ok(format!("{}: rolled back ({}); rollout aborted", st.frontend, split_text(&split)))
}
