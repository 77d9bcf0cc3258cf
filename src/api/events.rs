//! `/v1/admin/events`: the audit trail, filterable by user, host, action and time.

use axum::extract::State;
use axum::http::request::Parts;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::envelope::{Page, page};
use super::error::{ApiError, ApiResult};
use super::extract::{Admin, Paging, can, query_map};
use crate::store::{
    self,
    events::{EventFilter, EventRow},
};
use crate::validation::FieldErrors;

/// An event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    pub id: Uuid,
    /// Who: `admin:NAME`, `user:NAME`, `token:NAME`, `login:NAME` or `system`.
    pub actor: String,
    /// What, such as `user.created` or `host.start_requested`.
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub user_id: Option<Uuid>,
    pub host_id: Option<Uuid>,
    pub source_ip: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<EventRow> for Event {
    fn from(e: EventRow) -> Self {
        Event {
            id: e.id,
            actor: e.actor,
            action: e.action,
            target_type: e.target_type,
            target_id: e.target_id,
            user_id: e.user_id,
            host_id: e.host_id,
            source_ip: e.source_ip,
            details: e.details.0,
            created_at: e.created_at,
        }
    }
}

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
    _: Admin<can::EventRead>,
    EventQuery { filter, paging }: EventQuery,
) -> ApiResult<axum::Json<Page<Event>>> {
    let mut db = state.store.acquire().await?;
    let (rows, total) = store::events::list(db.conn(), &filter, paging.req).await?;
    Ok(page(
        &paging,
        rows.into_iter().map(Event::from).collect(),
        total,
    ))
}
