//! The pages: each handler reads the session, calls domain operations, and renders a
//! template. State-changing requests are forms posted with the session's CSRF token from this
//! site's origin; a refusal is shown on the page (field errors next to their fields).

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::session::{self, WebUser};
use crate::api::AppState;
use crate::api::extract::ClientIp;
use crate::api::hosts::PublicHost;
use crate::ops::{self, OpError};
use crate::store::PageRequest;
use crate::store::events::EventFilter;
use crate::tasks::Kind;

/// What the layout shows: who is signed in, their CSRF token, and a message.
pub struct Nav {
    pub user: Option<String>,
    pub admin: bool,
    pub csrf: String,
    pub flash: Option<String>,
    pub error: Option<String>,
}

impl Nav {
    pub(super) fn of(user: &WebUser) -> Nav {
        Nav {
            user: Some(user.name()),
            admin: user.is_admin(),
            csrf: user.csrf.clone(),
            flash: None,
            error: None,
        }
    }
    fn anonymous() -> Nav {
        Nav {
            user: None,
            admin: false,
            csrf: String::new(),
            flash: None,
            error: None,
        }
    }
}

/// Field errors of a refused form, by field.
type Fields = BTreeMap<String, Vec<String>>;

fn first(fields: &Fields, name: &str) -> Option<String> {
    fields.get(name).map(|m| m.join("; "))
}

/// The status a page answers a refusal with.
pub(super) fn status_of(e: &OpError) -> StatusCode {
    match e {
        OpError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        OpError::NotFound(_) => StatusCode::NOT_FOUND,
        OpError::Forbidden(_) => StatusCode::FORBIDDEN,
        OpError::Conflict(_) => StatusCode::CONFLICT,
        OpError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        OpError::Unavailable(_) | OpError::ServerOnly(_) => StatusCode::SERVICE_UNAVAILABLE,
        OpError::Store(_) | OpError::Auth(_) | OpError::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// Puts a refusal, if there is one, on a page: its message in the layout, and the status and
/// field errors the page answers with.
pub(super) fn show_refusal(nav: &mut Nav, refused: Option<OpError>) -> (StatusCode, Fields) {
    match refused {
        Some(e) => {
            let status = status_of(&e);
            let (message, fields) = refusal(e);
            nav.error = Some(message);
            (status, fields)
        }
        None => (StatusCode::OK, Fields::new()),
    }
}

/// A refusal as the page tells it: the message, and the fields when there are some.
pub(super) fn refusal(e: OpError) -> (String, Fields) {
    match e {
        OpError::Invalid(f) => ("please correct the fields below".into(), f.0),
        OpError::Store(_) | OpError::Auth(_) | OpError::Internal(_) => {
            tracing::error!(error = %e, "a page's operation failed");
            (
                "something went wrong; details are in the Sluice log".into(),
                Fields::new(),
            )
        }
        other => (other.to_string(), Fields::new()),
    }
}

pub(super) fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

pub(super) fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "this page is for administrators").into_response()
}

/// A form's CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// A state-changing request from another origin or without the session's token.
pub(super) struct CrossSite;

impl IntoResponse for CrossSite {
    fn into_response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            "refused: this form did not come from this Sluice page (reload and try again)",
        )
            .into_response()
    }
}

