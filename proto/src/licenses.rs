//! `licenses/activate`, `licenses/validate`, `licenses/deactivate`,
//! `licenses` (the signed-in user's) and `licenses/features`: their bodies.

use serde::{Deserialize, Serialize};

/// What a license entitles its holder to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct EntitlementsView {
    /// Projects allowed; `null` means unlimited.
    pub max_projects: Option<u32>,
    /// AI requests per billing period.
    pub ai_requests: u32,
    /// Machines that may be activated at once.
    pub max_devices: u32,
}

/// A license as its holder sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct LicenseSummary {
    pub id: String,
    /// Plan id, e.g. `pilot-professional`.
    pub tier: String,
    /// Plan name, e.g. `Pilot Professional`.
    pub plan_name: String,
    /// `active`, `suspended`, `revoked`, `canceled` or `expired`.
    pub status: String,
    pub email: String,
    pub organization: Option<String>,
    /// When the license ends (RFC 3339).
    pub expires_at: String,
    /// The last group of the key, to tell licenses apart.
    pub key_hint: String,
    pub entitlements: EntitlementsView,
    /// Machines activated now.
    pub devices_used: u32,
    /// Seats freed by the holder (transfers), capped per 30 days.
    pub transfers: TransfersView,
}

/// Seat transfers: each seat the holder frees is one, and the license
/// allows so many per 30 days (freeing a machine beyond the seats after a
/// downgrade does not count).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct TransfersView {
    /// Transfers allowed per window.
    pub allowed: u32,
    /// Transfers made in the last `window_days` days.
    pub used: u32,
    /// Transfers possible now.
    pub remaining: u32,
    pub window_days: u32,
    /// When the next transfer is possible (RFC 3339), when none is now.
    pub next_at: Option<String>,
}

/// One activated (or formerly activated) machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct ActivationView {
    pub id: String,
    /// 64 hex characters; never the raw machine id.
    pub hardware_id: String,
    pub machine_name: Option<String>,
    /// `active` or `deactivated`.
    pub status: String,
    pub activated_at: String,
    pub last_validated_at: String,
    pub deactivated_at: Option<String>,
    /// Activated air-gapped: its token is good until then (RFC 3339), and
    /// only the operator frees the seat before that.
    pub offline_until: Option<String>,
}

/// A signed license token and its validity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct TokenView {
    /// COSE_Sign1 bytes, base64url without padding.
    pub token: String,
    /// The token is accepted offline until then (RFC 3339).
    pub expires_at: String,
    /// Renew from then on (RFC 3339).
    pub renew_after: String,
}

/// Activate a machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct ActivateRequest {
    /// `CODITECT-PILOT-XXXX-YYYY-ZZZZ`.
    #[cfg_attr(feature = "openapi", oai(validator(max_length = 64)))]
    pub license_key: String,
    /// HMAC-SHA256 of the machine id, 64 hex characters.
    #[cfg_attr(feature = "openapi", oai(validator(max_length = 64)))]
    pub hardware_id: String,
    /// A name to recognise the machine by.
    #[cfg_attr(feature = "openapi", oai(validator(max_length = 255)))]
    pub machine_name: Option<String>,
}

/// Renew a machine's token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct ValidateRequest {
    #[cfg_attr(feature = "openapi", oai(validator(max_length = 64)))]
    pub license_key: String,
    #[cfg_attr(feature = "openapi", oai(validator(max_length = 64)))]
    pub hardware_id: String,
    /// The CLI's version, for support.
    #[cfg_attr(feature = "openapi", oai(validator(max_length = 64)))]
    pub client_version: Option<String>,
}

/// Free a seat: this machine's, or with `activation_id` another machine's
/// (from the license's activation list).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct DeactivateRequest {
    #[cfg_attr(feature = "openapi", oai(validator(max_length = 64)))]
    pub license_key: String,
    #[cfg_attr(feature = "openapi", oai(validator(max_length = 64)))]
    /// The machine asking.
    pub hardware_id: String,
    /// The activation to free, when it is not the asking machine's.
    #[cfg_attr(feature = "openapi", oai(validator(max_length = 64)))]
    pub activation_id: Option<String>,
}

/// The result of an activation or validation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct GrantResponse {
    pub license: LicenseSummary,
    pub activation: ActivationView,
    pub token: TokenView,
}

