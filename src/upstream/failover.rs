//! A frontend's failover as the send phase runs it: the bound `FailoverPredicate` evaluated against the
//! attempt that just ended ([`Attempt`]), the bound on attempts, and the retry budget that keeps a failing
//! backend from multiplying its own load. Compiled with the frontend (`table::Compiler`); the proxy's send
//! phase (`proxy::failover`) asks it after every attempt.
//!
//! The budget is Envoy's idea in a lock-free form: every request puts `Percent`/100 of a token in, every retry
//! takes one whole token out, and the tokens saved are capped, so retries stay within `Percent` of requests
//! plus a small burst. A floor of `MinPerSecond` retries lets a quiet frontend retry at all. Its state
//! ([`Budget`]) belongs to the frontend's id, not to one compiled value: a route edit or a server added while
//! the backend fails must not hand out a fresh burst of retries, so recompiles share it through [`Budgets`].

use crate::model::{FailoverConfig, FailoverFn};
use crate::predicate::{Env, Literal, Value};
use metrics::Counter;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// One token, in the budget's fixed-point units (a request deposits `percent * 10` of them).
const TOKEN: i64 = 1000;
/// Tokens saved up at most: the burst of retries a long calm allows. A server that dies under load fails every
/// request in flight on it at once, and each needs its retry: with 10, a busy frontend was refused one in the
/// kill bench (benches/resilience.sh); 100 covers the in-flight requests of a busy frontend's server.
const SAVED_TOKENS: i64 = 100;

/// The largest request body kept in memory so the request can be sent again; a larger (or streamed) body
/// goes out once, and a failed attempt with it is answered as it is.
pub const REPLAY_BODY_LIMIT: u64 = 64 * 1024;

/// What the predicate is asked about: the attempt that just ended.
pub struct Attempt<'a> {
    pub attempts: u32,
    pub network_error: bool,
    pub method: &'a str,
    /// 0 when no answer came.
    pub code: u16,
}

impl Env<FailoverFn> for Attempt<'_> {
    fn call<'a>(&'a self, func: FailoverFn, _args: &'a [Literal]) -> Value<'a> {
        match func {
            FailoverFn::IsNetworkError => Value::Bool(self.network_error),
            FailoverFn::Attempts => Value::Int(i64::from(self.attempts)),
            FailoverFn::RequestMethod => Value::Str(self.method),
            FailoverFn::ResponseCode => Value::Int(i64::from(self.code)),
        }
    }
}

/// Why a retry the predicate asked for did not happen (or that it did), as `ficus_retries_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The predicate does not ask for one, or the attempts are used up.
    Done,
    Retry,
    /// The predicate asked, the budget refused.
    BudgetExhausted,
    /// The predicate asked, but the request's body was not kept.
    NotReplayable,
}

pub struct Failover {
    config: Arc<FailoverConfig>,
    budget: Arc<Budget>,
    retried: Counter,
    refused: Counter,
    not_replayable: Counter,
}

/// A frontend's retry budget and its decision counts, shared by every compiled value of the frontend.
#[derive(Debug)]
pub struct Budget {
    credit: AtomicI64,
    /// The second (on the health clock) the floor counts in, and the retries it allowed in it.
    floor_second: AtomicU64,
    floor_used: AtomicU32,
    /// Decisions for `/status` (retried, budget exhausted, not replayable), since the frontend appeared.
    counts: [AtomicU64; 3],
}

impl Budget {
    fn new() -> Self {
        Budget {
            // A fresh frontend may retry a little at once.
            credit: AtomicI64::new(SAVED_TOKENS * TOKEN),
            floor_second: AtomicU64::new(0),
            floor_used: AtomicU32::new(0),
            counts: Default::default(),
        }
    }
}

/// Budgets by frontend id, held weakly: a budget lives while some table's frontend uses it. Touched only when
/// a frontend is compiled, never per request.
#[derive(Default)]
pub struct Budgets(crate::kept::Kept<String, Budget>);

impl Budgets {
    /// The frontend's budget: the one its previous value used, or a new one.
    pub fn get(&self, frontend: &str) -> Arc<Budget> {
        self.0.get_or_make(frontend.to_string(), Budget::new)
    }
}

/// What `/status` shows about a frontend's failover.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailoverStatus {
    pub frontend: String,
    pub predicate: String,
    pub max_attempts: u32,
    pub retried: u64,
    pub budget_exhausted: u64,
    pub not_replayable: u64,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover").field("predicate", &self.config.predicate.text()).finish_non_exhaustive()
    }
}

impl Failover {
    pub fn new(frontend: &str, config: Arc<FailoverConfig>, budget: Arc<Budget>) -> Self {
        let counter = |outcome: &'static str| metrics::counter!(crate::telemetry::RETRIES_TOTAL, "frontend" => frontend.to_string(), "outcome" => outcome);
        Failover {
            config,
            budget,
            retried: counter("retried"),
            refused: counter("budget_exhausted"),
            not_replayable: counter("not_replayable"),
        }
    }

    pub fn status(&self, frontend: &str) -> FailoverStatus {
        let [retried, budget_exhausted, not_replayable] = self.budget.counts.each_ref().map(|c| c.load(Relaxed));
        FailoverStatus {
            frontend: frontend.to_string(),
            predicate: self.config.predicate.text().to_string(),
            max_attempts: self.config.max_attempts,
            retried,
            budget_exhausted,
            not_replayable,
        }
    }

    pub fn config(&self) -> &FailoverConfig {
        &self.config
    }

    /// A request came in: its share of a retry goes into the budget. Costs one load once the budget is full.
    #[inline]
    pub fn deposit(&self) {
        if self.budget.credit.load(Relaxed) < SAVED_TOKENS * TOKEN {
            self.budget.credit.fetch_add(i64::from(self.config.budget_percent) * TOKEN / 100, Relaxed);
        }
    }