/// Refuses a state-changing request from another origin or without the session's token.
pub(super) fn guard(
    state: &AppState,
    user: &WebUser,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(), CrossSite> {
    let origin_ok = session::same_origin(headers, state.public_url.as_deref());
    let token_ok: bool = csrf.as_bytes().ct_eq(user.csrf.as_bytes()).into();
    if origin_ok && token_ok {
        Ok(())
    } else {
        Err(CrossSite)
    }
}

/// Cookies are `Secure` when the browser reached Sluice over https: TLS here, a trusted
/// proxy's word, or an https public URL.
fn secure_cookies(state: &AppState, client: Option<&crate::api::client::Client>) -> bool {
    session::secure(state.public_url.as_deref(), client)
}

// ---- sign in and out

pub async fn home(user: Option<WebUser>) -> Redirect {
    match user {
        Some(u) if u.is_admin() => Redirect::to("/admin"),
        Some(_) => Redirect::to("/portal"),
        None => Redirect::to("/login"),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Nav,
    username: String,
}

pub async fn login_form(user: Option<WebUser>) -> Response {
    if user.is_some() {
        return Redirect::to("/").into_response();
    }
    render(&LoginPage {
        nav: Nav::anonymous(),
        username: String::new(),
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    client: Option<axum::Extension<crate::api::client::Client>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !session::same_origin(&headers, state.public_url.as_deref()) {
        return (
            StatusCode::FORBIDDEN,
            "refused: a sign-in from another site",
        )
            .into_response();
    }
    let username = form.username.trim().to_string();
    let failed = |status: StatusCode, message: String, username: String| {
        let mut nav = Nav::anonymous();
        nav.error = Some(message);
        (status, render(&LoginPage { nav, username })).into_response()
    };
    if username.is_empty() || form.password.is_empty() {
        return failed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "enter your user name and password".into(),
            username,
        );
    }
    match crate::api::login::password_login(&state, ip, &username, &form.password).await {
        Ok(login) => (
            [(
                header::SET_COOKIE,
                session::set_cookie(&login.token, secure_cookies(&state, client.as_deref())),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        Err(e) => {
            let status = e.status();
            failed(status, e.to_string(), username)
        }
    }
}

pub async fn logout(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    if let Err(e) = ops::account::logout(&state, &user.caller).await {
        tracing::warn!(error = %e, "logout failed");
    }
    (
        [(header::SET_COOKIE, session::clear_cookie(user.secure))],
        Redirect::to("/login"),
    )
        .into_response()
}

// ---- the admin dashboard

#[derive(Template)]
#[template(path = "admin_overview.html")]
struct OverviewPage {
    nav: Nav,
    users: i64,
    hosts_total: i64,
    by_status: Vec<(String, i64)>,
    sessions: usize,
    queued: i64,
    running: i64,
    failed: i64,
    docker_ok: bool,
    docker_version: String,
    docker_error: String,
    /// (kind, tag, size or "not built yet").
    images: Vec<(String, String, String)>,
    egress: Vec<super::egress::Row>,
}

/// Bytes as an operator reads them (MiB, one decimal).
fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub async fn overview(State(state): State<AppState>, user: WebUser) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    let c = &user.caller;
    let status = match ops::overview::status(&state, c).await {
        Ok(s) => s,
        Err(e) => return error_page(&user, e),
    };
    let stats = match ops::overview::stats(&state, c).await {
        Ok(s) => s,
        Err(e) => return error_page(&user, e),
    };
    // Failing ones first, as the egress page lists them.
    let egress = match super::egress::rows(&state, &user).await {
        Ok(rows) => rows,
        Err(e) => return error_page(&user, e),
    };
    let sessions = ops::sessions::list(&state, c).map(|s| s.len()).unwrap_or(0);
    render(&OverviewPage {
        nav: Nav::of(&user),
        users: stats.users,
        hosts_total: stats.hosts.total,
        by_status: stats.hosts.by_status.into_iter().collect(),
        sessions,
        queued: stats.tasks.queued,
        running: stats.tasks.running,
        failed: stats.tasks.failed_last_24h,
        docker_ok: status.docker.reachable,
        docker_version: status.docker.version.unwrap_or_default(),
        docker_error: status.docker.error.unwrap_or_default(),
        images: status
            .docker
            .images
            .iter()
            .map(|i| {
                let kind = serde_json::to_value(i.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let size = match i.size_bytes {
                    Some(b) => mib(b),
                    None if i.kind == crate::runtime::image::Kind::Desktop => {
                        "not built yet (built for the first desktop host)".into()
                    }
                    None => "not built yet".into(),
                };
                (kind, i.tag.clone(), size)
            })
            .collect(),
        egress,
    })
}

pub(super) fn error_page(user: &WebUser, e: OpError) -> Response {
    #[derive(Template)]
    #[template(
        source = "{% extends \"base.html\" %}{% block content %}{% endblock %}",
        ext = "html"
    )]
    struct ErrorPage {
        nav: Nav,
    }
    let status = status_of(&e);
    // An error page has no form to mark, so a refused field is named in the message itself.
    let message = match e {
        OpError::Invalid(fields) => fields.summary(),
        other => refusal(other).0,
    };
    let mut nav = Nav::of(user);
    nav.error = Some(message);
    (status, render(&ErrorPage { nav })).into_response()
}

struct HostView {
    id: Uuid,
    short_id: String,
    owner: String,
    status: String,
    egress: String,
    binding_id: Option<Uuid>,
    entry_command: String,
    ssh_command: String,
    desktop: bool,
    image: String,
    image_outdated: bool,
}

fn host_view(state: &AppState, row: crate::store::hosts::HostRow, ph: &PublicHost) -> HostView {
    let h = ops::hosts::Host::view(state, row, &ph.0);
    HostView {
        id: h.id,
        short_id: h.short_id,
        owner: h.username.unwrap_or_else(|| "-".into()),
        status: h.status.to_string(),
        egress: h
            .egress_ip_id
            .map(|e| e.to_string())
            .unwrap_or_else(|| "none".into()),
        binding_id: h.binding_id,
        entry_command: h.access.entry_command,
        ssh_command: h.access.ssh_command,
        desktop: h.desktop,
        image: h.image.unwrap_or_else(|| "-".into()),
        image_outdated: h.image_outdated,
    }
}

struct Created {
    short_id: String,
    password: String,
}

#[derive(Template)]
#[template(path = "admin_hosts.html")]
struct HostsPage {
    nav: Nav,
    hosts: Vec<HostView>,
    users: Vec<(Uuid, String)>,
    egress: Vec<(Uuid, String)>,
    created: Option<Created>,
    errors: Fields,
    /// The status the list is filtered by ("" for every host), and the statuses to offer.
    status: String,
    statuses: Vec<&'static str>,
}

impl HostsPage {
    fn field_error(&self, name: &str) -> Option<String> {
        first(&self.errors, name)
    }
}

async fn hosts_page(
    state: &AppState,
    user: &WebUser,
    ph: &PublicHost,
    created: Option<Created>,
    refused: Option<OpError>,
    status: &str,
) -> Response {
    let c = &user.caller;
    let all = PageRequest {
        page: 1,
        per_page: 100,
    };
    let filter = ops::hosts::HostFilter {
        status: Some(status.to_string()).filter(|s| !s.is_empty()),
        ..Default::default()
    };
    let hosts: Vec<HostView> = match ops::hosts::list(state, c, filter, all).await {
        Ok((rows, _)) => rows.into_iter().map(|h| host_view(state, h, ph)).collect(),
        Err(e) => return error_page(user, e),
    };
    let users = match ops::users::list(state, c, all).await {
        Ok((rows, _)) => rows.into_iter().map(|u| (u.id, u.username)).collect(),
        Err(e) => return error_page(user, e),
    };
    let egress: Vec<(Uuid, String)> = match ops::egress::list(state, c, all).await {
        Ok((rows, _)) => rows.into_iter().map(|e| (e.id, e.label)).collect(),
        Err(e) => return error_page(user, e),
    };
    // Hosts show their egress by name.
    let hosts: Vec<HostView> = hosts
        .into_iter()
        .map(|mut h: HostView| {
            if let Some((_, label)) = egress.iter().find(|(id, _)| id.to_string() == h.egress) {
                h.egress = label.clone();
            }
            h
        })
        .collect();
    let mut nav = Nav::of(user);
    let (code, errors) = show_refusal(&mut nav, refused);
    let page = HostsPage {
        nav,
        hosts,
        users,
        egress,
        created,
        errors,
        status: status.to_string(),
        statuses: crate::hosts::HostStatus::ALL.map(|s| s.as_str()).to_vec(),
    };
    (code, render(&page)).into_response()
}

#[derive(Deserialize)]
pub struct HostsQuery {
    #[serde(default)]
    status: String,
}

pub async fn hosts(
    State(state): State<AppState>,
    user: WebUser,
    ph: PublicHost,
    Query(q): Query<HostsQuery>,
) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    hosts_page(&state, &user, &ph, None, None, q.status.trim()).await
}

#[derive(Deserialize)]
pub struct HostForm {
    #[serde(default)]
    csrf: String,
    user_id: Option<String>,
    memory_mb: Option<String>,
    cpus: Option<String>,
    /// A checkbox: present ("on") when ticked.
    desktop: Option<String>,
}

/// A number field: empty is absent; anything else that is not a number is named.
fn number<T: std::str::FromStr>(
    errs: &mut crate::validation::FieldErrors,
    field: &str,
    v: Option<&str>,
) -> Option<T> {
    let v = v.map(str::trim).filter(|v| !v.is_empty())?;
    v.parse()
        .map_err(|_| errs.add(field, "must be a number"))
        .ok()
}

pub async fn create_host(
    State(state): State<AppState>,
    user: WebUser,
    ph: PublicHost,
    headers: HeaderMap,
    Form(form): Form<HostForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let mut errs = crate::validation::FieldErrors::new();
    let memory_mb = number(&mut errs, "memory_mb", form.memory_mb.as_deref());
    let cpus = number(&mut errs, "cpus", form.cpus.as_deref());
    if !errs.is_empty() {
        return hosts_page(&state, &user, &ph, None, Some(OpError::Invalid(errs)), "").await;
    }
    let req = ops::hosts::CreateHost {
        user_id: form.user_id,
        memory_mb,
        cpus,
        desktop: Some(form.desktop.is_some()),
        ..Default::default()
    };
    match ops::hosts::create(&state, &user.caller, req).await {
        Ok(made) => {
            let created = Created {
                short_id: made.host.short_id,
                password: made.ssh_password,
            };
            hosts_page(&state, &user, &ph, Some(created), None, "").await
        }
        Err(e) => hosts_page(&state, &user, &ph, None, Some(e), "").await,
    }
}

#[derive(Deserialize)]
pub struct BindForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    egress_ip_id: String,
}

pub async fn bind(
    State(state): State<AppState>,
    user: WebUser,
    ph: PublicHost,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<BindForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let req = ops::bindings::CreateBinding {
        host_id: Some(id),
        egress_ip_id: Some(form.egress_ip_id),
    };
    match ops::bindings::bind(&state, &user.caller, req).await {
        Ok(_) => Redirect::to("/admin/hosts").into_response(),
        Err(e) => hosts_page(&state, &user, &ph, None, Some(e), "").await,
    }
}

pub async fn unbind(
    State(state): State<AppState>,
    user: WebUser,
    ph: PublicHost,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let result = match ops::parse_id(&id, "binding") {
        Ok(id) => ops::bindings::unbind(&state, &user.caller, id)
            .await
            .map(drop),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Redirect::to("/admin/hosts").into_response(),
        Err(e) => hosts_page(&state, &user, &ph, None, Some(e), "").await,
    }
}

#[derive(Template)]
#[template(path = "admin_host.html")]
struct HostPage {
    nav: Nav,
    h: HostView,
    logs: Vec<String>,
    logs_note: String,
    password: Option<String>,
    check: Option<(String, String)>,
}

async fn host_page(
    state: &AppState,
    user: &WebUser,
    ph: &PublicHost,
    id: Uuid,
    password: Option<String>,
    check: Option<(String, String)>,
) -> Response {
    let c = &user.caller;
    let row = match ops::hosts::get(state, c, id).await {
        Ok(r) => r,
        Err(e) => return error_page(user, e),
    };
    let (logs, logs_note) = match ops::hosts::logs(state, c, id, 100).await {
        Ok(l) => (l.lines, String::new()),
        Err(e) => (vec![], e.to_string()),
    };
    let page = HostPage {
        nav: Nav::of(user),
        h: host_view(state, row, ph),
        logs,
        logs_note,
        password,
        check,
    };
    render(&page)
}

pub async fn host(
    State(state): State<AppState>,
    user: WebUser,
    ph: PublicHost,
    Path(id): Path<String>,
) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    match ops::parse_id(&id, "host") {
        Ok(id) => host_page(&state, &user, &ph, id, None, None).await,
        Err(e) => error_page(&user, e),
    }
}

pub async fn host_action(
    State(state): State<AppState>,
    user: WebUser,
    ph: PublicHost,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let c = &user.caller;
    let result = match ops::parse_id(&id, "host") {
        Err(e) => Err(e),
        Ok(id) => match action.as_str() {
            "start" => ops::hosts::step(&state, c, id, Kind::Start, json!({}))
                .await
                .map(drop),
            "stop" => ops::hosts::step(&state, c, id, Kind::Stop, json!({}))
                .await
                .map(drop),
            "suspend" => ops::hosts::step(&state, c, id, Kind::Suspend, json!({}))
                .await
                .map(drop),
            "delete" => ops::hosts::step(&state, c, id, Kind::Delete, json!({}))
                .await
                .map(drop),
            "rebuild" => ops::hosts::rebuild(&state, c, id, Default::default())
                .await
                .map(drop),
            "unsuspend" => ops::hosts::unsuspend(&state, c, id).await.map(drop),
            "rebuild-wipe" => {
                let req = ops::hosts::RebuildRequest {
                    wipe_home: Some(true),
                    desktop: None,
                };
                ops::hosts::rebuild(&state, c, id, req).await.map(drop)
            }
            "rebuild-desktop" | "rebuild-plain" => {
                let req = ops::hosts::RebuildRequest {
                    wipe_home: None,
                    desktop: Some(action == "rebuild-desktop"),
                };
                ops::hosts::rebuild(&state, c, id, req).await.map(drop)
            }
            "rotate-ssh-password" => {
                return match ops::hosts::rotate_ssh_password(&state, c, id).await {
                    Ok(p) => host_page(&state, &user, &ph, id, Some(p.ssh_password), None).await,
                    Err(e) => error_page(&user, e),
                };
            }
            "egress-check" => {
                let check = match ops::egress::check_host(&state, c, id).await {
                    Ok(r) => {
                        let v = serde_json::to_value(&r).unwrap_or_default();
                        let detail = format!(
                            "exit IP {} (declared {}), resolvers {}",
                            v["checks"]["exit_ip"]["observed"],
                            v["checks"]["exit_ip"]["expected"],
                            v["checks"]["dns_leak"]["resolvers"]
                        );
                        (r.status.to_string(), detail)
                    }
                    Err(e) => ("failed".to_string(), refusal(e).0),
                };
                return host_page(&state, &user, &ph, id, None, Some(check)).await;
            }
            _ => Err(OpError::NotFound("action")),
        },
    };
    match result {
        Ok(()) => Redirect::to("/admin/hosts").into_response(),
        Err(e) => hosts_page(&state, &user, &ph, None, Some(e), "").await,
    }
}

struct UserView {
    id: Uuid,
    username: String,
    status: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    nav: Nav,
    users: Vec<UserView>,
    q: String,
    page: u32,
    pages: u32,
    username: String,
    created: Option<(String, String)>,
    errors: Fields,
}

impl UsersPage {
    fn field_error(&self, name: &str) -> Option<String> {
        first(&self.errors, name)
    }
}

#[derive(Deserialize, Default)]
pub struct UsersQuery {
    #[serde(default)]
    q: String,
    page: Option<u32>,
}

const USERS_PER_PAGE: u32 = 25;

async fn users_page(
    state: &AppState,
    user: &WebUser,
    query: UsersQuery,
    form_username: String,
    created: Option<(String, String)>,
    refused: Option<OpError>,
) -> Response {
    let page = query.page.unwrap_or(1).max(1);
    let req = PageRequest {
        page,
        per_page: USERS_PER_PAGE,
    };
    let (rows, total) = match ops::users::search(state, &user.caller, Some(&query.q), req).await {
        Ok(r) => r,
        Err(e) => return error_page(user, e),
    };
    let mut nav = Nav::of(user);
    let (status, errors) = show_refusal(&mut nav, refused);
    let users = rows
        .into_iter()
        .map(|u| UserView {
            id: u.id,
            username: u.username,
            status: u.status.as_str().to_string(),
            expires: u
                .expires_at
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| "never".into()),
        })
        .collect();
    let pages = (total.max(1) as u32).div_ceil(USERS_PER_PAGE);
    let page = UsersPage {
        nav,
        users,
        q: query.q,
        page,
        pages,
        username: form_username,
        created,
        errors,
    };
    (status, render(&page)).into_response()
}

