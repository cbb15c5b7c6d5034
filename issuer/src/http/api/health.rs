//! Liveness and readiness probes.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use crate::app::AppState;
use crate::http::ApiTags;
use crate::http::problem::{NewProblem, Problem};

pub struct HealthApi;

/// Probe result.
#[derive(Debug, Object)]
pub struct HealthStatus {
    /// `ok` or `ready`.
    pub status: String,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The database answers: the service can take traffic.
    #[oai(status = 200)]
    Ready(Json<HealthStatus>),
    /// The database does not answer (`not_ready`), or the instance is
    /// stopping (`draining`).
    #[oai(status = 503, content_type = "application/problem+json")]
    NotReady(Json<Problem>),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process is up.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Json<HealthStatus> {
        Json(HealthStatus {
            status: "ok".into(),
        })
    }

    /// Readiness: the database is reachable and the instance is not
    /// stopping.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&AppState>) -> ReadyResponse {
        if state.is_draining() {
            return ReadyResponse::NotReady(Json(Problem::new(
                poem::http::StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "Stopping",
                "This instance is stopping; send new requests elsewhere.",
            )));
        }
        if state.store.ping().await.is_ok() {
            ReadyResponse::Ready(Json(HealthStatus {
                status: "ready".into(),
            }))
        } else {
            ReadyResponse::NotReady(Json(Problem::new(
                poem::http::StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "Not ready",
                "The database is not reachable.",
            )))
        }
    }
}
