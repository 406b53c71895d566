//! The pure half of a rollout: the steps and limits as the operator writes them, the weights of a step, and
//! the judgement of a step from each instance's counter differences. No I/O, so all of it is tested here.

use super::{RolloutSpec, Weight};
use crate::ops::OpsError;
use crate::telemetry::live::Totals;
use std::time::Duration;

/// `5,25,50,100`: strictly increasing whole percentages in 1..=100.
pub fn parse_steps(s: &str) -> Result<Vec<u32>, OpsError> {
    let mut out: Vec<u32> = Vec::new();
    for part in s.split(',') {
        let p: u32 = part
            .trim()
            .trim_end_matches('%')
            .parse()
            .map_err(|_| OpsError::Usage(format!("--steps: `{part}` is not a whole percentage")))?;
        if !(1..=100).contains(&p) {
            return Err(OpsError::Usage(format!("--steps: {p} is not within 1..100")));
        }
        if out.last().is_some_and(|last| *last >= p) {
            return Err(OpsError::Usage(format!("--steps: {p} does not rise above the step before it")));
        }
        out.push(p);
    }
    Ok(out)
}

/// `1%` (or `1`, or `0.5%`) as a share, 0..1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().trim_end_matches('%').parse().map_err(|_| format!("`{s}` is not a percentage"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("`{s}` is not within 0%..100%"));
    }
    Ok(v / 100.0)
}

/// The weights of a step: the canary at `percent`, the baseline's backends sharing the rest in their own
/// proportions (largest remainder, so the whole is exactly 100). The canary keeps an entry at 0%, and the
/// baseline keeps theirs at 100%, so the frontend always names both sides.
pub fn weights(baseline: &[Weight], to: &str, percent: u32) -> Vec<Weight> {
    let rest = 100 - percent.min(100);
    let sum: u64 = baseline.iter().map(|w| u64::from(w.weight)).sum();
    let mut out: Vec<Weight> = Vec::with_capacity(baseline.len() + 1);
    if sum > 0 {
        let shares: Vec<(u32, u64)> = baseline
            .iter()
            .map(|w| {
                let exact = u64::from(w.weight) * u64::from(rest);
                ((exact / sum) as u32, exact % sum)
            })
            .collect();
        let mut left = rest - shares.iter().map(|(s, _)| s).sum::<u32>();
        let mut order: Vec<usize> = (0..shares.len()).collect();
        order.sort_by(|a, b| shares[*b].1.cmp(&shares[*a].1).then(a.cmp(b)));
        let mut give = vec![0u32; shares.len()];
        for i in order {
            if left == 0 {
                break;
            }
            give[i] = 1;
            left -= 1;
        }
        for (i, w) in baseline.iter().enumerate() {
            out.push(Weight { id: w.id.clone(), weight: shares[i].0 + give[i] });
        }
    }
    out.push(Weight { id: to.to_string(), weight: percent.min(100) });
    out
}

/// Counter difference between two readings of one instance; a counter that went down means the instance
/// restarted (or its counters were dropped and made again), and then everything it counted since is new.
pub fn delta(start: &Totals, end: &Totals) -> Totals {
    let restarted = end.requests < start.requests
        || end.errors < start.errors
        || end.latency.iter().zip(&start.latency).any(|(e, s)| e < s);
    if restarted {
        *end
    } else {
        end.since(start)
    }
}

/// What one step's numbers say.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Healthy(String),
    /// Too few requests to judge: hold on.
    TooFew(String),
    Breach(String),
}

/// Judges a step from each instance's difference (`(instance, counters)`).
pub fn judge(spec: &RolloutSpec, per_instance: &[(String, Totals)]) -> Verdict {
    let requests: u64 = per_instance.iter().map(|(_, t)| t.requests).sum();
    let errors: u64 = per_instance.iter().map(|(_, t)| t.errors).sum();
    if requests < spec.min_requests.max(1) {
        return Verdict::TooFew(format!(
            "{requests} request(s) to {} so far, fewer than --min-requests {}: too little to judge",
            spec.to,
            spec.min_requests.max(1)
        ));
    }
    let rate = errors as f64 / requests as f64;
    let worst_rate = per_instance
        .iter()
        .filter(|(_, t)| t.requests > 0)
        .map(|(i, t)| (i, t.errors as f64 / t.requests as f64))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let worst_p99 = per_instance
        .iter()
        .filter_map(|(i, t)| t.quantile(0.99).map(|q| (i, Duration::from_secs_f64(q))))
        .max_by_key(|(_, q)| *q);
    let limit_rate = pct(spec.max_error_rate);
    if rate > spec.max_error_rate {
        let (inst, r) = worst_rate.map(|(i, r)| (i.as_str(), r)).unwrap_or(("?", rate));
        return Verdict::Breach(format!(
            "error rate {} ({errors} of {requests} requests; worst instance {inst}: {}) is above --max-error-rate {limit_rate}",
            pct(rate),
            pct(r)
        ));
    }
    if let Some((inst, p99)) = worst_p99 {
        if p99 > spec.max_p99 {
            return Verdict::Breach(format!(
                "p99 {} at instance {inst} is above --max-p99 {}",
                ms(p99),
                ms(spec.max_p99)
            ));
        }
    }
    let p99 = worst_p99.map_or("-".to_string(), |(_, q)| ms(q));
    Verdict::Healthy(format!(
        "{requests} requests, error rate {} (limit {limit_rate}), worst p99 {p99} (limit {})",
        pct(rate),
        ms(spec.max_p99)
    ))
}