    /// Whether the attempt that just ended is followed by another. `replayable`: the request can be sent again.
    /// `now` is on the health clock (milliseconds). Counts the decision when the predicate asked for a retry.
    pub fn decide(&self, attempt: &Attempt<'_>, replayable: bool, now: u64) -> Decision {
        if attempt.attempts >= self.config.max_attempts || !self.config.predicate.eval(attempt) {
            return Decision::Done;
        }
        let (decision, counter) = if !replayable {
            (Decision::NotReplayable, &self.not_replayable)
        } else if !self.withdraw(now) {
            (Decision::BudgetExhausted, &self.refused)
        } else {
            (Decision::Retry, &self.retried)
        };
        counter.increment(1);
        let at = match decision {
            Decision::Retry => 0,
            Decision::BudgetExhausted => 1,
            _ => 2,
        };
        self.budget.counts[at].fetch_add(1, Relaxed);
        decision
    }

    fn withdraw(&self, now: u64) -> bool {
        let budget = &self.budget;
        let taken = budget.credit.fetch_update(Relaxed, Relaxed, |c| (c >= TOKEN).then_some(c - TOKEN)).is_ok();
        if taken {
            return true;
        }
        let second = now / 1000;
        if budget.floor_second.load(Relaxed) != second && budget.floor_second.swap(second, Relaxed) != second {
            budget.floor_used.store(0, Relaxed);
        }
        budget.floor_used.fetch_add(1, Relaxed) < self.config.budget_min_per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failover(predicate: &str, percent: u32, floor: u32) -> Failover {
        let key = crate::model::Key::parse("frontends/f/frontend").expect("key");
        let budget = crate::model::RetryBudgetSpec { percent: Some(percent), min_per_second: Some(floor) };
        let config = crate::model::failover::check(&key, predicate, Some(&budget)).expect("valid").expect("some");
        Failover::new("f", Arc::new(config), Arc::new(Budget::new()))
    }

    fn attempt(attempts: u32, code: u16) -> Attempt<'static> {
        Attempt { attempts, network_error: code == 0, method: "GET", code }
    }

    #[test]
    fn the_predicate_and_the_attempt_bound_decide() {
        let f = failover("IsNetworkError() || ResponseCode() == 503", 100, 0);
        assert_eq!(f.decide(&attempt(1, 0), true, 1), Decision::Retry);
        assert_eq!(f.decide(&attempt(1, 503), true, 1), Decision::Retry);
        assert_eq!(f.decide(&attempt(1, 500), true, 1), Decision::Done);
        // No Attempts() in the predicate: one retry at most.
        assert_eq!(f.decide(&attempt(2, 0), true, 1), Decision::Done);
        assert_eq!(f.decide(&attempt(1, 0), false, 1), Decision::NotReplayable);
        let f = failover("IsNetworkError() && Attempts() <= 3", 100, 0);
        assert_eq!(f.decide(&attempt(3, 0), true, 1), Decision::Retry);
        assert_eq!(f.decide(&attempt(4, 0), true, 1), Decision::Done);
        let f = failover("IsNetworkError() && RequestMethod() == \"POST\"", 100, 0);
        assert_eq!(f.decide(&attempt(1, 0), true, 1), Decision::Done);
    }

    #[test]
    fn retries_stay_within_the_budget_plus_the_floor() {
        let f = failover("ResponseCode() == 503", 20, 3);
        let mut retries = 0;
        // 1000 requests in one second, each failing with 503.
        for _ in 0..1000 {
            f.deposit();
            if f.decide(&attempt(1, 503), true, 5_000) == Decision::Retry {
                retries += 1;
            }
        }
        // 20% of 1000, the saved burst, and the floor of 3 for that second.
        assert!((200..=200 + SAVED_TOKENS as usize + 3).contains(&retries), "{retries}");
        // A new second: the floor allows 3 more with no credit left.
        let more = (0..10).filter(|_| f.decide(&attempt(1, 503), true, 6_000) == Decision::Retry).count();
        assert_eq!(more, 3);
    }

    #[test]
    fn a_recompiled_frontend_keeps_its_spent_budget_and_counts() {
        let budgets = Budgets::default();
        let key = crate::model::Key::parse("frontends/f/frontend").expect("key");
        let spec = crate::model::RetryBudgetSpec { percent: Some(0), min_per_second: Some(0) };
        let config =
            |p: &str| Arc::new(crate::model::failover::check(&key, p, Some(&spec)).expect("ok").expect("some"));
        let first = Failover::new("f", config("ResponseCode() == 503"), budgets.get("f"));
        let spent = (0..200).filter(|_| first.decide(&attempt(1, 503), true, 1_000) == Decision::Retry).count();
        assert_eq!(spent, SAVED_TOKENS as usize, "the saved burst, then nothing");
        // The frontend's value changes (another predicate): the budget stays spent, the counts go on.
        let second = Failover::new("f", config("ResponseCode() >= 500"), budgets.get("f"));
        drop(first);
        assert_eq!(second.decide(&attempt(1, 503), true, 1_000), Decision::BudgetExhausted);
        assert_eq!(second.status("f").retried, SAVED_TOKENS as u64);
        // Another frontend has its own; a frontend gone and back starts afresh.
        let other = Failover::new("g", config("ResponseCode() == 503"), budgets.get("g"));
        assert_eq!(other.decide(&attempt(1, 503), true, 1_000), Decision::Retry);
        drop(second);
        let again = Failover::new("f", config("ResponseCode() == 503"), budgets.get("f"));
        assert_eq!(again.decide(&attempt(1, 503), true, 1_000), Decision::Retry);
    }
}
