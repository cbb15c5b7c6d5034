//! The pilot plans as the pages present them: prices (launch plan §1.2;
//! Stripe's prices are the ones charged) and what each plan includes, read
//! from the plan table.

use verifier::ProjectLimit;

use crate::domain::plans::{self, Plan};

/// A plan with its prices in whole US dollars.
pub struct Offer {
    pub plan: &'static Plan,
    pub monthly_usd: u32,
    pub annual_usd: u32,
}

/// The plans on sale, cheapest first.
pub fn offers() -> Vec<Offer> {
    [("pilot-starter", 19, 190), ("pilot-professional", 49, 490)]
        .into_iter()
        .filter_map(|(id, monthly_usd, annual_usd)| {
            plans::find(id).map(|plan| Offer {
                plan,
                monthly_usd,
                annual_usd,
            })
        })
        .collect()
}

/// The billing intervals: form value and label.
pub const INTERVALS: &[(&str, &str)] = &[("month", "Monthly"), ("year", "Annual")];

impl Offer {
    /// What the plan includes, in words.
    pub fn features(&self) -> Vec<String> {
        let e = self.plan.entitlements;
        let projects = match e.max_projects {
            ProjectLimit::Unlimited => "Unlimited projects".to_owned(),
            ProjectLimit::Limited(1) => "1 project".to_owned(),
            ProjectLimit::Limited(n) => format!("{n} projects"),
        };
        let devices = if e.max_devices == 1 {
            "1 device".to_owned()
        } else {
            format!("{} devices", e.max_devices)
        };
        vec![projects, format!("{} AI requests", e.ai_requests), devices]
    }

    /// `$19/mo or $190/yr`.
    pub fn prices(&self) -> String {
        format!("${}/mo or ${}/yr", self.monthly_usd, self.annual_usd)
    }

    /// The short name without "Pilot ": `Starter`.
    pub fn short_name(&self) -> &'static str {
        self.plan
            .name
            .strip_prefix("Pilot ")
            .unwrap_or(self.plan.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_match_the_launch_plan() {
        let o = offers();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].short_name(), "Starter");
        assert_eq!(o[0].prices(), "$19/mo or $190/yr");
        assert_eq!(
            o[0].features(),
            ["3 projects", "100 AI requests", "1 device"]
        );
        assert_eq!(o[1].short_name(), "Professional");
        assert_eq!(o[1].prices(), "$49/mo or $490/yr");
        assert_eq!(
            o[1].features(),
            ["Unlimited projects", "1000 AI requests", "3 devices"]
        );
    }
}
