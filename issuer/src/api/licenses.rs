//! `licenses/activate`, `licenses/validate`, `licenses/deactivate`,
//! `licenses` (the signed-in user's) and `licenses/features`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use poem::web::Data;
use poem_openapi::auth::ApiKey;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme};
use verifier::ProjectLimit;

use super::auth::BearerAuth;
use super::problem::ApiError;
use super::{ApiResult, ApiTags, AppState, now, rfc3339, validate};
use crate::license_key::LicenseKey;
use crate::licensing::{self, Activation, Grant, License, Seat};
use crate::plans;
use crate::tokens::{self, IssuedToken};

/// The license key, sent in the `X-License-Key` header.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "X-License-Key", key_in = "header")]
pub struct LicenseKeyAuth(pub ApiKey);

/// What a license entitles its holder to.
#[derive(Debug, Clone, Object, PartialEq, Eq)]
pub struct EntitlementsView {
    /// Projects allowed; `null` means unlimited.
    pub max_projects: Option<u32>,
    /// AI requests per billing period.
    pub ai_requests: u32,
    /// Machines that may be activated at once.
    pub max_devices: u32,
}

/// A license as its holder sees it.
#[derive(Debug, Clone, Object)]
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
}

/// One activated (or formerly activated) machine.
#[derive(Debug, Clone, Object)]
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
}

/// A signed license token and its validity.
#[derive(Debug, Clone, Object)]
pub struct TokenView {
    /// COSE_Sign1 bytes, base64url without padding.
    pub token: String,
    /// The token is accepted offline until then (RFC 3339).
    pub expires_at: String,
    /// Renew from then on (RFC 3339).
    pub renew_after: String,
}

/// Activate a machine.
#[derive(Debug, Object)]
pub struct ActivateRequest {
    /// `CODITECT-PILOT-XXXX-YYYY-ZZZZ`.
    #[oai(validator(max_length = 64))]
    pub license_key: String,
    /// HMAC-SHA256 of the machine id, 64 hex characters.
    #[oai(validator(max_length = 64))]
    pub hardware_id: String,
    /// A name to recognise the machine by.
    #[oai(validator(max_length = 255))]
    pub machine_name: Option<String>,
}

/// Renew a machine's token.
#[derive(Debug, Object)]
pub struct ValidateRequest {
    #[oai(validator(max_length = 64))]
    pub license_key: String,
    #[oai(validator(max_length = 64))]
    pub hardware_id: String,
    /// The CLI's version, for support.
    #[oai(validator(max_length = 64))]
    pub client_version: Option<String>,
}

/// Free a seat: this machine's, or with `activation_id` another machine's
/// (from the license's activation list).
#[derive(Debug, Object)]
pub struct DeactivateRequest {
    #[oai(validator(max_length = 64))]
    pub license_key: String,
    #[oai(validator(max_length = 64))]
    /// The machine asking.
    pub hardware_id: String,
    /// The activation to free, when it is not the asking machine's.
    #[oai(validator(max_length = 64))]
    pub activation_id: Option<String>,
}

/// The result of an activation or validation.
#[derive(Debug, Object)]
pub struct GrantResponse {
    pub license: LicenseSummary,
    pub activation: ActivationView,
    pub token: TokenView,
}

#[derive(ApiResponse)]
pub enum ActivateResult {
    /// This machine was activated; a seat was taken.
    #[oai(status = 201)]
    Activated(Json<GrantResponse>),
    /// This machine was already active; its activation is returned.
    #[oai(status = 200)]
    AlreadyActive(Json<GrantResponse>),
}

/// The freed seat.
#[derive(Debug, Object)]
pub struct DeactivateResponse {
    pub license: LicenseSummary,
    pub activation: ActivationView,
}

/// A license with its machines.
#[derive(Debug, Object)]
pub struct LicenseWithActivations {
    pub license: LicenseSummary,
    pub activations: Vec<ActivationView>,
}

/// The signed-in user's licenses.
#[derive(Debug, Object)]
pub struct LicenseList {
    pub licenses: Vec<LicenseWithActivations>,
}

/// Entitlements of a license.
#[derive(Debug, Object)]
pub struct FeaturesResponse {
    pub license_id: String,
    pub tier: String,
    pub plan_name: String,
    pub status: String,
    pub expires_at: String,
    pub entitlements: EntitlementsView,
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

fn status_at(license: &License, now: i64) -> &'static str {
    match license.check_usable(now) {
        Err(licensing::LicenseError::Expired { .. }) => "expired",
        _ => license.status.as_str(),
    }
}