pub async fn users(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<UsersQuery>,
) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    users_page(&state, &user, query, String::new(), None, None).await
}

#[derive(Deserialize)]
pub struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
}

pub async fn create_user(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    Form(form): Form<UserForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let req = ops::users::CreateUser {
        username: Some(form.username.trim().to_string()),
        ..Default::default()
    };
    match ops::users::create(&state, &user.caller, req).await {
        Ok(made) => {
            let shown = (made.user.username, made.password.unwrap_or_default());
            users_page(
                &state,
                &user,
                UsersQuery::default(),
                String::new(),
                Some(shown),
                None,
            )
            .await
        }
        Err(e) => {
            users_page(
                &state,
                &user,
                UsersQuery::default(),
                form.username,
                None,
                Some(e),
            )
            .await
        }
    }
}

// ---- the user portal

#[derive(Template)]
#[template(path = "portal.html")]
struct PortalPage {
    nav: Nav,
    hosts: Vec<HostView>,
    keys: Vec<ops::ssh_keys::SshKey>,
    private_key: Option<(String, String)>,
    errors: Fields,
}

impl PortalPage {
    fn field_error(&self, name: &str) -> Option<String> {
        first(&self.errors, name)
    }
}

async fn portal_page(
    state: &AppState,
    user: &WebUser,
    ph: &PublicHost,
    private_key: Option<(String, String)>,
    refused: Option<OpError>,
) -> Response {
    let mine = PageRequest {
        page: 1,
        per_page: 100,
    };
    let hosts = match ops::hosts::list(state, &user.caller, Default::default(), mine).await {
        Ok((rows, _)) => rows.into_iter().map(|h| host_view(state, h, ph)).collect(),
        Err(e) => return error_page(user, e),
    };
    let keys = match user.caller.principal.user_id() {
        Some(me) => match ops::ssh_keys::list(state, &user.caller, me, mine).await {
            Ok((k, _)) => k,
            Err(e) => return error_page(user, e),
        },
        None => vec![],
    };
    let mut nav = Nav::of(user);
    let (status, errors) = show_refusal(&mut nav, refused);
    let page = PortalPage {
        nav,
        hosts,
        keys,
        private_key,
        errors,
    };
    (status, render(&page)).into_response()
}

