//! Keyed comparison of model and replay rows that reports only the first few differences.

use std::collections::BTreeMap;
use std::fmt::Debug;

use super::batch_model::{AlertExpect, Model};
use super::outputs::{MetricRow, Outputs, RankingRow};

/// How many differing rows of one kind are printed.
pub const SHOW: usize = 5;

/// Compares `model` and `replay` rows matched by `key`; `same` decides equality of two rows with one key.
/// Returns one message per kind of difference (rows only on one side, duplicated keys, differing rows),
/// each naming the total and showing the first [`SHOW`].
pub fn diff_keyed<K: Ord + Debug, T: Debug>(
    what: &str,
    model: &[T],
    replay: &[T],
    key: impl Fn(&T) -> K,
    same: impl Fn(&T, &T) -> bool,
) -> Vec<String> {
    let mut m: BTreeMap<K, Vec<&T>> = BTreeMap::new();
    for r in model {
        m.entry(key(r)).or_default().push(r);
    }
    let mut r: BTreeMap<K, Vec<&T>> = BTreeMap::new();
    for x in replay {
        r.entry(key(x)).or_default().push(x);
    }
    let mut only_model = Vec::new();
    let mut only_replay = Vec::new();
    let mut dup_replay = Vec::new();
    let mut differ = Vec::new();
    for (k, mv) in &m {
        match r.get(k) {
            None => only_model.push(format!("{:?}", mv[0])),
            Some(rv) => {
                if rv.len() > 1 {
                    dup_replay.push(format!("{k:?} x{}", rv.len()));
                }
                if !same(mv[0], rv[0]) {
                    differ.push(format!("model  {:?}\n      replay {:?}", mv[0], rv[0]));
                }
            }
        }
    }
    for (k, rv) in &r {
        if !m.contains_key(k) {
            only_replay.push(format!("{:?}", rv[0]));
        }
    }
    let mut msgs = Vec::new();
    let mut report = |label: &str, v: Vec<String>| {
        if !v.is_empty() {
            let shown: Vec<_> = v.iter().take(SHOW).map(|s| format!("    {s}")).collect();
            msgs.push(format!("{what}: {} {label} (first {}):\n{}", v.len(), shown.len(), shown.join("\n")));
        }
    };
    report("rows only in the model", only_model);
    report("rows only in the replay", only_replay);
    report("keys repeated in the replay", dup_replay);
    report("rows that differ", differ);
    msgs
}

/// `a` and `b` within `rel` relative error (or both tiny).
pub fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-12)
}

/// Metrics rows equal: integers exactly, ctr/cvr within 1e-9.
pub fn same_metric(a: &MetricRow, b: &MetricRow) -> bool {
    a.window_end == b.window_end
        && (a.impressions, a.clicks, a.conversions, a.spend, a.revenue)
            == (b.impressions, b.clicks, b.conversions, b.spend, b.revenue)
        && (a.ctr - b.ctr).abs() <= 1e-9
        && (a.cvr - b.cvr).abs() <= 1e-9
}

/// Ranking rows equal: everything exactly except score (1e-6 relative).
pub fn same_ranking(a: &RankingRow, b: &RankingRow) -> bool {
    a.campaign_id == b.campaign_id && a.cpc == b.cpc && close(a.score, b.score, 1e-6)
}

