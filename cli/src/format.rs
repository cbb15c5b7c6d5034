//! How times and plan names read, wherever the CLI shows them: the one job
//! of this module, shared by the license check and the commands.

/// "March 24, 2026".
pub fn format_date(t: u64) -> String {
    let fmt = time::macros::format_description!("[month repr:long] [day padding:none], [year]");
    to_datetime(t).format(&fmt).unwrap_or_default()
}

/// "Nov 28, 2026 22:32 UTC".
pub fn format_time(t: u64) -> String {
    let fmt = time::macros::format_description!(
        "[month repr:short] [day padding:none], [year] [hour]:[minute] UTC"
    );
    to_datetime(t).format(&fmt).unwrap_or_default()
}

/// RFC 3339, for JSON output.
pub fn rfc3339(t: u64) -> String {
    to_datetime(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn to_datetime(t: u64) -> time::OffsetDateTime {
    i64::try_from(t)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// "Pilot Professional" for `pilot-professional`.
pub fn plan_name(tier: &str) -> String {
    match tier {
        "pilot-starter" => "Pilot Starter".to_owned(),
        "pilot-professional" => "Pilot Professional".to_owned(),
        other => other
            .split(['-', '_'])
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_plans_read_well() {
        assert_eq!(format_date(1_774_310_400), "March 24, 2026");
        assert_eq!(format_time(1_796_256_000), "Dec 3, 2026 00:00 UTC");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(plan_name("pilot-professional"), "Pilot Professional");
        assert_eq!(plan_name("team-plus"), "Team Plus");
    }
}
