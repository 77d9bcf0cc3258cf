//! `/v1/admin/events`: the audit trail, filterable by user, host, action and time, and
//! `/v1/admin/events/stream`: the same, live, as Server-Sent Events.

use axum::extract::State;
use axum::http::request::Parts;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::AppState;
use super::envelope::{Page, page};
use super::error::{ApiError, ApiResult};
use super::extract::{Admin, Paging, can, query_map};
pub use crate::ops::events::Event;
use crate::ops::events::{self as ops, Live};
use crate::store::events::EventFilter;
use crate::validation::FieldErrors;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::StreamExt;

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

/// Live streams open at once; beyond, 503.
pub const MAX_STREAMS: usize = 256;
/// How often an idle stream says it is alive.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);

/// `?user_id`, `?host_id`, `?action` of the stream, and where to resume (`Last-Event-ID`).
pub struct StreamQuery {
    filter: EventFilter,
    last: Option<Uuid>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for StreamQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = query_map(parts);
        let mut errs = FieldErrors::new();
        let mut uuid = |key: &str, v: Option<&str>| -> Option<Uuid> {
            Uuid::parse_str(v?.trim())
                .map_err(|_| errs.add(key, "must be a UUID"))
                .ok()
        };
        let filter = EventFilter {
            user_id: uuid("user_id", q.get("user_id").map(String::as_str)),
            host_id: uuid("host_id", q.get("host_id").map(String::as_str)),
            action: q.get("action").cloned(),
            ..Default::default()
        };
        let header = parts
            .headers
            .get("last-event-id")
            .map(|v| v.to_str().unwrap_or("-"));
        let last = uuid("Last-Event-ID", header);
        errs.into_result(StreamQuery { filter, last })
            .map_err(ApiError::invalid)
    }
}

/// Follow events live (Server-Sent Events): each event's `id` is its id, `data` the event as
/// the list shows it. Send `Last-Event-ID` to resume; a heartbeat comes every 15 s; a client
/// that falls behind gets `event: fell_behind` and the stream ends (resume from the last id).
#[utoipa::path(get, path = "/v1/admin/events/stream", tag = "events",
    params(("user_id" = Option<Uuid>, Query), ("host_id" = Option<Uuid>, Query),
        ("action" = Option<String>, Query), ("Last-Event-ID" = Option<Uuid>, Header)),
    responses((status = 200, content_type = "text/event-stream", body = String),
        (status = 422), (status = 503)),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Admin<can::EventRead>,
    StreamQuery { filter, last }: StreamQuery,
) -> ApiResult<
    Sse<impl futures::Stream<Item = Result<SseEvent, std::convert::Infallible>> + Send + 'static>,
> {
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable("too many event streams are open; retry later".into())
    })?;
    let live = ops::live(&state, &caller.caller(), filter, last).await?;
    let hello = futures::stream::once(async { Ok(SseEvent::default().comment("connected")) });
    let events = live.map(move |item| {
        // The permit lives as long as the stream.
        let _held = &permit;
        Ok(match item {
            Live::Event(e) => SseEvent::default()
                .id(e.id.to_string())
                .json_data(&*e)
                .unwrap_or_else(|_| SseEvent::default().comment("unencodable event")),
            Live::FellBehind => SseEvent::default()
                .event("fell_behind")
                .data("resume with Last-Event-ID set to the last id received"),
        })
    });
    Ok(Sse::new(hello.chain(events))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")))
}
