//! `/v1/admin/events`: the audit trail, filterable by user, host, action and time.

use axum::extract::State;
use axum::http::request::Parts;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::AppState;
use super::envelope::{Page, page};
use super::error::{ApiError, ApiResult};
use super::extract::{Admin, Paging, can, query_map};
use crate::ops::events as ops;
pub use crate::ops::events::Event;
use crate::store::events::EventFilter;
use crate::validation::FieldErrors;

/// Largest `limit`.
pub const LIMIT_MAX: u32 = 1000;

/// Event filters plus paging; `limit` is an alias of `per_page` that allows up to 1000.
pub struct EventQuery {
    filter: EventFilter,
    paging: Paging,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for EventQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut q = query_map(parts);
        let mut errs = FieldErrors::new();
        let mut f = EventFilter::default();
        let uuid = |errs: &mut FieldErrors, key: &str| -> Option<Uuid> {
            let v = q.get(key)?;
            Uuid::parse_str(v)
                .map_err(|_| errs.add(key, "must be a UUID"))
                .ok()
        };
        f.user_id = uuid(&mut errs, "user_id");
        f.host_id = uuid(&mut errs, "host_id");
        let time = |errs: &mut FieldErrors, key: &str| -> Option<OffsetDateTime> {
            let v = q.get(key)?;
            OffsetDateTime::parse(v, &Rfc3339)
                .map(crate::clock::truncate)
                .map_err(|_| errs.add(key, "must be an RFC 3339 time"))
                .ok()
        };
        f.since = time(&mut errs, "since");
        f.until = time(&mut errs, "until");
        f.action = q.get("action").cloned();
        if let Some(limit) = q.remove("limit") {
            match limit.parse::<u32>() {
                Ok(n) if (1..=LIMIT_MAX).contains(&n) => {
                    q.insert("per_page".into(), n.to_string());
                }
                _ => errs.add(
                    "limit",
                    format!("must be a whole number from 1 to {LIMIT_MAX}"),
                ),
            }
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(errs));
        }
        let paging = Paging::from_query(parts.uri.path(), &q, LIMIT_MAX)?;
        Ok(EventQuery { filter: f, paging })
    }
}

/// List events, newest first.
#[utoipa::path(get, path = "/v1/admin/events", tag = "events",
    params(("limit" = Option<u32>, Query), ("user_id" = Option<Uuid>, Query), ("host_id" = Option<Uuid>, Query),
        ("action" = Option<String>, Query), ("since" = Option<String>, Query), ("until" = Option<String>, Query),
        ("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<Event>), (status = 422)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Admin<can::EventRead>,
    EventQuery { filter, paging }: EventQuery,
) -> ApiResult<axum::Json<Page<Event>>> {
    let (rows, total) = ops::list(&state, &caller.caller(), &filter, paging.req).await?;
    Ok(page(&paging, rows, total))
}