pub(super) fn pct(share: f64) -> String {
    let v = share * 100.0;
    if (v - v.round()).abs() < 0.005 {
        format!("{v:.0}%")
    } else {
        format!("{v:.2}%")
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1e3)
}

/// An interval as an operator writes it: `60s`, or `1500ms` when it is not whole seconds.
pub(super) fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: &str, weight: u32) -> Weight {
        Weight { id: id.into(), weight }
    }

    fn spec() -> RolloutSpec {
        RolloutSpec {
            to: "gtin".into(),
            steps: vec![5, 25, 50, 100],
            interval: Duration::from_secs(1),
            max_error_rate: 0.01,
            max_p99: Duration::from_millis(250),
            min_requests: 10,
            admin: vec!["http://a".into()],
            admin_token: None,
        }
    }

    fn totals(requests: u64, errors: u64, bucket: usize) -> Totals {
        let mut t = Totals { requests, errors, ..Totals::default() };
        t.latency[bucket] = requests;
        t
    }

    #[test]
    fn steps_rise_within_one_to_a_hundred() {
        assert_eq!(parse_steps("5,25,50,100").unwrap(), vec![5, 25, 50, 100]);
        assert_eq!(parse_steps("10%, 100%").unwrap(), vec![10, 100]);
        assert!(parse_steps("5,5").unwrap_err().to_string().contains("does not rise"));
        assert!(parse_steps("0,50").unwrap_err().to_string().contains("within 1..100"));
        assert!(parse_steps("5,x").unwrap_err().to_string().contains("`x`"));
        assert_eq!(parse_rate("1%").unwrap(), 0.01);
        assert_eq!(parse_rate("0.5").unwrap(), 0.005);
        assert!(parse_rate("101%").is_err());
    }

    #[test]
    fn a_step_shares_the_rest_in_the_baselines_proportions_and_sums_to_100() {
        let base = [w("legacy", 100)];
        assert_eq!(weights(&base, "gtin", 25), vec![w("legacy", 75), w("gtin", 25)]);
        assert_eq!(weights(&base, "gtin", 100), vec![w("legacy", 0), w("gtin", 100)]);
        assert_eq!(weights(&base, "gtin", 0), vec![w("legacy", 100), w("gtin", 0)]);
        let two = [w("a", 1), w("b", 2)];
        for p in 0..=100 {
            let s = weights(&two, "c", p);
            assert_eq!(s.iter().map(|w| w.weight).sum::<u32>(), 100, "{p}: {s:?}");
            assert!(s[1].weight >= s[0].weight, "{p}: {s:?}");
        }
        assert_eq!(weights(&two, "c", 1), vec![w("a", 33), w("b", 66), w("c", 1)]);
    }

    #[test]
    fn a_restarted_instance_counts_from_its_restart() {
        let d = delta(&totals(100, 1, 3), &totals(150, 1, 3));
        assert_eq!((d.requests, d.errors), (50, 0));
        let d = delta(&totals(100, 1, 3), &totals(7, 2, 3));
        assert_eq!((d.requests, d.errors), (7, 2));
    }

    #[test]
    fn judgement_weights_errors_by_requests_and_takes_the_worst_p99() {
        let s = spec();
        // 1 error in 200 (0.5%) overall, though instance b alone is at 1%: healthy.
        let v = judge(&s, &[("a".into(), totals(100, 0, 3)), ("b".into(), totals(100, 1, 3))]);
        assert!(matches!(v, Verdict::Healthy(_)), "{v:?}");
        let v = judge(&s, &[("a".into(), totals(100, 0, 3)), ("b".into(), totals(100, 5, 3))]);
        let Verdict::Breach(why) = v else { panic!("{v:?}") };
        assert!(why.contains("error rate 2.50% (5 of 200 requests; worst instance b: 5%)"), "{why}");
        assert!(why.contains("--max-error-rate 1%"), "{why}");
        // Bucket 14 is 409.6..819.2 ms: above 250 ms at instance b only.
        let v = judge(&s, &[("a".into(), totals(100, 0, 3)), ("b".into(), totals(100, 0, 14))]);
        let Verdict::Breach(why) = v else { panic!("{v:?}") };
        assert!(why.contains("at instance b is above --max-p99 250.0ms"), "{why}");
        let v = judge(&s, &[("a".into(), totals(3, 3, 3))]);
        let Verdict::TooFew(why) = v else { panic!("{v:?}") };
        assert!(why.contains("3 request(s) to gtin so far, fewer than --min-requests 10"), "{why}");
    }
}
