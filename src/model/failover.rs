//! A frontend's failover settings, decoded and checked per key: Vulcand's `Settings.FailoverPredicate` bound
//! to the failover vocabulary (so `Attempts("x")` or `ResponseCode() == "503"` is refused when the value
//! arrives, naming the field and the position), and the Ficus `Settings.RetryBudget`. The proxy's failover
//! (`upstream::failover`, run from the send phase) only ever sees the checked [`FailoverConfig`].

use super::{ConfigError, Key};
use crate::predicate::{self, Predicate, Signature, Type};
use serde::{Deserialize, Serialize, Serializer};

/// The functions a failover predicate may call, about the attempt that just ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverFn {
    /// No answer came: the connection could not be made, or it broke before a response head.
    IsNetworkError,
    /// Attempts made so far, the one that just ended included (1 after the first).
    Attempts,
    /// The request's method, `"GET"`.
    RequestMethod,
    /// The status of the answer; 0 when none came.
    ResponseCode,
}

pub const FAILOVER_VOCABULARY: &[Signature<FailoverFn>] = &[
    Signature { name: "IsNetworkError", args: &[], result: Type::Bool, func: FailoverFn::IsNetworkError },
    Signature { name: "Attempts", args: &[], result: Type::Int, func: FailoverFn::Attempts },
    Signature { name: "RequestMethod", args: &[], result: Type::Str, func: FailoverFn::RequestMethod },
    Signature { name: "ResponseCode", args: &[], result: Type::Int, func: FailoverFn::ResponseCode },
];

/// Attempts a request gets when its predicate does not bound them with `Attempts()`: the first and one retry.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 2;
/// Attempts a request never exceeds, whatever its predicate says (Vulcand's bound).
pub const MAX_ATTEMPTS: u32 = 10;

/// `Settings.RetryBudget` as stored.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct RetryBudgetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_per_second: Option<u32>,
}

/// A checked failover setting.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FailoverConfig {
    #[serde(serialize_with = "ser_predicate")]
    pub predicate: Predicate<FailoverFn>,
    /// `MAX_ATTEMPTS` when the predicate bounds attempts itself, `DEFAULT_MAX_ATTEMPTS` otherwise.
    pub max_attempts: u32,
    /// Retries stay within this share of the frontend's requests...
    pub budget_percent: u32,
    /// ...or this many a second, whichever allows more.
    pub budget_min_per_second: u32,
}

fn ser_predicate<S: Serializer>(p: &Predicate<FailoverFn>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.text())
}

/// Envoy's retry budget defaults: 20% of requests, and a floor of 3 a second so a quiet frontend can retry.
pub const DEFAULT_BUDGET_PERCENT: u32 = 20;
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 3;

/// Checks a frontend's failover settings; `None` when it has no predicate.
pub fn check(
    key: &Key,
    predicate: &str,
    budget: Option<&RetryBudgetSpec>,
) -> Result<Option<FailoverConfig>, ConfigError> {
    let percent = budget.and_then(|b| b.percent).unwrap_or(DEFAULT_BUDGET_PERCENT);
    if percent > 100 {
        return Err(ConfigError::new(key, Some("Settings.RetryBudget.Percent"), format!("{percent} is above 100")));
    }
    let min_per_second = budget.and_then(|b| b.min_per_second).unwrap_or(DEFAULT_BUDGET_MIN_PER_SECOND);
    if min_per_second > 10_000 {
        let msg = format!("{min_per_second} is above 10000");
        return Err(ConfigError::new(key, Some("Settings.RetryBudget.MinPerSecond"), msg));
    }
    if predicate.trim().is_empty() {
        return Ok(None);
    }
    let predicate = predicate::compile(predicate, FAILOVER_VOCABULARY)
        .map_err(|e| ConfigError::new(key, Some("Settings.FailoverPredicate"), e))?;
    let bounded = predicate.calls().iter().any(|(f, _)| *f == FailoverFn::Attempts);
    let max_attempts = if bounded { MAX_ATTEMPTS } else { DEFAULT_MAX_ATTEMPTS };
    Ok(Some(FailoverConfig { predicate, max_attempts, budget_percent: percent, budget_min_per_second: min_per_second }))
}

#[cfg(test)]
mod tests {
    use crate::model::{Change, ConfigState};

    #[test]
    fn bad_failover_settings_are_refused_naming_the_field() {
        let mut s = ConfigState::new();
        let bad = [
            (r#"{"FailoverPredicate":"IsNetworkError() &&"}"#, "Settings.FailoverPredicate"),
            (r#"{"FailoverPredicate":"Attempts(\"x\") < 2"}"#, "Settings.FailoverPredicate"),
            (r#"{"FailoverPredicate":"ResponseCode() == \"503\""}"#, "Settings.FailoverPredicate"),
            (r#"{"FailoverPredicate":"IsDown()"}"#, "Settings.FailoverPredicate"),
            (r#"{"FailoverPredicate":"Attempts()"}"#, "Settings.FailoverPredicate"),
            (r#"{"RetryBudget":{"Percent":150}}"#, "Settings.RetryBudget.Percent"),
            (r#"{"RetryBudget":{"MinPerSecond":100000}}"#, "Settings.RetryBudget.MinPerSecond"),
            (r#"{"RetryBudget":{"Share":1}}"#, "Settings.RetryBudget.Share"),
        ];
        for (settings, field) in bad {
            let value = format!(r#"{{"Type":"http","BackendId":"b","Route":"Path(`/`)","Settings":{settings}}}"#);
            let e = s.apply(Change::Put { key: "frontends/f/frontend".into(), value: value.into_bytes() }).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{settings}: {e}");
        }
        let good = r#"{"Type":"http","BackendId":"b","Route":"Path(`/`)","Settings":{"FailoverPredicate":"(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2 && RequestMethod() == \"GET\""}}"#;
        assert!(s.apply(Change::Put { key: "frontends/f/frontend".into(), value: good.as_bytes().to_vec() }).is_ok());
    }

    #[test]
    fn attempts_are_bounded_by_default_and_by_the_predicate() {
        let key = crate::model::Key::parse("frontends/f/frontend").unwrap();
        let unbounded = super::check(&key, "IsNetworkError()", None).unwrap().unwrap();
        assert_eq!(unbounded.max_attempts, super::DEFAULT_MAX_ATTEMPTS);
        let bounded = super::check(&key, "IsNetworkError() && Attempts() < 4", None).unwrap().unwrap();
        assert_eq!(bounded.max_attempts, super::MAX_ATTEMPTS);
        assert!(super::check(&key, "", None).unwrap().is_none());
    }
}
