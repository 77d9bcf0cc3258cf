//! Short links and bootstrap: the public, script-facing way into a host.
//!
//! - `GET /entry/{shortId}` serves a bash script; it posts the host's SSH password to
//!   `POST /v1/entry/{shortId}/auth`, which answers a one-time SSH credential (or starts a
//!   stopped host, whose task the script follows at `/v1/entry/{shortId}/tasks/{taskId}`).
//! - `GET /v1/bootstrap/script` does the same from a Sluice user name and password, through
//!   `/v1/bootstrap/sessions` and `/v1/bootstrap/tasks/{id}` (+ `/handoff`).
//!
//! Failed entry passwords lock the short id after five tries in fifteen minutes; bootstrap
//! logins share the login rate limit. Answers here are flat JSON, as the scripts read them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ClientIp, JsonBody};
use super::hosts::PublicHost;
use super::layers::check;
use crate::auth::attempts::Target;
use crate::auth::password;
use crate::events::{self, NewEvent};
use crate::hosts::{HostStatus, is_short_id};
use crate::ops::entry::{Admission, admit, choose_host};
use crate::sshproxy::login::{self, Check, Credential, Entrant};
use crate::store;
use crate::users::Role;

const COMMON: &str = include_str!("scripts/common.sh");
const ENTRY_SCRIPT: &str = include_str!("scripts/entry.sh");
const BOOTSTRAP_SCRIPT: &str = include_str!("scripts/bootstrap.sh");

/// How long a bootstrap session may wait for its host and its handoff.
const BOOTSTRAP_TTL: Duration = Duration::from_secs(15 * 60);
const BOOTSTRAP_MAX: usize = 10_000;

/// State of the bootstrap flow (password attempts are counted in `AppState::attempts`).
#[derive(Default)]
pub struct EntryState {
    bootstraps: Mutex<HashMap<String, Bootstrap>>,
}

#[derive(Clone)]
struct Bootstrap {
    host_id: Uuid,
    short_id: String,
    task_id: Option<Uuid>,
    created: Instant,
    handed_off: bool,
}

fn script(template: &str, base_url: &str, short_id: &str) -> Response {
    let quote = |s: &str| s.replace('\'', "");
    let body = template
        .replace("__COMMON__", COMMON)
        .replace("__BASE_URL__", &quote(base_url))
        .replace("__SHORT__", &quote(short_id));
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/x-shellscript; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The short link's script: `curl -sSf http://HOST/entry/SHORT | bash`.
#[utoipa::path(get, path = "/entry/{short_id}", tag = "entry", params(("short_id" = String, Path)),
    responses((status = 200, content_type = "text/x-shellscript", body = String), (status = 404)))]
pub async fn entry_script(ph: PublicHost, Path(short_id): Path<String>) -> ApiResult<Response> {
    if !is_short_id(&short_id) {
        return Err(ApiError::NotFound("host"));
    }
    Ok(script(ENTRY_SCRIPT, &ph.base_url, &short_id))
}

/// The bootstrap script: `curl -sSf http://HOST/v1/bootstrap/script | bash`.
#[utoipa::path(get, path = "/v1/bootstrap/script", tag = "entry",
    responses((status = 200, content_type = "text/x-shellscript", body = String)))]
pub async fn bootstrap_script(ph: PublicHost) -> Response {
    script(BOOTSTRAP_SCRIPT, &ph.base_url, "")
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EntryAuth {
    /// The host's SSH password.
    pub password: Option<String>,
}

/// What the entry script gets: `ready` with a one-time SSH login, or `starting`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryAnswer {
    /// `ready` or `starting`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Uuid>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub login: Option<SshLogin>,
}

/// A one-time SSH login through the proxy.
#[derive(Debug, Serialize, ToSchema)]
pub struct SshLogin {
    pub ssh_user: String,
    pub ssh_host: String,
    pub ssh_port: u16,
    /// Valid once, for two minutes.
    pub ssh_pass: String,
    /// A known_hosts line pinning the proxy's host key.
    pub host_key: String,
}

fn one_time_login(state: &AppState, ph: &PublicHost, host_id: Uuid, short_id: &str) -> SshLogin {
    SshLogin {
        ssh_user: short_id.to_string(),
        ssh_host: ph.ssh_host.clone(),
        ssh_port: state.ssh_port,
        ssh_pass: state.ssh.credentials.issue(host_id),
        host_key: state.ssh.known_hosts_line(&ph.ssh_host, state.ssh_port),
    }
}

