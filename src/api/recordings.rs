//! `/v1/admin/recordings`: recorded terminal sessions (when the install records them), listed
//! and downloaded as asciicast v2 with `session:read`. Translation only: `ops::recordings`.

use axum::extract::{Path, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::{ApiError, ApiResult};
use super::extract::{Admin, Paging, can, parse_id, query_map};
use crate::ops::recordings as ops;
pub use crate::ops::recordings::Recording;

/// `?host_id`, validated.
pub struct RecordingQuery(Option<Uuid>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RecordingQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        query_map(parts)
            .get("host_id")
            .map(|h| Uuid::parse_str(h).map_err(|_| ApiError::field("host_id", "must be a UUID")))
            .transpose()
            .map(RecordingQuery)
    }
}

/// Recorded sessions, newest first.
#[utoipa::path(get, path = "/v1/admin/recordings", tag = "sessions",
    params(("host_id" = Option<Uuid>, Query), ("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<Recording>), (status = 422)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Admin<can::SessionRead>,
    RecordingQuery(host_id): RecordingQuery,
    paging: Paging,
) -> ApiResult<axum::Json<Page<Recording>>> {
    let (rows, total) = ops::list(&state, &caller.caller(), host_id, paging.req).await?;
    Ok(page(&paging, rows, total))
}

/// One recorded session.
#[utoipa::path(get, path = "/v1/admin/recordings/{id}", tag = "sessions", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<Recording>), (status = 404)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Admin<can::SessionRead>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<Recording>>> {
    let id = parse_id(&id, "recording")?;
    Ok(data(ops::get(&state, &caller.caller(), id).await?))
}

/// The recording as an asciicast v2 file (`asciinema play FILE` plays it).
#[utoipa::path(get, path = "/v1/admin/recordings/{id}/cast", tag = "sessions", params(("id" = Uuid, Path)),
    responses((status = 200, content_type = "application/x-asciicast", body = String), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub async fn cast(
    State(state): State<AppState>,
    caller: Admin<can::SessionRead>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id, "recording")?;
    let body =
        axum::body::Body::from_stream(ops::cast(&state, &caller.caller(), id).await?.into_stream());
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-asciicast".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.cast\""),
            ),
        ],
        body,
    )
        .into_response())
}
