//! `GET /healthz`: the database and the Docker engine, for load balancers and monitors.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the database is down.
    pub status: &'static str,
    pub checks: HealthChecks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthChecks {
    /// `ok` or `unavailable`.
    pub database: &'static str,
    /// `ok` or `unavailable`.
    pub docker: &'static str,
}

/// Health of the control plane: 200 when the database answers, 503 when it does not.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (db, runtime) = tokio::join!(
        tokio::time::timeout(std::time::Duration::from_secs(3), state.store.ping()),
        state.runtime.status()
    );
    let database_ok = matches!(db, Ok(Ok(())));
    let health = Health {
        status: if database_ok { "ok" } else { "degraded" },
        checks: HealthChecks {
            database: if database_ok { "ok" } else { "unavailable" },
            docker: if runtime.reachable {
                "ok"
            } else {
                "unavailable"
            },
        },
    };
    let code = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(health))
}
