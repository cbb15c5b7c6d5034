//! `billing/checkout`, `billing/portal`, and the Stripe webhook endpoint
//! (`POST /webhooks/stripe`, outside the API: only Stripe calls it).

use poem::IntoResponse;
use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::BearerAuth;
use super::body::JsonBody;
use crate::app::billing::stripe_api::StripeCallError;
use crate::app::billing::webhook::{self, WebhookError};
use crate::app::billing::{BillingError, checkout};
use crate::app::{AppState, now};
use crate::domain::input::FieldError;
use crate::http::middleware::errors::problem_response;
use crate::http::middleware::rate_limit;
use crate::http::problem::{ApiError, NewProblem, Problem};
use crate::http::{ApiResult, ApiTags, client};

/// A plan that can be bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "kebab-case")]
pub enum PlanId {
    /// Pilot Starter: 3 projects, 100 AI requests, 1 device.
    PilotStarter,
    /// Pilot Professional: unlimited projects, 1000 AI requests, 3 devices.
    PilotProfessional,
}

impl PlanId {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanId::PilotStarter => "pilot-starter",
            PlanId::PilotProfessional => "pilot-professional",
        }
    }
}

/// How often a subscription is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum BillingInterval {
    /// Monthly, at the price Stripe charges for the plan.
    Month,
    /// Yearly, at the price Stripe charges for the plan.
    Year,
}

impl BillingInterval {
    pub fn as_str(self) -> &'static str {
        match self {
            BillingInterval::Month => "month",
            BillingInterval::Year => "year",
        }
    }
}

/// A subscription to start.
#[derive(Debug, Object)]
pub struct CheckoutRequest {
    /// The plan.
    pub plan: PlanId,
    /// Billing interval.
    pub interval: BillingInterval,
}

/// A Stripe Checkout Session to send the buyer to.
#[derive(Debug, Object)]
pub struct CheckoutResponse {
    /// Stripe's id of the Checkout Session.
    pub session_id: String,
    /// The Stripe-hosted payment page.
    pub url: String,
}

/// A billing portal session.
#[derive(Debug, Object)]
pub struct PortalResponse {
    /// The Stripe-hosted billing portal, valid for a short time.
    pub url: String,
}

impl From<BillingError> for ApiError {
    fn from(e: BillingError) -> Self {
        use StatusCode as S;
        let p = match &e {
            BillingError::NotConfigured => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "billing_not_configured",
                "Payments unavailable",
                "Payments are not configured on this server.",
            ),
            BillingError::UnknownPlan { .. } => {
                return ApiError::from(FieldError::new(
                    "plan",
                    format!(
                        "{e}; plans: {}; intervals: month, year",
                        crate::domain::plans::ids()
                    ),
                ));
            }
            BillingError::AlreadySubscribed => Problem::new(
                S::CONFLICT,
                "already_subscribed",
                "Already subscribed",
                "Your organization already has a subscription. Change or cancel it in the billing portal (POST /api/v1/billing/portal).",
            ),
            BillingError::PilotFull => Problem::new(
                StatusCode::FORBIDDEN,
                "signup_full",
                "Pilot full",
                "Every place in the pilot has been paid for; no new subscription can start.",
            ),
            BillingError::NoCustomer => Problem::new(
                S::CONFLICT,
                "no_billing_account",
                "No billing account",
                "Your organization has no billing account yet. Start a subscription with POST /api/v1/billing/checkout.",
            ),
            BillingError::Stripe(StripeCallError::Refused { status, message }) => {
                tracing::error!(status, %message, "Stripe refused a request");
                Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "billing_unavailable",
                    "Payments unavailable",
                    "The payment provider refused the request. Try again later; if it persists, contact support with the request id.",
                )
            }
            BillingError::Stripe(other) => {
                tracing::error!(error = %other, "Stripe call failed");
                Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "billing_unavailable",
                    "Payments unavailable",
                    "The payment provider cannot be reached right now. Try again in a minute.",
                )
            }
            BillingError::Storage(s) => return ApiError::from(s.clone()),
        };
        ApiError::from_problem(p)
    }
}

