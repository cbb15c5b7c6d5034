//! The pilot plans as the pages present them: what each costs, as the
//! Stripe price objects charge it (`app::billing::prices`), and what each
//! includes, read from the plan table.

use verifier::ProjectLimit;

use crate::app::AppState;
use crate::app::billing::prices::Amount;
use crate::domain::plans::{self, Plan};

/// A plan with its prices, when they are known.
pub struct Offer {
    pub plan: &'static Plan,
    pub monthly: Option<Amount>,
    pub annual: Option<Amount>,
}

/// The plans on sale, cheapest first, priced from Stripe's price objects
/// (none while they are not read yet, or when payments are off).
pub fn offers(state: &AppState) -> Vec<Offer> {
    let amount = |plan: &str, interval: &str| {
        state
            .prices
            .as_ref()
            .and_then(|book| book.amount(plan, interval))
    };
    ["pilot-starter", "pilot-professional"]
        .into_iter()
        .filter_map(|id| {
            plans::find(id).map(|plan| Offer {
                plan,
                monthly: amount(id, "month"),
                annual: amount(id, "year"),
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

    /// `$19/mo or $190/yr`; without the amounts, where to see them.
    pub fn prices(&self) -> String {
        match (&self.monthly, &self.annual) {
            (Some(m), Some(y)) => format!("{}/mo or {}/yr", m.show(), y.show()),
            (Some(m), None) => format!("{}/mo", m.show()),
            (None, Some(y)) => format!("{}/yr", y.show()),
            (None, None) => "price shown at checkout".to_owned(),
        }
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

    fn offer(id: &str, monthly: Option<i64>, annual: Option<i64>) -> Offer {
        let usd = |minor| Amount {
            minor,
            currency: "usd".into(),
        };
        Offer {
            plan: plans::find(id).unwrap(),
            monthly: monthly.map(usd),
            annual: annual.map(usd),
        }
    }

    #[test]
    fn offers_say_what_each_plan_includes_and_costs() {
        let starter = offer("pilot-starter", Some(1900), Some(19000));
        assert_eq!(starter.short_name(), "Starter");
        assert_eq!(starter.prices(), "$19/mo or $190/yr");
        assert_eq!(
            starter.features(),
            ["3 projects", "100 AI requests", "1 device"]
        );
        let pro = offer("pilot-professional", None, None);
        assert_eq!(pro.short_name(), "Professional");
        assert_eq!(pro.prices(), "price shown at checkout");
        assert_eq!(
            pro.features(),
            ["Unlimited projects", "1000 AI requests", "3 devices"]
        );
    }
}
