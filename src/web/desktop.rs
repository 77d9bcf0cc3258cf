//! The desktop in the browser: the page (noVNC, vendored, with Sluice's own script) at the
//! reference's routes `/v1/admin/hosts/{id}/vnc/` and `/v1/user/hosts/{id}/vnc/`, for an
//! administrator with `host:write` or the host's owner (`ops::desktop` decides); the page's
//! ticket request (session cookie, CSRF token and Origin checked); and the WebSocket at
//! `.../vnc/websockify`, admitted by the ticket alone and handed to the desktop relay. Nothing
//! of the browser's request (cookies, headers) goes into the container.

use std::net::SocketAddr;

use askama::Template;
use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::pages::{error_page, guard, render, status_of};
use super::session::{self, WebUser};
use crate::api::AppState;
use crate::ops;
use crate::sshproxy::browser::Viewer;

#[derive(Template)]
#[template(path = "desktop.html")]
struct DesktopPage {
    short_id: String,
    account: String,
    back: String,
    ticket_url: String,
    csrf: String,
}

/// The desktop page.
pub async fn page(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> Response {
    let host = match ops::parse_id(&id, "host") {
        Ok(id) => ops::desktop::host(&state, &user.caller, id).await,
        Err(e) => Err(e),
    };
    match host {
        Ok(h) => render(&DesktopPage {
            short_id: h.short_id,
            account: h.username.unwrap_or_default(),
            back: if user.is_admin() {
                format!("/admin/hosts/{}", h.id)
            } else {
                "/portal".into()
            },
            ticket_url: format!("/web/hosts/{}/desktop/ticket", h.id),
            csrf: user.csrf.clone(),
        }),
        Err(e) => error_page(&user, e),
    }
}

/// A ticket for the page's WebSocket: JSON, for the page's script.
pub async fn ticket(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let csrf = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Err(refused) = guard(&state, &user, &headers, csrf) {
        return refused.into_response();
    }
    let ticket = match ops::parse_id(&id, "host") {
        Ok(id) => ops::desktop::ticket(&state, &user.caller, id).await,
        Err(e) => Err(e),
    };
    match ticket {
        Ok(t) => (StatusCode::CREATED, Json(json!(t))).into_response(),
        Err(e) => (status_of(&e), Json(json!({"error": e.to_string()}))).into_response(),
    }
}

#[derive(Deserialize)]
pub struct TicketQuery {
    ticket: Option<String>,
}

/// The desktop's WebSocket: the ticket admits it (no cookie needed), from this site's origin
/// only.
pub async fn socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(q): Query<TicketQuery>,
    upgrade: crate::api::server::HeldUpgrade,
) -> Response {
    let crate::api::server::HeldUpgrade { upgrade, slot } = upgrade;
    if !session::same_origin(&headers, state.public_url.as_deref()) {
        return (
            StatusCode::FORBIDDEN,
            "refused: a desktop from another site",
        )
            .into_response();
    }
    let Some(token) = q.ticket.filter(|t| !t.is_empty()) else {
        return (
            StatusCode::UNAUTHORIZED,
            "a desktop ticket is required (POST .../vnc/ticket)",
        )
            .into_response();
    };
    let id: Uuid = match ops::parse_id(&id, "host") {
        Ok(id) => id,
        Err(e) => return (status_of(&e), e.to_string()).into_response(),
    };
    let (host, viewer) = match ops::desktop::redeem(&state, &token, id).await {
        Ok(v) => v,
        Err(e) => return (status_of(&e), e.to_string()).into_response(),
    };
    let viewer = Viewer {
        actor: viewer.actor(),
        principal: viewer.principal.clone(),
        source: Some(peer),
        cols: 0,
        rows: 0,
    };
    let proxy = state.ssh.clone();
    upgrade
        .protocols(["binary"])
        .max_message_size(1024 * 1024)
        .on_upgrade(move |ws| async move {
            // The socket holds its connection's place under the HTTP connection cap.
            let _slot = slot;
            proxy.desktop(ws, host, viewer).await
        })
}
