//! The recordings pages (administrators): recorded terminal sessions, newest first and by
//! host; a player that replays one in the browser with the vendored xterm.js (player.js); and
//! the cast itself as a download for `asciinema play`. Each calls the domain operation the
//! API calls, so `session:read` decides here as it does there.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::activity::{bytes, when};
use super::pages::{Nav, error_page, forbidden, render};
use super::session::WebUser;
use crate::api::AppState;
use crate::ops;
use crate::store::PageRequest;

struct RecordingView {
    id: Uuid,
    short_id: String,
    username: String,
    kind: String,
    status: String,
    input: bool,
    size: String,
    started: String,
    ended: String,
}

#[derive(Template)]
#[template(path = "admin_recordings.html")]
struct RecordingsPage {
    nav: Nav,
    recordings: Vec<RecordingView>,
    host: String,
    total: i64,
}

#[derive(Deserialize)]
pub struct RecordingQuery {
    #[serde(default)]
    host: String,
}

pub async fn list(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<RecordingQuery>,
) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    let host = q.host.trim().to_string();
    let host_id = if host.is_empty() {
        None
    } else {
        match ops::hosts::lookup(&state, &user.caller, &host).await {
            Ok(h) => Some(h.id),
            Err(e) => return error_page(&user, e),
        }
    };
    let page = PageRequest {
        page: 1,
        per_page: 100,
    };
    match ops::recordings::list(&state, &user.caller, host_id, page).await {
        Ok((rows, total)) => render(&RecordingsPage {
            nav: Nav::of(&user),
            host,
            total,
            recordings: rows
                .into_iter()
                .map(|r| RecordingView {
                    id: r.id,
                    short_id: r.short_id,
                    username: r.username,
                    kind: r.kind,
                    status: r.status,
                    input: r.with_input,
                    size: bytes(r.bytes.max(0) as u64),
                    started: when(Some(r.started_at)),
                    ended: when(r.ended_at),
                })
                .collect(),
        }),
        Err(e) => error_page(&user, e),
    }
}

#[derive(Template)]
#[template(path = "recording.html")]
struct PlayerPage {
    id: Uuid,
    short_id: String,
    username: String,
    kind: String,
    started: String,
}

/// The player: the page only; player.js fetches the cast.
pub async fn player(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    let found = match ops::parse_id(&id, "recording") {
        Ok(id) => ops::recordings::get(&state, &user.caller, id).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(r) => render(&PlayerPage {
            id: r.id,
            short_id: r.short_id,
            username: r.username,
            kind: r.kind,
            started: when(Some(r.started_at)),
        }),
        Err(e) => error_page(&user, e),
    }
}

/// The cast (asciicast v2), as a download named after the host and the start.
pub async fn cast(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    let found = async {
        let id = ops::parse_id(&id, "recording")?;
        let rec = ops::recordings::get(&state, &user.caller, id).await?;
        let cast = ops::recordings::cast(&state, &user.caller, id).await?;
        Ok::<_, ops::OpError>((rec, cast))
    }
    .await;
    match found {
        Ok((rec, cast)) => {
            let stamp = rec
                .started_at
                .format(time::macros::format_description!(
                    "[year][month][day]-[hour][minute][second]"
                ))
                .unwrap_or_default();
            let disposition = format!("attachment; filename=\"{}-{stamp}.cast\"", rec.short_id);
            (
                [
                    (header::CONTENT_TYPE, "application/x-asciicast".to_string()),
                    (header::CONTENT_DISPOSITION, disposition),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
                axum::body::Body::from_stream(cast.into_stream()),
            )
                .into_response()
        }
        Err(e) => error_page(&user, e),
    }
}