async fn record(state: &AppState, e: NewEvent) {
    events::record_alone(&state.store, e).await;
}

/// Exchange a host's SSH password for a one-time SSH login.
#[utoipa::path(post, path = "/v1/entry/{short_id}/auth", tag = "entry", request_body = EntryAuth,
    params(("short_id" = String, Path)),
    responses((status = 200, body = EntryAnswer), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422), (status = 429)))]
pub async fn entry_auth(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ph: PublicHost,
    Path(short_id): Path<String>,
    JsonBody(req): JsonBody<EntryAuth>,
) -> ApiResult<Json<EntryAnswer>> {
    let password = req.password.unwrap_or_default();
    if password.is_empty() {
        return Err(ApiError::field("password", "is required"));
    }
    // The failure slot is taken before anything is checked: unknown and malformed short ids
    // cost the caller as much as wrong passwords.
    let attempt = state.attempts.begin(ip, Target::host(&short_id))?;
    if !is_short_id(&short_id) {
        attempt.failed();
        return Err(ApiError::NotFound("host"));
    }
    let source = ip.map(|i| i.to_string());
    let actor = format!("entry:{short_id}");
    let verdict = login::check(
        &state.store,
        &state.ssh.credentials,
        &short_id,
        Credential::HostPassword(&password),
    )
    .await;
    let entrant = match verdict {
        Ok(Check::Verified(e)) => {
            attempt.succeeded();
            *e
        }
        Ok(_) => {
            let locked = attempt.failed();
            let mut db = state.store.acquire().await?;
            let host = store::hosts::get_by_short_id(db.conn(), &short_id).await?;
            drop(db);
            let Some(host) = host else {
                return Err(match locked {
                    Some(wait) => ApiError::TooManyRequests {
                        retry_after: wait.as_secs(),
                    },
                    None => ApiError::NotFound("host"),
                });
            };
            record(
                &state,
                NewEvent::new(actor, "entry.auth_failed", "host")
                    .target(host.id)
                    .host(host.id)
                    .user(host.user_id)
                    .source(source)
                    .details(json!({"short_id": short_id, "locked_out": locked.is_some()})),
            )
            .await;
            return Err(match locked {
                Some(wait) => ApiError::TooManyRequests {
                    retry_after: wait.as_secs(),
                },
                None => ApiError::Unauthorized("wrong password".into()),
            });
        }
        Err(e) => {
            // Not a verdict on the password (busy, database): the slot goes back.
            attempt.succeeded();
            return Err(e.into());
        }
    };
    let host = entrant.host.clone();
    let answer = match admit(&state, &entrant, actor.clone(), source.clone()).await? {
        Admission::Ready => EntryAnswer {
            status: "ready",
            task_id: None,
            login: Some(one_time_login(&state, &ph, host.id, &host.short_id)),
        },
        Admission::Starting(task_id) => EntryAnswer {
            status: "starting",
            task_id,
            login: None,
        },
    };
    record(
        &state,
        NewEvent::new(actor, "entry.auth_succeeded", "host")
            .target(host.id)
            .host(host.id)
            .user(host.user_id)
            .source(source)
            .details(json!({"short_id": host.short_id, "status": answer.status})),
    )
    .await;
    Ok(Json(answer))
}

/// How a host's start is going, for the entry script.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryTask {
    /// `queued`, `running`, `succeeded` or `failed`.
    pub status: String,
    /// The task's progress, or its error once failed.
    pub message: Option<String>,
}

/// Follow the start of a host the entry script asked for.
#[utoipa::path(get, path = "/v1/entry/{short_id}/tasks/{task_id}", tag = "entry",
    params(("short_id" = String, Path), ("task_id" = Uuid, Path)),
    responses((status = 200, body = EntryTask), (status = 404)))]
