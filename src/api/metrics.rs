//! `/metrics`: the metrics in OpenMetrics text, which Prometheus scrapes. On the API's address
//! it takes a bearer credential holding `metrics:read` (administrators hold it); on
//! `SLUICE_METRICS_ADDR`, meant for a private address, it takes none. Translation only:
//! `metrics::Snapshot` reads, `metrics::render` writes.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::extract::{Admin, can};

/// Sluice's metrics (hosts, tasks, egress sessions and tests, SSH sessions, password
/// failures, HTTP requests, the process), in OpenMetrics text.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, content_type = "application/openmetrics-text", body = String)),
    security(("bearer" = [])))]
pub async fn metrics(State(state): State<AppState>, _caller: Admin<can::MetricsRead>) -> Response {
    scrape(state).await
}

async fn scrape(state: AppState) -> Response {
    let snapshot = crate::metrics::Snapshot::take(&state).await;
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(snapshot).await,
    )
        .into_response()
}

/// The router of `SLUICE_METRICS_ADDR`: `/metrics` only, without credentials.
pub fn open_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(|State(s): State<AppState>| scrape(s)))
        .with_state(state)
}
