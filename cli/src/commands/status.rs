//! `coditect license status` and `coditect license renew`.

use serde_json::{Value, json};
use verifier::{ProjectLimit, RenewalState};

use super::licensed;
use crate::error::CliResult;
use crate::format::{format_date, format_time, plan_name, rfc3339};
use crate::license::{self, Context, Licensed, Renew, ago};
use crate::output::Colour;
use crate::{system, trust};

fn summary_json(l: &Licensed, now: u64) -> Value {
    let c = &l.claims;
    let state = match l.renewal {
        RenewalState::Fresh { .. } => "active",
        RenewalState::RenewalDue { .. } => "renewal_due",
        RenewalState::Expired { .. } => "expired",
    };
    json!({
        "status": state,
        "plan": plan_name(&c.tier),
        "tier": c.tier,
        "user": c.email,
        "organization": if c.organization.is_empty() { None } else { Some(&c.organization) },
        "license_id": c.license_id,
        "license_expires_at": rfc3339(c.license_expires_at),
        "devices": { "used": c.devices_used, "allowed": c.entitlements.max_devices },
        "entitlements": {
            "max_projects": match c.entitlements.max_projects {
                ProjectLimit::Limited(n) => Some(n),
                ProjectLimit::Unlimited => None,
            },
            "ai_requests": c.entitlements.ai_requests,
            "max_devices": c.entitlements.max_devices,
        },
        "token": {
            "expires_at": rfc3339(c.expires_at),
            "renew_after": rfc3339(c.renew_after),
            "kid": l.kid,
            "renewed_now": l.renewed,
        },
        "last_verified_at": rfc3339(l.state.last_verified_at),
        "last_verified_ago": ago(now, l.state.last_verified_at),
        "renewal_error": l.renewal_failed,
        "transfers": l.state.transfers,
        "development_build": trust::TRUSTS_DEVELOPMENT_KEY,
    })
}

/// The seed's status box, with token validity added.
fn render_box(rows: &[(String, String)], title: &str) -> String {
    // Keys in a column of 9; a longer key is followed by one space.
    let lines: Vec<String> = rows
        .iter()
        .map(|(k, v)| {
            if k.chars().count() < 9 {
                format!("{k:<9}{v}")
            } else {
                format!("{k} {v}")
            }
        })
        .collect();
    let width = lines
        .iter()
        .map(|l| l.chars().count())
        .chain([title.chars().count(), 39])
        .max()
        .unwrap_or(39)
        + 2;
    let bar = "─".repeat(width);
    let mut out = format!("╭{bar}╮\n│ {title:<w$} │\n├{bar}┤\n", w = width - 2);
    for l in &lines {
        let pad = width - 2 - l.chars().count();
        out.push_str(&format!("│ {l}{} │\n", " ".repeat(pad)));
    }
    out.push_str(&format!("╰{bar}╯"));
    out
}

pub fn license_status(ctx: &Context<'_>) -> CliResult<()> {
    let l = licensed(ctx)?;
    let now = system::now();
    let c = &l.claims;
    let status = match l.renewal {
        RenewalState::RenewalDue { .. } if l.renewal_failed.is_some() => {
            "✓ Active (renewal pending)".to_owned()
        }
        _ => "✓ Active".to_owned(),
    };
    let mut rows = vec![
        ("Plan:".to_owned(), plan_name(&c.tier)),
        ("User:".to_owned(), c.email.clone()),
        ("Expires:".to_owned(), format_date(c.license_expires_at)),
        (
            "Devices:".to_owned(),
            format!(
                "{}/{} activated",
                c.devices_used, c.entitlements.max_devices
            ),
        ),
        ("Status:".to_owned(), status),
        (
            "Token:".to_owned(),
            format!(
                "valid offline until {}",
                format_time(c.expires_at.min(c.license_expires_at))
            ),
        ),
    ];
    if l.state.license_key.is_none() && l.state.server.is_none() {
        // Imported from a token file: never checked online, never renewed.
        rows.push(("Renews:".to_owned(), "never (offline license)".to_owned()));
        rows.push((
            "Checked:".to_owned(),
            "imported from a token file".to_owned(),
        ));
    } else {
        rows.push((
            "Renews:".to_owned(),
            if now >= c.renew_after {
                "now due".to_owned()
            } else {
                format!("after {}", format_time(c.renew_after))
            },
        ));
        rows.push((
            "Checked:".to_owned(),
            format!("online {}", ago(now, l.state.last_verified_at)),
        ));
    }
    if let Some(t) = &l.state.transfers {
        rows.push((
            "Transfers:".to_owned(),
            match &t.next_at {
                Some(next) if t.remaining == 0 => format!(
                    "0 of {} left (next on {})",
                    t.allowed,
                    next.get(..10).unwrap_or(next)
                ),
                _ => format!(
                    "{} of {} left (per {} days)",
                    t.remaining, t.allowed, t.window_days
                ),
            },
        ));
    }
    if trust::TRUSTS_DEVELOPMENT_KEY {
        rows.push((
            "Build:".to_owned(),
            "development (trusts the dev key)".to_owned(),
        ));
    }
    let text = render_box(&rows, "CODITECT License Status");
    let text = text.replace("✓ Active", &ctx.printer.paint("✓ Active", Colour::Green));
    ctx.printer.line(&text);
    ctx.printer.json(&summary_json(&l, now));
    Ok(())
}

pub fn renew(ctx: &Context<'_>) -> CliResult<()> {
    let l = license::ensure(ctx, Renew::Now)?;
    let c = &l.claims;
    ctx.printer.success(&format!(
        "License renewed: valid offline until {} (renews after {})",
        format_time(c.expires_at.min(c.license_expires_at)),
        format_time(c.renew_after)
    ));
    ctx.printer.json(&summary_json(&l, system::now()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_box_fits_its_longest_line() {
        let b = render_box(
            &[("Plan:".into(), "Pilot Professional".into())],
            "CODITECT License Status",
        );
        let widths: Vec<usize> = b.lines().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{b}");
        assert!(b.contains("│ Plan:    Pilot Professional"));
    }
}
