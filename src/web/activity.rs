//! The operator's activity pages: live sessions (end one), tasks (by status), the event feed
//! (filtered, new events added as they happen) and API tokens (create with abilities, shown
//! once; revoke). Each calls the domain operation the API calls.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::pages::{CsrfForm, Nav, error_page, forbidden, guard, refusal, render, show_refusal};
use super::session::WebUser;
use crate::api::AppState;
use crate::auth::Ability;
use crate::ops::{self, OpError};
use crate::store::PageRequest;
use crate::store::events::EventFilter;
use crate::store::tasks::TaskFilter;

pub(super) fn when(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

fn recent() -> PageRequest {
    PageRequest {
        page: 1,
        per_page: 100,
    }
}

// ---- sessions

struct SessionView {
    id: uuid::Uuid,
    username: String,
    short_id: String,
    method: String,
    source: String,
    since: String,
    traffic: String,
}

#[derive(Template)]
#[template(path = "admin_sessions.html")]
struct SessionsPage {
    nav: Nav,
    sessions: Vec<SessionView>,
}

fn sessions_page(state: &AppState, user: &WebUser, refused: Option<OpError>) -> Response {
    let list = match ops::sessions::list(state, &user.caller) {
        Ok(l) => l,
        Err(e) => return error_page(user, e),
    };
    let mut nav = Nav::of(user);
    if let Some(e) = refused {
        nav.error = Some(refusal(e).0);
    }
    let sessions = list
        .into_iter()
        .map(|s| SessionView {
            id: s.id,
            username: s.username,
            short_id: s.short_id,
            method: s.method,
            source: s.source,
            since: when(Some(s.since)),
            traffic: format!("{} in, {} out", bytes(s.bytes_in), bytes(s.bytes_out)),
        })
        .collect();
    render(&SessionsPage { nav, sessions })
}

pub(super) fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub async fn sessions(State(state): State<AppState>, user: WebUser) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    sessions_page(&state, &user, None)
}

pub async fn end_session(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let result = match ops::parse_id(&id, "session") {
        Ok(id) => ops::sessions::end(&state, &user.caller, id).await.map(drop),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Redirect::to("/admin/sessions").into_response(),
        Err(e) => sessions_page(&state, &user, Some(e)),
    }
}

// ---- tasks

struct TaskView {
    kind: String,
    host: String,
    status: String,
    by: String,
    created: String,
    note: String,
}

#[derive(Template)]
#[template(path = "admin_tasks.html")]
struct TasksPage {
    nav: Nav,
    tasks: Vec<TaskView>,
    status: String,
}

#[derive(Deserialize)]
pub struct TaskQuery {
    #[serde(default)]
    status: String,
}

pub async fn tasks(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<TaskQuery>,
) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    let status = Some(q.status.clone()).filter(|s| crate::tasks::STATUSES.contains(&s.as_str()));
    let filter = TaskFilter {
        status,
        ..Default::default()
    };
    match ops::tasks::list(&state, &user.caller, &filter, recent()).await {
        Ok((rows, _)) => render(&TasksPage {
            nav: Nav::of(&user),
            status: filter.status.unwrap_or_default(),
            tasks: rows
                .into_iter()
                .map(|t| TaskView {
                    kind: t.kind,
                    host: t.host_id.map(|h| h.to_string()).unwrap_or_default(),
                    status: t.status,
                    by: t.created_by,
                    created: when(Some(t.created_at)),
                    note: t.error.or(t.progress).unwrap_or_default(),
                })
                .collect(),
        }),
        Err(e) => error_page(&user, e),
    }
}

// ---- events

struct EventView {
    time: String,
    actor: String,
    action: String,
    target: String,
    source: String,
}

#[derive(Template)]
#[template(path = "admin_events.html")]
struct EventsPage {
    nav: Nav,
    events: Vec<EventView>,
    action: String,
    host: String,
    host_id: String,
    user: String,
    user_id: String,
}

#[derive(Deserialize)]
pub struct EventQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    user: String,
}