pub async fn portal(State(state): State<AppState>, user: WebUser, ph: PublicHost) -> Response {
    if user.is_admin() {
        return Redirect::to("/admin").into_response();
    }
    portal_page(&state, &user, &ph, None, None).await
}

pub async fn portal_host(
    State(state): State<AppState>,
    user: WebUser,
    ph: PublicHost,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let c = &user.caller;
    let result = match ops::parse_id(&id, "host") {
        Ok(id) => match action.as_str() {
            "start" => ops::hosts::step(&state, c, id, Kind::Start, json!({}))
                .await
                .map(drop),
            "rebuild" => ops::hosts::rebuild(&state, c, id, Default::default())
                .await
                .map(drop),
            _ => Err(OpError::NotFound("action")),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Redirect::to("/portal").into_response(),
        Err(e) => portal_page(&state, &user, &ph, None, Some(e)).await,
    }
}

#[derive(Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    public_key: String,
}

/// My keys: add one (`/portal/keys`), generate a pair (`/portal/keys/generate`).
pub async fn portal_add_key(
    State(state): State<AppState>,
    user: WebUser,
    ph: PublicHost,
    headers: HeaderMap,
    Form(form): Form<KeyForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let Some(me) = user.caller.principal.user_id() else {
        return forbidden();
    };
    let req = ops::ssh_keys::AddKey {
        public_key: Some(form.public_key),
        name: None,
    };
    match ops::ssh_keys::add(&state, &user.caller, me, req).await {
        Ok(_) => Redirect::to("/portal").into_response(),
        Err(e) => portal_page(&state, &user, &ph, None, Some(e)).await,
    }
}