/// The freed seat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct DeactivateResponse {
    pub license: LicenseSummary,
    pub activation: ActivationView,
}

/// A license with its machines.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct LicenseWithActivations {
    pub license: LicenseSummary,
    pub activations: Vec<ActivationView>,
}

/// The signed-in user's licenses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct LicenseList {
    pub licenses: Vec<LicenseWithActivations>,
}

/// Entitlements of a license.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct FeaturesResponse {
    pub license_id: String,
    pub tier: String,
    pub plan_name: String,
    pub status: String,
    pub expires_at: String,
    pub entitlements: EntitlementsView,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> LicenseSummary {
        LicenseSummary {
            id: "lic_1".into(),
            tier: "pilot-professional".into(),
            plan_name: "Pilot Professional".into(),
            status: "active".into(),
            email: "a@example.com".into(),
            organization: None,
            expires_at: "2027-01-01T00:00:00Z".into(),
            key_hint: "JKMN".into(),
            entitlements: EntitlementsView {
                max_projects: None,
                ai_requests: 1000,
                max_devices: 3,
            },
            devices_used: 1,
            transfers: TransfersView {
                allowed: 6,
                used: 1,
                remaining: 5,
                window_days: 30,
                next_at: None,
            },
        }
    }

    fn activation() -> ActivationView {
        ActivationView {
            id: "act_1".into(),
            hardware_id: "ab".repeat(32),
            machine_name: Some("laptop".into()),
            status: "active".into(),
            activated_at: "2026-01-01T00:00:00Z".into(),
            last_validated_at: "2026-01-02T00:00:00Z".into(),
            deactivated_at: None,
            offline_until: None,
        }
    }

    #[test]
    fn a_grant_reads_back_from_its_json() {
        let grant = GrantResponse {
            license: summary(),
            activation: activation(),
            token: TokenView {
                token: "tok".into(),
                expires_at: "2026-01-09T00:00:00Z".into(),
                renew_after: "2026-01-05T00:00:00Z".into(),
            },
        };
        let json = serde_json::to_value(&grant).unwrap();
        // Absent values are written as `null`, as the issuer writes them.
        assert_eq!(json["license"]["organization"], serde_json::Value::Null);
        assert_eq!(
            json["license"]["entitlements"]["max_projects"],
            serde_json::Value::Null
        );
        assert_eq!(json["token"]["token"], "tok");
        let back: GrantResponse = serde_json::from_value(json).unwrap();
        assert_eq!(back, grant);
    }

    #[test]
    fn a_license_list_reads_the_issuers_field_names() {
        let text = r#"{"licenses":[{"license":{"id":"lic_1","tier":"pilot-starter",
            "plan_name":"Pilot Starter","status":"active","email":"a@example.com",
            "organization":"Acme","expires_at":"2027-01-01T00:00:00Z","key_hint":"JKMN",
            "entitlements":{"max_projects":3,"ai_requests":100,"max_devices":1},
            "devices_used":1,"transfers":{"allowed":3,"used":3,"remaining":0,
            "window_days":30,"next_at":"2027-01-02T00:00:00Z"}},
            "activations":[{"id":"act_1","hardware_id":"00",
            "machine_name":null,"status":"deactivated","activated_at":"a",
            "last_validated_at":"b","deactivated_at":"c","offline_until":null}]}]}"#;
        let list: LicenseList = serde_json::from_str(text).unwrap();
        let entry = &list.licenses[0];
        assert_eq!(entry.license.entitlements.max_projects, Some(3));
        assert_eq!(entry.license.organization.as_deref(), Some("Acme"));
        assert_eq!(entry.activations[0].machine_name, None);
        assert_eq!(entry.activations[0].deactivated_at.as_deref(), Some("c"));
        assert_eq!(entry.license.transfers.remaining, 0);
        assert_eq!(
            entry.license.transfers.next_at.as_deref(),
            Some("2027-01-02T00:00:00Z")
        );
    }

    #[test]
    fn requests_leave_out_nothing_and_omitted_options_read_as_none() {
        let req: ActivateRequest =
            serde_json::from_str(r#"{"license_key":"K","hardware_id":"H"}"#).unwrap();
        assert_eq!(req.machine_name, None);
        let req = DeactivateRequest {
            license_key: "K".into(),
            hardware_id: "H".into(),
            activation_id: Some("act_1".into()),
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"license_key": "K", "hardware_id": "H", "activation_id": "act_1"})
        );
    }
}
