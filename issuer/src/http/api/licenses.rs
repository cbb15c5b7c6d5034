//! `licenses/activate`, `licenses/validate`, `licenses/deactivate`,
//! `licenses` (the signed-in user's) and `licenses/features`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use poem::web::Data;
use poem_openapi::auth::ApiKey;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, SecurityScheme};
pub use proto::licenses::{
    ActivateRequest, ActivationView, DeactivateRequest, DeactivateResponse, EntitlementsView,
    FeaturesResponse, GrantResponse, LicenseList, LicenseSummary, LicenseWithActivations,
    TokenView, TransfersView, ValidateRequest,
};
use verifier::ProjectLimit;

use super::auth::BearerAuth;
use super::body::JsonBody;
use crate::app::licenses::{self, Issued};
use crate::app::{AppState, now};
use crate::domain::license::{
    Activation, License, Releaser, Seat, TRANSFER_WINDOW, status_at, transfer_use,
};
use crate::domain::license_key::LicenseKey;
use crate::domain::tokens::IssuedToken;
use crate::domain::{input, plans, rfc3339};
use crate::http::problem::{ApiError, NewProblem, Problem};
use crate::http::{ApiResult, ApiTags, client};

/// The license key, sent in the `X-License-Key` header.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "X-License-Key", key_in = "header")]
pub struct LicenseKeyAuth(pub ApiKey);

#[derive(ApiResponse)]
pub enum ActivateResult {
    /// This machine was activated; a seat was taken.
    #[oai(status = 201)]
    Activated(Json<GrantResponse>),
    /// This machine was already active; its activation is returned.
    #[oai(status = 200)]
    AlreadyActive(Json<GrantResponse>),
}

/// The refusal of `features` without a license key in `X-License-Key`.
pub fn no_license_key() -> Problem {
    Problem::new(
        poem::http::StatusCode::UNAUTHORIZED,
        "unauthorized",
        "No license key",
        "Send the license key (CODITECT-PILOT-XXXX-YYYY-ZZZZ) in the X-License-Key header.",
    )
}

pub fn entitlements_view(license: &License) -> EntitlementsView {
    let e = license.entitlements();
    EntitlementsView {
        max_projects: match e.max_projects {
            ProjectLimit::Limited(n) => Some(n),
            ProjectLimit::Unlimited => None,
        },
        ai_requests: e.ai_requests,
        max_devices: e.max_devices,
    }
}

/// A license's seat transfers at `now` from the freeing times in the window.
pub fn transfers_view(license: &License, recent_transfers: &[i64], now: i64) -> TransfersView {
    let t = transfer_use(license, recent_transfers, now);
    TransfersView {
        allowed: t.allowed,
        used: t.used,
        remaining: t.allowed.saturating_sub(t.used),
        window_days: u32::try_from(TRANSFER_WINDOW / 86_400).unwrap_or(30),
        next_at: t.next_at.map(rfc3339),
    }
}

pub fn summary(
    license: &License,
    devices_used: u32,
    recent_transfers: &[i64],
    now: i64,
) -> LicenseSummary {
    LicenseSummary {
        id: license.id.clone(),
        tier: license.tier.clone(),
        plan_name: plans::find(&license.tier)
            .map_or_else(|| license.tier.clone(), |p| p.name.to_owned()),
        status: status_at(license, now).to_owned(),
        email: license.email.clone(),
        organization: license.organization_name.clone(),
        expires_at: rfc3339(license.expires_at),
        key_hint: license.key_hint.clone(),
        entitlements: entitlements_view(license),
        devices_used,
        transfers: transfers_view(license, recent_transfers, now),
    }
}

pub fn activation_view(a: &Activation) -> ActivationView {
    ActivationView {
        id: a.id.clone(),
        hardware_id: a.hardware_id.clone(),
        machine_name: a.machine_name.clone(),
        status: if a.active { "active" } else { "deactivated" }.to_owned(),
        activated_at: rfc3339(a.activated_at),
        last_validated_at: rfc3339(a.last_validated_at),
        deactivated_at: a.deactivated_at.map(rfc3339),
        offline_until: a.offline_until.map(rfc3339),
    }
}

pub fn token_view(token: &IssuedToken) -> TokenView {
    let t = |v: u64| rfc3339(i64::try_from(v).unwrap_or(i64::MAX));
    TokenView {
        token: URL_SAFE_NO_PAD.encode(&token.bytes),
        expires_at: t(token.claims.expires_at),
        renew_after: t(token.claims.renew_after),
    }
}

fn grant_response(issued: &Issued, now: i64) -> GrantResponse {
    let grant = &issued.grant;
    GrantResponse {
        license: summary(
            &grant.license,
            grant.devices_used,
            &grant.recent_transfers,
            now,
        ),
        activation: activation_view(&grant.activation),
        token: token_view(&issued.token),
    }
}