pub async fn portal_generate_key(
    State(state): State<AppState>,
    user: WebUser,
    ph: PublicHost,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let Some(me) = user.caller.principal.user_id() else {
        return forbidden();
    };
    match ops::ssh_keys::generate(&state, &user.caller, me, Default::default()).await {
        Ok(k) => {
            let shown = Some((k.key.name, k.private_key));
            portal_page(&state, &user, &ph, shown, None).await
        }
        Err(e) => portal_page(&state, &user, &ph, None, Some(e)).await,
    }
}

pub async fn portal_delete_key(
    State(state): State<AppState>,
    user: WebUser,
    ph: PublicHost,
    headers: HeaderMap,
    Path(key_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let Some(me) = user.caller.principal.user_id() else {
        return forbidden();
    };
    let result = match ops::parse_id(&key_id, "ssh key") {
        Ok(k) => ops::ssh_keys::delete(&state, &user.caller, me, k).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Redirect::to("/portal").into_response(),
        Err(e) => portal_page(&state, &user, &ph, None, Some(e)).await,
    }
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    old_password: String,
    #[serde(default)]
    new_password: String,
}

pub async fn portal_password(
    State(state): State<AppState>,
    user: WebUser,
    ph: PublicHost,
    headers: HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    match ops::account::change_password(
        &state,
        &user.caller,
        &form.old_password,
        &form.new_password,
    )
    .await
    {
        // Every login token of the account ended with the change, this one included.
        Ok(()) => (
            [(header::SET_COOKIE, session::clear_cookie(user.secure))],
            Redirect::to("/login"),
        )
            .into_response(),
        Err(e) => portal_page(&state, &user, &ph, None, Some(e)).await,
    }
}

// ---- live parts

/// A host's status, for the page's script.
pub async fn host_status(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> Response {
    let result = match ops::parse_id(&id, "host") {
        Ok(id) => ops::hosts::get(&state, &user.caller, id).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(h) => axum::Json(json!({"id": h.id, "status": h.status})).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The event stream for the dashboard's live parts (an administrator's session, this site's
/// origin only).
pub async fn events(State(state): State<AppState>, user: WebUser, headers: HeaderMap) -> Response {
    if !session::same_origin(&headers, state.public_url.as_deref()) {
        return (
            StatusCode::FORBIDDEN,
            "refused: another site's event stream",
        )
            .into_response();
    }
    let Ok(permit) = state.streams.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many event streams").into_response();
    };
    let live = match ops::events::live(&state, &user.caller, EventFilter::default(), None).await {
        Ok(l) => l,
        Err(OpError::Forbidden(m)) => return (StatusCode::FORBIDDEN, m).into_response(),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let stream = live.map(move |item| {
        let _held = &permit;
        Ok::<_, std::convert::Infallible>(match item {
            ops::events::Live::Event(e) => SseEvent::default()
                .id(e.id.to_string())
                .json_data(json!({"action": e.action, "host_id": e.host_id, "user_id": e.user_id, "actor": e.actor,
                    "target_id": e.target_id, "source_ip": e.source_ip,
                    "created_at": e.created_at.format(&time::format_description::well_known::Rfc3339).ok()}))
                .unwrap_or_else(|_| SseEvent::default().comment("unencodable")),
            ops::events::Live::FellBehind => {
                SseEvent::default().event("fell_behind").data("reload")
            }
        })
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().text("heartbeat"))
        .into_response()
}