pub async fn entry_task(
    State(state): State<AppState>,
    Path((short_id, task_id)): Path<(String, String)>,
) -> ApiResult<Json<EntryTask>> {
    let task_id = super::extract::parse_id(&task_id, "task")?;
    let mut db = state.store.acquire().await?;
    let host = store::hosts::get_by_short_id(db.conn(), &short_id)
        .await?
        .ok_or(ApiError::NotFound("host"))?;
    let task = store::tasks::get(db.conn(), task_id)
        .await?
        .filter(|t| t.host_id == Some(host.id))
        .ok_or(ApiError::NotFound("task"))?;
    let message = if task.status == "failed" {
        task.error
    } else {
        task.progress
    };
    Ok(Json(EntryTask {
        status: task.status,
        message,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BootstrapRequest {
    pub username: Option<String>,
    pub password: Option<String>,
    /// The short id of the host, when the user has several.
    pub host: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BootstrapStarted {
    /// The bootstrap task to follow (not a host task id).
    pub task_id: String,
    pub status_url: String,
}

/// Start a bootstrap: check a user's credentials and make sure their host runs.
#[utoipa::path(post, path = "/v1/bootstrap/sessions", tag = "entry", request_body = BootstrapRequest,
    responses((status = 201, body = BootstrapStarted), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422), (status = 429)))]
pub async fn bootstrap_start(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<BootstrapRequest>,
) -> ApiResult<(StatusCode, Json<BootstrapStarted>)> {
    let username = req.username.unwrap_or_default();
    let pw = req.password.unwrap_or_default();
    let mut errs = crate::validation::FieldErrors::new();
    if username.is_empty() {
        errs.add("username", "is required");
    }
    if pw.is_empty() {
        errs.add("password", "is required");
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(errs));
    }
    check(&state.limits.login, &(ip, username.clone()))?;
    let attempt = state.attempts.begin(ip, Target::account(&username))?;
    let source = ip.map(|i| i.to_string());
    let mut db = state.store.acquire().await?;
    let user = store::users::get_by_username(db.conn(), &username)
        .await?
        .filter(|u| u.role == Role::User.as_str());
    drop(db);
    let Some(user) = user else {
        password::verify_decoy(&pw).await?;
        attempt.failed();
        return Err(ApiError::Unauthorized("wrong user name or password".into()));
    };
    let right = match password::verify(&pw, &user.password_hash).await {
        Ok(right) => right,
        Err(e) => {
            attempt.succeeded();
            return Err(e.into());
        }
    };
    if right {
        attempt.succeeded();
    } else {
        attempt.failed();
        record(
            &state,
            NewEvent::new(
                format!("bootstrap:{username}"),
                "bootstrap.auth_failed",
                "user",
            )
            .target(user.id)
            .user(Some(user.id))
            .source(source),
        )
        .await;
        return Err(ApiError::Unauthorized("wrong user name or password".into()));
    }
    let mut db = state.store.acquire().await?;
    let hosts = store::hosts::of_user(db.conn(), user.id).await?;
    drop(db);
    let host = choose_host(&username, &hosts, req.host.as_deref())?;
    let entrant = Entrant {
        user,
        host: host.clone(),
        method: login::Method::Password,
    };
    let actor = format!("bootstrap:{username}");
    let task_id = match admit(&state, &entrant, actor.clone(), source.clone()).await? {
        Admission::Ready => None,
        Admission::Starting(task) => task,
    };
    let id = hex::encode(rand::random::<[u8; 16]>());
    {
        let mut all = state
            .entry
            .bootstraps
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        all.retain(|_, b| b.created.elapsed() < BOOTSTRAP_TTL);
        if all.len() >= BOOTSTRAP_MAX {
            return Err(ApiError::Unavailable(
                "too many bootstraps in progress; try again soon".into(),
            ));
        }
        all.insert(
            id.clone(),
            Bootstrap {
                host_id: host.id,
                short_id: host.short_id.clone(),
                task_id,
                created: Instant::now(),
                handed_off: false,
            },
        );
    }
    record(
        &state,
        NewEvent::new(actor, "bootstrap.started", "host")
            .target(host.id)
            .host(host.id)
            .user(host.user_id)
            .source(source)
            .details(json!({"short_id": host.short_id, "task_id": task_id})),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(BootstrapStarted {
            status_url: format!("/v1/bootstrap/tasks/{id}"),
            task_id: id,
        }),
    ))
}

/// Where a bootstrap stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct BootstrapStatus {
    /// `waiting`, `ready` or `failed`.
    pub status: &'static str,
    /// `starting host` or `ready`.
    pub stage: &'static str,
    pub message: String,
}