pub struct LicensesApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Licenses")]
impl LicensesApi {
    /// Activate a machine on a license and get its first token.
    ///
    /// The license's `max_activations` holds under concurrent requests; the
    /// same machine again gets its existing activation (200) and a fresh token.
    #[oai(
        path = "/licenses/activate",
        method = "post",
        operation_id = "activate"
    )]
    async fn activate(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        body: JsonBody<ActivateRequest>,
    ) -> ApiResult<ActivateResult> {
        let key = input::license_key("license_key", &body.license_key)?;
        let hw = input::hardware_id("hardware_id", &body.hardware_id)?;
        let name = input::optional_name("machine_name", body.machine_name.as_deref())?;
        let now = now();
        let client = client(req, &state);
        let issued = licenses::activate(&state, &client, &key, &hw, name.as_deref(), now).await?;
        let response = Json(grant_response(&issued, now));
        Ok(if issued.grant.already_active {
            ActivateResult::AlreadyActive(response)
        } else {
            ActivateResult::Activated(response)
        })
    }

    /// Renew the token of an activated machine.
    ///
    /// Refused with its own code when the license is suspended, revoked,
    /// canceled or expired, or the machine is not activated.
    #[oai(
        path = "/licenses/validate",
        method = "post",
        operation_id = "validate"
    )]
    async fn validate(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        body: JsonBody<ValidateRequest>,
    ) -> ApiResult<Json<GrantResponse>> {
        let key = input::license_key("license_key", &body.license_key)?;
        let hw = input::hardware_id("hardware_id", &body.hardware_id)?;
        input::client_version("client_version", body.client_version.as_deref())?;
        let now = now();
        let issued = licenses::renew(&state, &client(req, &state), &key, &hw, now).await?;
        Ok(Json(grant_response(&issued, now)))
    }

    /// Free a seat: the asking machine's own, or with `activation_id`
    /// another machine's.
    ///
    /// Freeing another machine's seat needs the asking machine to be active
    /// on the license, or a session (`Authorization: Bearer`) of the
    /// license's organization. A seat activated offline is freed only by
    /// the operator until its token expires (`offline_seat`). Each freed
    /// seat is a transfer, capped per 30 days (`transfer_limit_reached`,
    /// with `available_at`); freeing a machine beyond the seats after a
    /// downgrade does not count.
    #[oai(
        path = "/licenses/deactivate",
        method = "post",
        operation_id = "deactivate"
    )]
    async fn deactivate(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        body: JsonBody<DeactivateRequest>,
    ) -> ApiResult<Json<DeactivateResponse>> {
        let key = input::license_key("license_key", &body.license_key)?;
        let machine = input::hardware_id("hardware_id", &body.hardware_id)?;
        let seat = match body.activation_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => Seat::Activation(id),
            _ => Seat::Machine(&machine),
        };
        // A session that is sent must be valid; it is proof of standing only
        // for its own organization's licenses.
        let organization = BearerAuth::optional_user(req, &state)
            .await?
            .map(|user| user.organization_id);
        let by = Releaser::Holder {
            key: &key,
            machine: &machine,
            organization: organization.as_deref(),
        };
        let now = now();
        let freed = licenses::deactivate(&state, &client(req, &state), &by, seat, now).await?;
        Ok(Json(DeactivateResponse {
            license: summary(
                &freed.license,
                freed.devices_used,
                &freed.recent_transfers,
                now,
            ),
            activation: activation_view(&freed.activation),
        }))
    }

    /// The signed-in user's licenses with their machines.
    #[oai(path = "/licenses", method = "get", operation_id = "listLicenses")]
    async fn list(&self, state: Data<&AppState>, auth: BearerAuth) -> ApiResult<Json<LicenseList>> {
        let (user, _) = auth.user(&state).await?;
        let now = now();
        let rows = licenses::of_organization(&state, &user.organization_id, now).await?;
        let licenses = rows
            .iter()
            .map(|(l, acts, transfers)| {
                let used = acts.iter().filter(|a| a.active).count();
                LicenseWithActivations {
                    license: summary(l, u32::try_from(used).unwrap_or(u32::MAX), transfers, now),
                    activations: acts.iter().map(activation_view).collect(),
                }
            })
            .collect();
        Ok(Json(LicenseList { licenses }))
    }

    /// The entitlements of the license whose key is in `X-License-Key`.
    #[oai(path = "/licenses/features", method = "get", operation_id = "features")]
    async fn features(
        &self,
        state: Data<&AppState>,
        auth: LicenseKeyAuth,
    ) -> ApiResult<Json<FeaturesResponse>> {
        // A header that is no license key cannot name a license: the same
        // answer as a missing one.
        let key =
            LicenseKey::parse(&auth.0.key).map_err(|_| ApiError::from_problem(no_license_key()))?;
        let license = licenses::by_key(&state, &key).await?;
        let now = now();
        Ok(Json(FeaturesResponse {
            license_id: license.id.clone(),
            tier: license.tier.clone(),
            plan_name: plans::find(&license.tier)
                .map_or_else(|| license.tier.clone(), |p| p.name.to_owned()),
            status: status_at(&license, now).to_owned(),
            expires_at: rfc3339(license.expires_at),
            entitlements: entitlements_view(&license),
        }))
    }
}
