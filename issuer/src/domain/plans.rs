//! The plans (tiers) a license can have, in one place (pilot launch plan,
//! §1.2): what each one entitles its holder to.

use verifier::{Entitlements, ProjectLimit};

/// One plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Stable id, stored on licenses and carried in tokens.
    pub id: &'static str,
    /// Name shown to people.
    pub name: &'static str,
    /// What a new license of this plan allows.
    pub entitlements: Entitlements,
    /// Seat transfers (seats freed by the holder) allowed per
    /// [`TRANSFER_WINDOW`](crate::domain::license::TRANSFER_WINDOW): this
    /// many per seat, and never fewer than `min_transfers`.
    pub transfers_per_seat: u32,
    pub min_transfers: u32,
}

/// The pilot plans.
pub const PLANS: &[Plan] = &[
    Plan {
        id: "pilot-starter",
        name: "Pilot Starter",
        entitlements: Entitlements {
            max_projects: ProjectLimit::Limited(3),
            ai_requests: 100,
            max_devices: 1,
        },
        transfers_per_seat: 2,
        min_transfers: 3,
    },
    Plan {
        id: "pilot-professional",
        name: "Pilot Professional",
        entitlements: Entitlements {
            max_projects: ProjectLimit::Unlimited,
            ai_requests: 1000,
            max_devices: 3,
        },
        transfers_per_seat: 2,
        min_transfers: 3,
    },
];

/// The plan with this id.
pub fn find(id: &str) -> Option<&'static Plan> {
    PLANS.iter().find(|p| p.id == id)
}

/// The ids of all plans, for error messages.
pub fn ids() -> String {
    PLANS.iter().map(|p| p.id).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pilot_plans_match_the_launch_plan() {
        let starter = find("pilot-starter").unwrap().entitlements;
        assert_eq!(starter.max_projects, ProjectLimit::Limited(3));
        assert_eq!((starter.ai_requests, starter.max_devices), (100, 1));
        let pro = find("pilot-professional").unwrap().entitlements;
        assert_eq!(pro.max_projects, ProjectLimit::Unlimited);
        assert_eq!((pro.ai_requests, pro.max_devices), (1000, 3));
        assert!(find("enterprise").is_none());
    }
}