pub async fn events(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<EventQuery>,
) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    let action = q.action.trim().to_string();
    let host = q.host.trim().to_string();
    let who = q.user.trim().to_string();
    let host_id = if host.is_empty() {
        None
    } else {
        match ops::hosts::lookup(&state, &user.caller, &host).await {
            Ok(h) => Some(h.id),
            Err(e) => return error_page(&user, e),
        }
    };
    // An id as given (a deleted account's events stay findable), or a user name.
    let user_id = if who.is_empty() {
        None
    } else if let Ok(id) = uuid::Uuid::parse_str(&who) {
        Some(id)
    } else {
        match ops::users::lookup(&state, &user.caller, &who).await {
            Ok(u) => Some(u.id),
            Err(e) => return error_page(&user, e),
        }
    };
    let filter = EventFilter {
        action: Some(action.clone()).filter(|a| !a.is_empty()),
        host_id,
        user_id,
        ..Default::default()
    };
    match ops::events::list(&state, &user.caller, &filter, recent()).await {
        Ok((rows, _)) => render(&EventsPage {
            nav: Nav::of(&user),
            action,
            host,
            host_id: host_id.map(|h| h.to_string()).unwrap_or_default(),
            user: who,
            user_id: user_id.map(|u| u.to_string()).unwrap_or_default(),
            events: rows
                .into_iter()
                .map(|e| EventView {
                    time: when(Some(e.created_at)),
                    actor: e.actor,
                    action: e.action,
                    target: e.target_id.unwrap_or_default(),
                    source: e.source_ip.unwrap_or_default(),
                })
                .collect(),
        }),
        Err(e) => error_page(&user, e),
    }
}

// ---- tokens

struct TokenView {
    id: uuid::Uuid,
    name: String,
    prefix: String,
    abilities: String,
    expires: String,
    used: String,
}

#[derive(Template)]
#[template(path = "admin_tokens.html")]
struct TokensPage {
    nav: Nav,
    tokens: Vec<TokenView>,
    abilities: Vec<&'static str>,
    created: Option<(String, String)>,
    errors: BTreeMap<String, Vec<String>>,
}

impl TokensPage {
    fn field_error(&self, name: &str) -> Option<String> {
        self.errors.get(name).map(|m| m.join("; "))
    }
}

async fn tokens_page(
    state: &AppState,
    user: &WebUser,
    created: Option<(String, String)>,
    refused: Option<OpError>,
) -> Response {
    let list = match ops::tokens::list(state, &user.caller, recent()).await {
        Ok((rows, _)) => rows,
        Err(e) => return error_page(user, e),
    };
    let mut nav = Nav::of(user);
    let (status, errors) = show_refusal(&mut nav, refused);
    let page = TokensPage {
        nav,
        tokens: list
            .into_iter()
            .map(|t| TokenView {
                id: t.id,
                name: t.name,
                prefix: t.prefix,
                abilities: t.abilities.join(", "),
                expires: when(t.expires_at),
                used: when(t.last_used_at),
            })
            .collect(),
        abilities: Ability::ALL.iter().map(|a| a.as_str()).collect(),
        created,
        errors,
    };
    (status, render(&page)).into_response()
}

pub async fn tokens(State(state): State<AppState>, user: WebUser) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    tokens_page(&state, &user, None, None).await
}

/// The token form: a name, an expiry, and one `ability.NAME` checkbox per ability.
pub async fn create_token(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let csrf = form.get("csrf").cloned().unwrap_or_default();
    if let Err(r) = guard(&state, &user, &headers, &csrf) {
        return r.into_response();
    }
    let mut abilities: Vec<String> = form
        .keys()
        .filter_map(|k| k.strip_prefix("ability."))
        .map(String::from)
        .collect();
    abilities.sort();
    let req = ops::tokens::CreateToken {
        name: form.get("name").cloned(),
        abilities: Some(abilities),
        expires_at: form
            .get("expires_at")
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty()),
    };
    match ops::tokens::create(&state, &user.caller, req).await {
        Ok(made) => tokens_page(&state, &user, Some((made.info.name, made.token)), None).await,
        Err(e) => tokens_page(&state, &user, None, Some(e)).await,
    }
}

pub async fn revoke_token(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let result = match ops::parse_id(&id, "token") {
        Ok(id) => ops::tokens::revoke(&state, &user.caller, id).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Redirect::to("/admin/tokens").into_response(),
        Err(e) => tokens_page(&state, &user, None, Some(e)).await,
    }
}
