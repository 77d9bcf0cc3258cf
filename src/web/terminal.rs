//! The terminal in the browser: the page (xterm.js, vendored) and its WebSocket, for an
//! administrator with `host:write` or the host's owner (`ops::hosts::terminal` decides), from
//! this site's origin only. The socket is handed to the SSH proxy, which runs it as a live
//! session like any other (`sshproxy::browser`). Nothing of the browser's request (cookies,
//! headers) goes into the container.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::pages::{error_page, render};
use super::session::{self, WebUser};
use crate::api::AppState;
use crate::ops;
use crate::sshproxy::browser::Viewer;

#[derive(Template)]
#[template(path = "terminal.html")]
struct TerminalPage {
    id: Uuid,
    short_id: String,
    account: String,
    back: String,
}

pub async fn page(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> Response {
    let host = match ops::parse_id(&id, "host") {
        Ok(id) => ops::hosts::terminal(&state, &user.caller, id).await,
        Err(e) => Err(e),
    };
    match host {
        Ok(h) => render(&TerminalPage {
            id: h.id,
            short_id: h.short_id,
            account: h.username.unwrap_or_default(),
            back: if user.is_admin() {
                format!("/admin/hosts/{}", h.id)
            } else {
                "/portal".into()
            },
        }),
        Err(e) => error_page(&user, e),
    }
}

#[derive(Deserialize)]
pub struct Size {
    cols: Option<u32>,
    rows: Option<u32>,
}

pub async fn socket(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(size): Query<Size>,
    upgrade: crate::api::server::HeldUpgrade,
) -> Response {
    let crate::api::server::HeldUpgrade { upgrade, slot } = upgrade;
    if !session::same_origin(&headers, state.public_url.as_deref()) {
        return (
            StatusCode::FORBIDDEN,
            "refused: a terminal from another site",
        )
            .into_response();
    }
    let host = match ops::parse_id(&id, "host") {
        Ok(id) => ops::hosts::terminal(&state, &user.caller, id).await,
        Err(e) => Err(e),
    };
    let host = match host {
        Ok(h) => h,
        Err(e) => return (super::pages::status_of(&e), e.to_string()).into_response(),
    };
    let viewer = Viewer {
        actor: user.caller.actor(),
        principal: user.caller.principal.clone(),
        source: Some(peer),
        cols: size.cols.unwrap_or(100),
        rows: size.rows.unwrap_or(30),
    };
    let proxy = state.ssh.clone();
    upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |ws| async move {
            // The socket holds its connection's place under the HTTP connection cap.
            let _slot = slot;
            proxy.browser_terminal(ws, host.id, viewer).await
        })
}