pub struct BillingApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Billing")]
impl BillingApi {
    /// Start a subscription: a Stripe Checkout Session for a plan.
    ///
    /// Send the buyer to `url`. When they have paid, Stripe tells the
    /// issuer, which creates the license and mails its key to the signed-in
    /// user. `already_subscribed` (409) if the organization has a live
    /// subscription; `billing_unavailable` (503) if Stripe cannot be reached;
    /// `rate_limited` (429) beyond `RATE_LIMIT_BILLING_USER` per user or
    /// `RATE_LIMIT_BILLING_ORG` per organization (checkouts and portal
    /// sessions together), before Stripe is called.
    #[oai(
        path = "/billing/checkout",
        method = "post",
        operation_id = "billingCheckout"
    )]
    async fn checkout(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        auth: BearerAuth,
        body: JsonBody<CheckoutRequest>,
    ) -> ApiResult<Json<CheckoutResponse>> {
        let (user, _) = auth.user(&state).await?;
        rate_limit::check_billing(req, &state, &user).await?;
        let plan = body.plan.as_str();
        let interval = body.interval.as_str();
        let client = client(req, &state);
        let started = checkout::start(&state, &user, plan, interval, None, &client, now()).await?;
        Ok(Json(CheckoutResponse {
            session_id: started.session_id,
            url: started.url,
        }))
    }

    /// Open the Stripe billing portal (payment method, invoices, plan,
    /// cancellation) for the organization.
    ///
    /// `no_billing_account` (409) before the first checkout; `rate_limited`
    /// (429) as for checkout, with which it shares its limits.
    #[oai(
        path = "/billing/portal",
        method = "post",
        operation_id = "billingPortal"
    )]
    async fn portal(
        &self,
        req: &poem::Request,
        state: Data<&AppState>,
        auth: BearerAuth,
    ) -> ApiResult<Json<PortalResponse>> {
        let (user, _) = auth.user(&state).await?;
        rate_limit::check_billing(req, &state, &user).await?;
        let url = checkout::portal(&state, &user).await?;
        Ok(Json(PortalResponse { url }))
    }
}

/// The status a refused webhook delivery is answered with.
pub fn webhook_status(e: &WebhookError) -> StatusCode {
    match e {
        WebhookError::NotConfigured | WebhookError::Unavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        WebhookError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        WebhookError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        WebhookError::MissingSignature
        | WebhookError::BadSignature
        | WebhookError::Stale(_)
        | WebhookError::BadPayload(_) => StatusCode::BAD_REQUEST,
        WebhookError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `POST /webhooks/stripe`.
#[poem::handler]
pub async fn stripe_webhook(
    req: &poem::Request,
    body: poem::Body,
    state: Data<&AppState>,
) -> poem::Response {
    let now = now();
    let client = client(req, &state);
    let signature = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let result = match body.into_bytes_limit(webhook::MAX_WEBHOOK_BYTES).await {
        Ok(body) => webhook::receive(&state, &client, &body, signature, now).await,
        Err(_) => Err(webhook::refused(&state, &client, now, WebhookError::TooLarge).await),
    };
    match result {
        Ok(received) => poem::Response::builder()
            .status(StatusCode::OK)
            .content_type("application/json")
            .body(
                serde_json::json!({
                    "received": true,
                    "event": received.event_id,
                    "outcome": received.outcome.as_str(),
                })
                .to_string(),
            ),
        Err(e) => {
            let status = webhook_status(&e);
            if let WebhookError::RateLimited(refusal) = &e {
                let p = rate_limit::refusal_problem(refusal);
                return rate_limit::refusal_error(refusal, p).into_response();
            }
            let detail = match &e {
                WebhookError::Internal(_) => {
                    "The event could not be applied; nothing was changed. Stripe will retry it."
                        .to_owned()
                }
                other => other.to_string(),
            };
            problem_response(&Problem::new(status, e.code(), "Webhook refused", detail))
        }
    }
}