/// Every comparison of REPLAY-SEMANTICS.md between the model and one replay; empty when they agree.
pub fn compare_all(model: &Model, replay: &Outputs) -> Vec<String> {
    let m = &model.out;
    let mut msgs = Vec::new();
    msgs.extend(diff_keyed(
        "metrics",
        &m.metrics,
        &replay.metrics,
        |r| (r.campaign_id.clone(), r.window_start),
        same_metric,
    ));
    msgs.extend(diff_keyed("conversions", &m.conversions, &replay.conversions, |r| r.order_id.clone(), |a, b| a == b));
    msgs.extend(diff_keyed(
        "compensations",
        &m.compensations,
        &replay.compensations,
        |r| (r.device_id.clone(), r.ad_id.clone(), r.timestamp),
        |a, b| a == b,
    ));
    msgs.extend(diff_keyed("ledger", &m.ledger, &replay.ledger, |r| r.clone(), |_, _| true));
    let bal = |o: &Outputs| o.balances.iter().map(|(a, b)| (a.clone(), *b)).collect::<Vec<_>>();
    msgs.extend(diff_keyed("balances", &bal(m), &bal(replay), |r| r.0.clone(), |a, b| a == b));
    msgs.extend(diff_keyed(
        "rankings",
        &m.rankings,
        &replay.rankings,
        |r| (r.placement.clone(), r.category.clone(), r.rank),
        same_ranking,
    ));
    let dead = |o: &Outputs| o.dead_per_topic().into_iter().collect::<Vec<_>>();
    msgs.extend(diff_keyed("dead letters per topic", &dead(m), &dead(replay), |r| r.0.clone(), |a, b| a == b));
    if let Some(u) = replay.unattributed {
        if Some(u) != m.unattributed {
            msgs.push(format!("unattributed: model {:?}, replay summary {u}", m.unattributed));
        }
    }
    msgs.extend(balance_identity(model, replay));
    if replay.format_issue_count > 0 {
        msgs.push(format!(
            "{} output timestamps not in the form 2025-03-10T00:00:00.000Z, e.g. {:?}",
            replay.format_issue_count, replay.format_issues
        ));
    }
    msgs.extend(alert_checks(model, replay));
    msgs
}

/// The replay is consistent with itself: for every advertiser (of advertisers.jsonl or of its ledger),
/// balance = opening − Σ CHARGE + Σ REFUND of the replay's own ledger rows.
pub fn balance_identity(model: &Model, replay: &Outputs) -> Vec<String> {
    let mut expect: BTreeMap<&str, i64> = model.openings.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    for l in &replay.ledger {
        let sign = if l.entry_type == "CHARGE" { -1 } else { 1 };
        *expect.entry(l.advertiser_id.as_str()).or_insert(0) += sign * l.amount;
    }
    let bad: Vec<_> = expect
        .iter()
        .filter(|(a, b)| replay.balances.get(**a) != Some(*b))
        .map(|(a, b)| format!("{a}: opening-charges+refunds={b}, balance={:?}", replay.balances.get(*a)))
        .collect();
    if bad.is_empty() {
        return Vec::new();
    }
    let n = bad.len();
    vec![format!("balance identity broken for {n} advertisers: {:?}", &bad[..n.min(SHOW)])]
}

/// Alerts: the replay must raise every alert any processing order raises, and none that no order raises.
fn alert_checks(model: &Model, replay: &Outputs) -> Vec<String> {
    let mut msgs = Vec::new();
    let mut seen: BTreeMap<(String, String, i64), usize> = BTreeMap::new();
    for a in &replay.alerts {
        *seen.entry((a.campaign_id.clone(), a.day.clone(), a.level)).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).map(|(k, _)| k).take(SHOW).collect();
    if !twice.is_empty() {
        msgs.push(format!("alerts raised more than once per campaign/day/level: {twice:?}"));
    }
    let impossible: Vec<_> = seen
        .keys()
        .filter(|(c, d, l)| model.alert_expectation(c, d, *l) == AlertExpect::MustNot)
        .map(|k| (k.clone(), model.spend.get(&(k.0.clone(), k.1.clone()))))
        .take(SHOW)
        .collect();
    if !impossible.is_empty() {
        msgs.push(format!("alerts no processing order can raise (key, model day spend): {impossible:?}"));
    }
    let mut missing = Vec::new();
    for ((c, d), s) in &model.spend {
        for level in [80, 100] {
            if model.alert_expectation(c, d, level) == AlertExpect::Must
                && !seen.contains_key(&(c.clone(), d.clone(), level))
            {
                missing.push(((c.clone(), d.clone(), level), s.clone()));
            }
        }
    }
    if !missing.is_empty() {
        let n = missing.len();
        missing.truncate(SHOW);
        msgs.push(format!("alerts every processing order raises, missing in the replay ({n}): {missing:?}"));
    }
    msgs
}