fn find_bootstrap(state: &AppState, id: &str) -> ApiResult<Bootstrap> {
    let all = state
        .entry
        .bootstraps
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.get(id)
        .filter(|b| b.created.elapsed() < BOOTSTRAP_TTL)
        .cloned()
        .ok_or(ApiError::NotFound("bootstrap task"))
}

async fn bootstrap_status_of(state: &AppState, b: &Bootstrap) -> ApiResult<BootstrapStatus> {
    let mut db = state.store.acquire().await?;
    if let Some(task_id) = b.task_id
        && let Some(t) = store::tasks::get(db.conn(), task_id).await?
    {
        match t.status.as_str() {
            "failed" => {
                return Ok(BootstrapStatus {
                    status: "failed",
                    stage: "starting host",
                    message: format!(
                        "host {} did not start: {}",
                        b.short_id,
                        t.error.unwrap_or_default()
                    ),
                });
            }
            "succeeded" => {}
            _ => {
                return Ok(BootstrapStatus {
                    status: "waiting",
                    stage: "starting host",
                    message: t
                        .progress
                        .unwrap_or_else(|| format!("host {} is queued to start", b.short_id)),
                });
            }
        }
    }
    let host = store::hosts::get(db.conn(), b.host_id)
        .await?
        .ok_or(ApiError::NotFound("host"))?;
    Ok(match host.status {
        HostStatus::Running => BootstrapStatus {
            status: "ready",
            stage: "ready",
            message: format!("host {} is running", b.short_id),
        },
        HostStatus::Pending | HostStatus::Provisioning => BootstrapStatus {
            status: "waiting",
            stage: "starting host",
            message: format!("host {} is starting", b.short_id),
        },
        _ => BootstrapStatus {
            status: "failed",
            stage: "starting host",
            message: format!("host {} is {}", b.short_id, host.status),
        },
    })
}

/// Follow a bootstrap.
#[utoipa::path(get, path = "/v1/bootstrap/tasks/{task_id}", tag = "entry", params(("task_id" = String, Path)),
    responses((status = 200, body = BootstrapStatus), (status = 404)))]
pub async fn bootstrap_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<BootstrapStatus>> {
    let b = find_bootstrap(&state, &id)?;
    Ok(Json(bootstrap_status_of(&state, &b).await?))
}

/// The SSH login of a bootstrap whose host is ready. Given once.
#[derive(Debug, Serialize, ToSchema)]
pub struct Handoff {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// A known_hosts line pinning the proxy's host key.
    pub host_key: String,
    /// Valid once, for two minutes.
    pub ssh_pass: String,
}

/// Take the SSH login of a ready bootstrap (once).
#[utoipa::path(get, path = "/v1/bootstrap/tasks/{task_id}/handoff", tag = "entry", params(("task_id" = String, Path)),
    responses((status = 200, body = Handoff), (status = 404), (status = 409)))]
pub async fn bootstrap_handoff(
    State(state): State<AppState>,
    ph: PublicHost,
    Path(id): Path<String>,
) -> ApiResult<Json<Handoff>> {
    let b = find_bootstrap(&state, &id)?;
    if b.handed_off {
        return Err(ApiError::NotFound("bootstrap task"));
    }
    let st = bootstrap_status_of(&state, &b).await?;
    if st.status != "ready" {
        return Err(ApiError::Conflict(st.message));
    }
    {
        let mut all = state
            .entry
            .bootstraps
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match all.get_mut(&id) {
            Some(b) if !b.handed_off => b.handed_off = true,
            _ => return Err(ApiError::NotFound("bootstrap task")),
        }
    }
    let login = one_time_login(&state, &ph, b.host_id, &b.short_id);
    Ok(Json(Handoff {
        host: login.ssh_host,
        port: login.ssh_port,
        user: login.ssh_user,
        host_key: login.host_key,
        ssh_pass: login.ssh_pass,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn scripts_are_valid_bash() {
        for t in [super::ENTRY_SCRIPT, super::BOOTSTRAP_SCRIPT] {
            let body = t
                .replace("__COMMON__", super::COMMON)
                .replace("__BASE_URL__", "http://x")
                .replace("__SHORT__", "abcdefgh");
            let out = std::process::Command::new("bash")
                .args(["-n", "-c", &body])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
