//! `stats`: the pilot's figures against its targets.

use serde_json::json;

use super::{AdminError, parse_expiry, print_json, run, store};
use crate::app::now;
use crate::config::Overrides;
use crate::domain::rfc3339;
use crate::domain::stats::{PilotStats, show_money};
use crate::serve::load_config;

/// Reads `--since`: a duration back from now (`30d`), a date or an RFC
/// 3339 time.
fn parse_since(s: &str, now: i64) -> Result<i64, AdminError> {
    match humantime::parse_duration(s.trim()) {
        Ok(d) => Ok(now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
        Err(_) => parse_expiry(s, now).map_err(|_| {
            AdminError::User(format!(
                "--since: `{s}` is not a date (2026-11-28), an RFC 3339 time or a duration (30days)"
            ))
        }),
    }
}

/// `stats [--since WHEN] [--json]`.
pub fn stats(since: Option<&str>, json: bool) -> Result<(), AdminError> {
    let now = now();
    let since = since.map(|s| parse_since(s, now)).transpose()?.unwrap_or(0);
    if since > now {
        return Err(AdminError::User("--since is in the future".into()));
    }
    let config = load_config(&Overrides::default())?;
    let store = store()?;
    let (stats, price_warning) = run(async {
        let (book, warning) = match crate::app::stats::read_prices(&config).await {
            Ok(book) => (book, None),
            Err(e) => (None, Some(e)),
        };
        let stats =
            crate::app::stats::pilot_stats(&store, &config, book.as_ref(), since, now).await?;
        Ok((stats, warning))
    })?;
    if let Some(w) = &price_warning {
        eprintln!("warning: {w}; revenue is shown without those prices");
    }
    if json {
        let mut v =
            serde_json::to_value(&stats).map_err(|e| AdminError::Unexpected(e.to_string()))?;
        v["since"] = if since > 0 {
            json!(rfc3339(since))
        } else {
            json!(null)
        };
        v["until"] = json!(rfc3339(now));
        return print_json(&v);
    }
    print!("{}", human(&stats));
    Ok(())
}

fn percent(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// The figures as an operator reads them.
fn human(s: &PilotStats) -> String {
    let mut out = String::new();
    let period = if s.since > 0 {
        format!("from {} to {}", rfc3339(s.since), rfc3339(s.until))
    } else {
        format!("until {}", rfc3339(s.until))
    };
    out.push_str(&format!("Pilot figures {period}\n\n"));
    let line = |out: &mut String, name: &str, value: String| {
        out.push_str(&format!("  {name:<17} {value}\n"));
    };
    line(&mut out, "paid signups", s.paid_signups.to_string());
    for (plan, n) in &s.signups_by_plan {
        line(&mut out, &format!("  {plan}"), n.to_string());
    }
    line(
        &mut out,
        "activation rate",
        format!(
            "{} ({} of {} paid licenses activated)",
            percent(s.activation_rate),
            s.activated_licenses,
            s.paid_licenses
        ),
    );
    line(
        &mut out,
        "payment success",
        format!(
            "{} ({} of {} invoices paid)",
            percent(s.payment_success),
            s.invoices_paid,
            s.invoices_attempted
        ),
    );
    let change = s.mrr_change_minor;
    line(
        &mut out,
        "MRR",
        format!(
            "{} ({}{} since the start; {} subscriptions{})",
            show_money(s.mrr.minor, &s.mrr.currency),
            if change >= 0 { "+" } else { "" },
            show_money(change, &s.mrr.currency),
            s.mrr.subscriptions,
            if s.mrr.unpriced > 0 {
                format!(", {} without a known price", s.mrr.unpriced)
            } else {
                String::new()
            }
        ),
    );
    line(
        &mut out,
        "churn",
        format!(
            "{} ({} of {} subscriptions ended)",
            percent(s.churn_rate),
            s.churned,
            s.churn_base
        ),
    );
    line(
        &mut out,
        "active machines",
        format!("{} (renewed in the last 7 days)", s.active_machines),
    );
    out.push_str("\nTargets\n");
    for t in &s.targets {
        out.push_str(&format!(
            "  {:<17} {:<22} {:<12} {}\n",
            t.metric,
            t.target,
            t.actual,
            if t.met { "met" } else { "not met" }
        ));
    }
    out
}