pub fn summary(license: &License, devices_used: u32, now: i64) -> LicenseSummary {
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

fn grant_response(state: &AppState, grant: &Grant, now: i64) -> ApiResult<GrantResponse> {
    let token = tokens::issue(&state.config.signer, grant, state.token_policy(), now)
        .map_err(|e| ApiError::internal(&e))?;
    Ok(GrantResponse {
        license: summary(&grant.license, grant.devices_used, now),
        activation: activation_view(&grant.activation),
        token: token_view(&token),
    })
}

pub struct LicensesApi;

/// Writes the audit row of an activation or validation, refused or not.
async fn audited(
    state: &AppState,
    req: &poem::Request,
    event: &str,
    now: i64,
    result: Result<Grant, licensing::LicenseError>,
) -> ApiResult<Grant> {
    let client = super::client(req, state);
    match result {
        Ok(grant) => {
            state
                .audit
                .log(
                    crate::audit::Event::new(now, event, "ok")
                        .actor(format!("license:{}", grant.license.id))
                        .subject("activation", grant.activation.id.clone())
                        .client(&client),
                )
                .await;
            Ok(grant)
        }
        Err(e) => {
            let err = ApiError::from(e);
            let code = err.problem().code.clone();
            if code != "internal_error" {
                state
                    .audit
                    .log(crate::audit::Event::new(now, event, &code).client(&client))
                    .await;
            }
            Err(err)
        }
    }
}

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
        body: Json<ActivateRequest>,
    ) -> ApiResult<ActivateResult> {
        let key = validate::license_key("license_key", &body.license_key)?;
        let hw = validate::hardware_id("hardware_id", &body.hardware_id)?;
        let name = validate::optional_name("machine_name", body.machine_name.as_deref())?;
        let now = now();
        let result = state
            .db
            .run_write(move |c| licensing::activate(c, &key, &hw, name.as_deref(), now))
            .await;
        let grant = audited(&state, req, "activate", now, result).await?;
        let response = Json(grant_response(&state, &grant, now)?);
        Ok(if grant.already_active {
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
        body: Json<ValidateRequest>,
    ) -> ApiResult<Json<GrantResponse>> {
        let key = validate::license_key("license_key", &body.license_key)?;
        let hw = validate::hardware_id("hardware_id", &body.hardware_id)?;
        validate::client_version("client_version", body.client_version.as_deref())?;
        let now = now();
        let result = state
            .db
            .run(move |c| licensing::validate(c, &key, &hw, now))
            .await;
        let grant = audited(&state, req, "validate", now, result).await?;
        Ok(Json(grant_response(&state, &grant, now)?))
    }

    /// Free a seat.
    #[oai(
        path = "/licenses/deactivate",
        method = "post",
        operation_id = "deactivate"
    )]
    async fn deactivate(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        body: Json<DeactivateRequest>,
    ) -> ApiResult<Json<DeactivateResponse>> {
        let key = validate::license_key("license_key", &body.license_key)?;
        let machine = validate::hardware_id("hardware_id", &body.hardware_id)?;
        let seat = match body.activation_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => SeatInput::Activation(id.to_owned()),
            _ => SeatInput::Machine(machine),
        };
        let now = now();
        let result = state
            .db
            .run_write(move |c| {
                let seat = match &seat {
                    SeatInput::Machine(hw) => Seat::Machine(hw),
                    SeatInput::Activation(id) => Seat::Activation(id),
                };
                let (license, activation) = licensing::deactivate(c, &key, seat, now)?;
                let used = licensing::activations(c, &license.id)?
                    .iter()
                    .filter(|a| a.active)
                    .count();
                Ok::<_, licensing::LicenseError>((license, activation, used))
            })
            .await
            .map_err(ApiError::from);
        let client = super::client(req, &state);
        let event = match &result {
            Ok((license, activation, _)) => crate::audit::Event::new(now, "deactivate", "ok")
                .actor(format!("license:{}", license.id))
                .subject("activation", activation.id.clone()),
            Err(e) => crate::audit::Event::new(now, "deactivate", &e.problem().code),
        };
        state.audit.log(event.client(&client)).await;
        let (license, activation, used) = result?;
        Ok(Json(DeactivateResponse {
            license: summary(&license, u32::try_from(used).unwrap_or(u32::MAX), now),
            activation: activation_view(&activation),
        }))
    }

    /// The signed-in user's licenses with their machines.
    #[oai(path = "/licenses", method = "get", operation_id = "listLicenses")]
    async fn list(&self, state: Data<&AppState>, auth: BearerAuth) -> ApiResult<Json<LicenseList>> {
        let (user, _) = auth.user(&state).await?;
        let now = now();
        let org = user.organization_id;
        let rows = state
            .db
            .run(move |c| {
                licensing::list(c, Some(&org))?
                    .into_iter()
                    .map(|l| {
                        let acts = licensing::activations(c, &l.id)?;
                        Ok((l, acts))
                    })
                    .collect::<Result<Vec<_>, licensing::LicenseError>>()
            })
            .await?;
        let licenses = rows
            .iter()
            .map(|(l, acts)| {
                let used = acts.iter().filter(|a| a.active).count();
                LicenseWithActivations {
                    license: summary(l, u32::try_from(used).unwrap_or(u32::MAX), now),
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
        let key = LicenseKey::parse(&auth.0.key).map_err(|_| {
            ApiError::from_problem(super::problem::Problem::new(
                poem::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "No license key",
                "Send the license key (CODITECT-PILOT-XXXX-YYYY-ZZZZ) in the X-License-Key header.",
            ))
        })?;
        let license = state
            .db
            .run(move |c| licensing::find_by_key(c, &key))
            .await?
            .ok_or(licensing::LicenseError::NotFound)?;
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

enum SeatInput {
    Machine(verifier::HardwareId),
    Activation(String),
}
