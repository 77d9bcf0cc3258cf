//! `/v1/admin/hosts` and `/v1/admin/bindings`: users' containers, their lifecycle (each step a
//! queued task), and the egress each is bound to.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::{ApiError, ApiResult};
use super::extract::{Admin, JsonBody, Paging, can, parse_id, query_map};
use super::users::find_user;
use crate::auth::password;
use crate::events::{self, NewEvent};
use crate::hosts::{self as rules, HostStatus};
use crate::store::hosts::{BindingRow, HostRow, NewHost};
use crate::store::{self, Conn};
use crate::tasks::{self, Kind};
use crate::users::generate_password;
use crate::validation::FieldErrors;

/// How to reach a host.
#[derive(Debug, Serialize, ToSchema)]
pub struct Access {
    /// One line for the user: fetches the entry script and opens a shell.
    pub entry_command: String,
    /// Plain SSH through the proxy.
    pub ssh_command: String,
}

/// A host.
#[derive(Debug, Serialize, ToSchema)]
pub struct Host {
    pub id: Uuid,
    /// 8 characters; the SSH user name and the short link.
    pub short_id: String,
    pub user_id: Option<Uuid>,
    pub username: Option<String>,
    pub status: HostStatus,
    /// Why the host is in `error`, if it is.
    pub status_reason: Option<String>,
    pub memory_mb: i64,
    pub cpus: f64,
    pub pids_limit: i64,
    pub egress_ip_id: Option<Uuid>,
    pub binding_id: Option<Uuid>,
    /// The managed image the container was made from.
    pub image: Option<String>,
    /// Whether a newer managed image exists: a rebuild moves the host onto it.
    pub image_outdated: bool,
    pub access: Access,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Where users reach Sluice, as access commands show it: the SSH host name (the configured
/// public host, or the request's Host header without its port) and the base URL of short
/// links (the configured public URL, or `http://` and the request's Host header).
pub struct PublicHost {
    pub ssh_host: String,
    pub base_url: String,
}

fn safe_host(h: &str) -> bool {
    !h.is_empty()
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
}

impl FromRequestParts<AppState> for PublicHost {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| safe_host(h));
        let ssh_host = match (&state.public_host, header) {
            (Some(h), _) => h.clone(),
            (None, Some(host)) => {
                if host.starts_with('[') {
                    host.split(']')
                        .next()
                        .map(|h| format!("{h}]"))
                        .unwrap_or_default()
                } else {
                    host.split(':').next().unwrap_or(host).to_string()
                }
            }
            (None, None) => "localhost".into(),
        };
        let base_url = match (&state.public_url, header) {
            (Some(u), _) => u.clone(),
            (None, Some(host)) => format!("http://{host}"),
            (None, None) => format!("http://{ssh_host}"),
        };
        Ok(PublicHost { ssh_host, base_url })
    }
}

pub fn host_view(
    h: HostRow,
    public: &PublicHost,
    ssh_port: u16,
    current_image: Option<&str>,
) -> Host {
    let (entry_command, ssh_command) =
        rules::access_commands(&public.base_url, &public.ssh_host, ssh_port, &h.short_id);
    let image_outdated =
        matches!((h.image.as_deref(), current_image), (Some(a), Some(b)) if a != b);
    Host {
        id: h.id,
        short_id: h.short_id,
        user_id: h.user_id,
        username: h.username,
        status: HostStatus::parse(&h.status).unwrap_or(HostStatus::Error),
        status_reason: h.status_reason,
        memory_mb: h.memory_mb,
        cpus: h.cpus,
        pids_limit: h.pids_limit,
        egress_ip_id: h.egress_ip_id,
        binding_id: h.binding_id,
        image: h.image,
        image_outdated,
        access: Access {
            entry_command,
            ssh_command,
        },
        created_at: h.created_at,
        updated_at: h.updated_at,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateHost {
    pub user_id: Option<String>,
    pub egress_ip_id: Option<String>,
    /// Memory limit in MiB, 64-65536 (default 1024).
    pub memory_mb: Option<i64>,
    /// CPU limit, 0.1-64 (default 1).
    pub cpus: Option<f64>,
    /// Process limit, 32-65536 (default 512).
    pub pids_limit: Option<i64>,
}

/// A host just created, with its creation task and its SSH password (shown only here).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedHost {
    #[serde(flatten)]
    pub host: Host,
    pub task_id: Uuid,
    pub ssh_password: String,
}

/// A queued lifecycle step.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskQueued {
    pub task_id: Uuid,
    pub host_id: Uuid,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
pub struct RebuildRequest {
    /// Start with an empty home volume.
    pub wipe_home: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SshPassword {
    /// The host's new SSH password, shown only in this answer.
    pub ssh_password: String,
}

fn bounded_i64(
    errs: &mut FieldErrors,
    field: &str,
    v: Option<i64>,
    def: i64,
    (lo, hi): (i64, i64),
) -> i64 {
    match v {
        None => def,
        Some(x) if (lo..=hi).contains(&x) => x,
        Some(_) => {
            errs.add(field, format!("must be from {lo} to {hi}"));
            def
        }
    }
}

/// `?user_id` of the host list, validated.
pub struct HostQuery {
    user_id: Option<Uuid>,
}

impl<S: Send + Sync> FromRequestParts<S> for HostQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let user_id = query_map(parts)
            .get("user_id")
            .map(|v| Uuid::parse_str(v).map_err(|_| ApiError::field("user_id", "must be a UUID")))
            .transpose()?;
        Ok(HostQuery { user_id })
    }
}

pub async fn find_host(c: Conn<'_>, id: Uuid) -> ApiResult<HostRow> {
    store::hosts::get(c, id)
        .await?
        .ok_or(ApiError::NotFound("host"))
}

/// List hosts.
#[utoipa::path(get, path = "/v1/admin/hosts", tag = "hosts",
    params(("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query), ("user_id" = Option<Uuid>, Query)),
    responses((status = 200, body = Page<Host>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: Admin<can::HostRead>,
    ph: PublicHost,
    paging: Paging,
    HostQuery { user_id }: HostQuery,
) -> ApiResult<axum::Json<Page<Host>>> {
    let mut db = state.store.acquire().await?;
    let (rows, total) = store::hosts::list(db.conn(), user_id, paging.req).await?;
    let port = state.ssh_port;
    let image = state.runtime.image();
    Ok(page(
        &paging,
        rows.into_iter()
            .map(|h| host_view(h, &ph, port, image.as_deref()))
            .collect(),
        total,
    ))
}

/// Create a host for a user; answers 202 with the creation task and the SSH password.
#[utoipa::path(post, path = "/v1/admin/hosts", tag = "hosts", request_body = CreateHost,
    responses((status = 202, body = Data<CreatedHost>), (status = 422)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    ph: PublicHost,
    JsonBody(req): JsonBody<CreateHost>,
) -> ApiResult<(StatusCode, axum::Json<Data<CreatedHost>>)> {
    let mut errs = FieldErrors::new();
    let user_id = match req.user_id.as_deref().map(Uuid::parse_str) {
        None => {
            errs.add("user_id", "is required");
            None
        }
        Some(Err(_)) => {
            errs.add("user_id", "must be a UUID");
            None
        }
        Some(Ok(id)) => Some(id),
    };
    let egress_ip_id = match req.egress_ip_id.as_deref().map(Uuid::parse_str) {
        None => None,
        Some(Err(_)) => {
            errs.add("egress_ip_id", "must be a UUID");
            None
        }
        Some(Ok(id)) => Some(id),
    };
    let memory_mb = bounded_i64(
        &mut errs,
        "memory_mb",
        req.memory_mb,
        rules::MEMORY_MB_DEFAULT,
        rules::MEMORY_MB_RANGE,
    );
    let pids_limit = bounded_i64(
        &mut errs,
        "pids_limit",
        req.pids_limit,
        rules::PIDS_DEFAULT,
        rules::PIDS_RANGE,
    );
    let cpus = match req.cpus {
        None => rules::CPUS_DEFAULT,
        Some(c) if c.is_finite() && (rules::CPUS_RANGE.0..=rules::CPUS_RANGE.1).contains(&c) => c,
        Some(_) => {
            errs.add(
                "cpus",
                format!(
                    "must be from {} to {}",
                    rules::CPUS_RANGE.0,
                    rules::CPUS_RANGE.1
                ),
            );
            rules::CPUS_DEFAULT
        }
    };

    let mut db = state.store.acquire().await?;
    if let Some(uid) = user_id
        && find_user(db.conn(), uid).await.is_err()
    {
        errs.add("user_id", "no such user");
    }
    if let Some(eid) = egress_ip_id {
        match store::egress::get(db.conn(), eid).await? {
            None => errs.add("egress_ip_id", "no such egress IP"),
            Some(e) => {
                let bound = store::egress::bound_hosts(db.conn(), eid).await?;
                if let Some(err) = one_host_per_peer(&e.tunnel_type, &bound) {
                    return Err(err);
                }
            }
        }
    }
    drop(db);
    let Some(user_id) = user_id.filter(|_| errs.is_empty()) else {
        return Err(ApiError::invalid(errs));
    };
    // Hash before taking the write transaction; foreign keys still guard the references.
    let ssh_password = generate_password();
    let ssh_password_hash = password::hash(&ssh_password).await?;
    let mut tx = state.store.begin().await?;

    let now = crate::clock::now();
    let host_id = Uuid::now_v7();
    let mut new = NewHost {
        id: host_id,
        short_id: String::new(),
        user_id,
        status: HostStatus::Pending.as_str().into(),
        memory_mb,
        cpus,
        pids_limit,
        ssh_password_hash,
        created_at: now,
    };
    // A short id collision is rare (31^8 ids); draw again a few times.
    for attempt in 1.. {
        new.short_id = rules::generate_short_id();
        if attempt >= 5 || !store::hosts::short_id_taken(tx.conn(), &new.short_id).await? {
            break;
        }
    }
    store::hosts::insert(tx.conn(), &new).await?;
    if let Some(eid) = egress_ip_id {
        store::hosts::insert_binding(
            tx.conn(),
            &BindingRow {
                id: Uuid::now_v7(),
                host_id,
                egress_ip_id: eid,
                created_at: now,
            },
        )
        .await?;
    }
    let task_id =
        tasks::enqueue(tx.conn(), Kind::Create, host_id, json!({}), &caller.actor()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "host.created", "host")
            .target(host_id)
            .host(host_id)
            .user(Some(user_id))
            .source(caller.source())
            .details(json!({
                "short_id": new.short_id, "memory_mb": memory_mb, "cpus": cpus,
                "pids_limit": pids_limit, "egress_ip_id": egress_ip_id, "task_id": task_id,
            })),
    )
    .await?;
    let row = find_host(tx.conn(), host_id).await?;
    tx.commit().await?;
    state.queue.wake();
    Ok((
        StatusCode::ACCEPTED,
        data(CreatedHost {
            host: host_view(row, &ph, state.ssh_port, state.runtime.image().as_deref()),
            task_id,
            ssh_password,
        }),
    ))
}

/// Read a host.
#[utoipa::path(get, path = "/v1/admin/hosts/{id}", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<Host>), (status = 404)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _: Admin<can::HostRead>,
    ph: PublicHost,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<Host>>> {
    let id = parse_id(&id, "host")?;
    let mut db = state.store.acquire().await?;
    Ok(data(host_view(
        find_host(db.conn(), id).await?,
        &ph,
        state.ssh_port,
        state.runtime.image().as_deref(),
    )))
}

/// Queues a lifecycle step for a host after checking that its status allows it.
pub async fn queue_step(
    state: &AppState,
    host_id: Uuid,
    kind: Kind,
    payload: serde_json::Value,
    actor: String,
    source: Option<String>,
    owner: Option<Uuid>,
) -> ApiResult<(StatusCode, axum::Json<Data<TaskQueued>>)> {
    let mut tx = state.store.begin().await?;
    let host = find_host(tx.conn(), host_id).await?;
    if owner.is_some() && host.user_id != owner {
        return Err(ApiError::NotFound("host"));
    }
    let status = HostStatus::parse(&host.status).unwrap_or(HostStatus::Error);
    match (status, kind) {
        // Deleting again is fine: the new task finds whatever is left.
        (HostStatus::Deleting, Kind::Delete) => {}
        (HostStatus::Deleting, _) => {
            return Err(ApiError::Conflict(format!(
                "host {} is being deleted",
                host.short_id
            )));
        }
        (HostStatus::Suspended, Kind::Start | Kind::Rebuild) => {
            return Err(ApiError::Conflict(format!(
                "host {} is suspended: unsuspend it first",
                host.short_id
            )));
        }
        _ => {}
    }
    if kind == Kind::Delete {
        store::hosts::set_status(
            tx.conn(),
            host_id,
            HostStatus::Deleting.as_str(),
            None,
            crate::clock::now(),
        )
        .await?;
    }
    let task_id = tasks::enqueue(tx.conn(), kind, host_id, payload.clone(), &actor).await?;
    let action = match kind {
        Kind::Start => "host.start_requested",
        Kind::Stop => "host.stop_requested",
        Kind::Rebuild => "host.rebuild_requested",
        Kind::Delete => "host.delete_requested",
        Kind::Create => "host.create_requested",
        Kind::BindEgress => "host.bind_requested",
        Kind::Suspend => "host.suspend_requested",
    };
    events::record(
        tx.conn(),
        NewEvent::new(actor, action, "host")
            .target(host_id)
            .host(host_id)
            .user(host.user_id)
            .source(source)
            .details(json!({"short_id": host.short_id, "task_id": task_id, "options": payload})),
    )
    .await?;
    tx.commit().await?;
    state.queue.wake();
    Ok((StatusCode::ACCEPTED, data(TaskQueued { task_id, host_id })))
}

/// Queues a body-less lifecycle step on behalf of an administrator.
async fn admin_step(
    state: &AppState,
    caller: &Admin<can::HostWrite>,
    id: &str,
    kind: Kind,
) -> ApiResult<(StatusCode, axum::Json<Data<TaskQueued>>)> {
    let id = parse_id(id, "host")?;
    queue_step(
        state,
        id,
        kind,
        json!({}),
        caller.actor(),
        caller.source(),
        None,
    )
    .await
}

/// Delete a host: its container, volume and files, through a task.
#[utoipa::path(delete, path = "/v1/admin/hosts/{id}", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 202, body = Data<TaskQueued>), (status = 404)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<Data<TaskQueued>>)> {
    admin_step(&state, &caller, &id, Kind::Delete).await
}

/// Start a host.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/start", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 202, body = Data<TaskQueued>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<Data<TaskQueued>>)> {
    admin_step(&state, &caller, &id, Kind::Start).await
}

/// Stop a host.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/stop", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 202, body = Data<TaskQueued>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn stop(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<Data<TaskQueued>>)> {
    admin_step(&state, &caller, &id, Kind::Stop).await
}

/// Rebuild a host's container; the home volume survives unless `wipe_home` is true.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/rebuild", tag = "hosts", params(("id" = Uuid, Path)),
    request_body = RebuildRequest,
    responses((status = 202, body = Data<TaskQueued>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn rebuild(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RebuildRequest>,
) -> ApiResult<(StatusCode, axum::Json<Data<TaskQueued>>)> {
    let id = parse_id(&id, "host")?;
    let payload = json!({"wipe_home": req.wipe_home.unwrap_or(false)});
    queue_step(
        &state,
        id,
        Kind::Rebuild,
        payload,
        caller.actor(),
        caller.source(),
        None,
    )
    .await
}

/// Replace a host's SSH password with a generated one, answered once.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/rotate-ssh-password", tag = "hosts",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<SshPassword>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn rotate_ssh_password(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<SshPassword>>> {
    let id = parse_id(&id, "host")?;
    let ssh_password = generate_password();
    let hash = password::hash(&ssh_password).await?;
    let mut tx = state.store.begin().await?;
    let host = find_host(tx.conn(), id).await?;
    if host.status == HostStatus::Deleting.as_str() {
        return Err(ApiError::Conflict(format!(
            "host {} is being deleted",
            host.short_id
        )));
    }
    store::hosts::set_ssh_password(tx.conn(), id, &hash, crate::clock::now()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "host.ssh_password_rotated", "host")
            .target(id)
            .host(id)
            .user(host.user_id)
            .source(caller.source())
            .details(json!({"short_id": host.short_id})),
    )
    .await?;
    tx.commit().await?;
    Ok(data(SshPassword { ssh_password }))
}

/// A host's binding to an egress.
#[derive(Debug, Serialize, ToSchema)]
pub struct Binding {
    pub id: Uuid,
    pub host_id: Uuid,
    pub egress_ip_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The task that moves a running host onto the egress, if one was queued.
    pub task_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateBinding {
    pub host_id: Option<String>,
    pub egress_ip_id: Option<String>,
}

fn uuid_field(errs: &mut FieldErrors, field: &str, v: Option<&str>) -> Option<Uuid> {
    match v.map(Uuid::parse_str) {
        None => {
            errs.add(field, "is required");
            None
        }
        Some(Err(_)) => {
            errs.add(field, "must be a UUID");
            None
        }
        Some(Ok(id)) => Some(id),
    }
}

/// A WireGuard egress is one peer with one tunnel address: it carries one host at a time.
fn one_host_per_peer(tunnel_type: &str, bound: &[String]) -> Option<ApiError> {
    (tunnel_type == "wireguard" && !bound.is_empty()).then(|| {
        ApiError::Conflict(format!(
            "this WireGuard egress already carries host {}: a WireGuard peer has one tunnel address, so it serves one host",
            bound.join(", ")
        ))
    })
}

/// Queues the task that moves a live host (running or being made) onto its current binding;
/// a host that is not live attaches when it starts.
pub async fn move_if_live(
    c: store::Conn<'_>,
    host: &HostRow,
    actor: &str,
) -> store::Result<Option<Uuid>> {
    let live = host.status == HostStatus::Running.as_str()
        || host.status == HostStatus::Provisioning.as_str();
    if !live {
        return Ok(None);
    }
    tasks::enqueue(c, Kind::BindEgress, host.id, json!({}), actor)
        .await
        .map(Some)
}

/// Bind a host to an egress (one egress per host). A running host is moved onto it by a task.
#[utoipa::path(post, path = "/v1/admin/bindings", tag = "bindings", request_body = CreateBinding,
    responses((status = 201, body = Data<Binding>), (status = 409), (status = 422)), security(("bearer" = [])))]
pub async fn bind(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    JsonBody(req): JsonBody<CreateBinding>,
) -> ApiResult<(StatusCode, axum::Json<Data<Binding>>)> {
    let mut errs = FieldErrors::new();
    let host_id = uuid_field(&mut errs, "host_id", req.host_id.as_deref());
    let egress_id = uuid_field(&mut errs, "egress_ip_id", req.egress_ip_id.as_deref());
    let mut tx = state.store.begin().await?;
    let host = match host_id {
        Some(id) => store::hosts::get(tx.conn(), id).await?,
        None => None,
    };
    if host_id.is_some() && host.is_none() {
        errs.add("host_id", "no such host");
    }
    let egress = match egress_id {
        Some(eid) => store::egress::get(tx.conn(), eid).await?,
        None => None,
    };
    if egress_id.is_some() && egress.is_none() {
        errs.add("egress_ip_id", "no such egress IP");
    }
    let (Some(host), Some(egress_ip_id)) = (host.filter(|_| errs.is_empty()), egress_id) else {
        return Err(ApiError::invalid(errs));
    };
    if let Some(current) = host.egress_ip_id {
        return Err(ApiError::Conflict(format!(
            "host {} is already bound to egress IP {current}: delete that binding first",
            host.short_id
        )));
    }
    if host.status == HostStatus::Deleting.as_str() {
        return Err(ApiError::Conflict(format!(
            "host {} is being deleted",
            host.short_id
        )));
    }
    if let Some(e) = &egress {
        let bound = store::egress::bound_hosts(tx.conn(), e.id).await?;
        if let Some(err) = one_host_per_peer(&e.tunnel_type, &bound) {
            return Err(err);
        }
    }
    let row = BindingRow {
        id: Uuid::now_v7(),
        host_id: host.id,
        egress_ip_id,
        created_at: crate::clock::now(),
    };
    store::hosts::insert_binding(tx.conn(), &row)
        .await
        .map_err(|e| match e {
            store::StoreError::Conflict(_) => {
                ApiError::Conflict(format!("host {} is already bound", host.short_id))
            }
            other => other.into(),
        })?;
    let task_id = move_if_live(tx.conn(), &host, &caller.actor()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "binding.created", "binding")
            .target(row.id)
            .host(host.id)
            .user(host.user_id)
            .source(caller.source())
            .details(json!({"short_id": host.short_id, "egress_ip_id": egress_ip_id, "task_id": task_id})),
    )
    .await?;
    tx.commit().await?;
    if task_id.is_some() {
        state.queue.wake();
    }
    Ok((
        StatusCode::CREATED,
        data(Binding {
            id: row.id,
            host_id: row.host_id,
            egress_ip_id,
            created_at: row.created_at,
            task_id,
        }),
    ))
}

/// Remove a binding. A running host loses its egress (and so all outside traffic) through a
/// task.
#[utoipa::path(delete, path = "/v1/admin/bindings/{id}", tag = "bindings", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 202, body = Data<TaskQueued>), (status = 404)), security(("bearer" = [])))]
pub async fn unbind(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id, "binding")?;
    let mut tx = state.store.begin().await?;
    let Some(binding) = store::hosts::get_binding(tx.conn(), id).await? else {
        return Err(ApiError::NotFound("binding"));
    };
    let host = find_host(tx.conn(), binding.host_id).await?;
    store::hosts::delete_binding(tx.conn(), id).await?;
    let task_id = move_if_live(tx.conn(), &host, &caller.actor()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "binding.deleted", "binding")
            .target(id)
            .host(host.id)
            .user(host.user_id)
            .source(caller.source())
            .details(json!({"short_id": host.short_id, "egress_ip_id": binding.egress_ip_id, "task_id": task_id})),
    )
    .await?;
    tx.commit().await?;
    Ok(match task_id {
        Some(task_id) => {
            state.queue.wake();
            (
                StatusCode::ACCEPTED,
                data(TaskQueued {
                    task_id,
                    host_id: host.id,
                }),
            )
                .into_response()
        }
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Stop a host and refuse starts and logins until it is unsuspended.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/suspend", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 202, body = Data<TaskQueued>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn suspend(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<Data<TaskQueued>>)> {
    admin_step(&state, &caller, &id, Kind::Suspend).await
}

/// Lift a suspension: the host becomes `stopped`, and can be started again.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/unsuspend", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<Host>), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn unsuspend(
    State(state): State<AppState>,
    caller: Admin<can::HostWrite>,
    ph: PublicHost,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<Host>>> {
    let id = parse_id(&id, "host")?;
    let mut tx = state.store.begin().await?;
    let host = find_host(tx.conn(), id).await?;
    if host.status != HostStatus::Suspended.as_str() {
        return Err(ApiError::Conflict(format!(
            "host {} is {}, not suspended",
            host.short_id, host.status
        )));
    }
    store::hosts::set_status(
        tx.conn(),
        id,
        HostStatus::Stopped.as_str(),
        None,
        crate::clock::now(),
    )
    .await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "host.unsuspended", "host")
            .target(id)
            .host(id)
            .user(host.user_id)
            .source(caller.source())
            .details(json!({"short_id": host.short_id})),
    )
    .await?;
    let row = find_host(tx.conn(), id).await?;
    tx.commit().await?;
    Ok(data(host_view(
        row,
        &ph,
        state.ssh_port,
        state.runtime.image().as_deref(),
    )))
}

/// The last lines a host's container printed.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostLogs {
    pub lines: Vec<String>,
}

/// Largest `tail` of the logs route.
pub const LOG_TAIL_MAX: u32 = 1000;

/// `?tail` of the logs route, validated (default 100).
pub struct LogTail(u32);

impl<S: Send + Sync> FromRequestParts<S> for LogTail {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match query_map(parts).get("tail") {
            None => Ok(LogTail(100)),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=LOG_TAIL_MAX).contains(&n) => Ok(LogTail(n)),
                _ => Err(ApiError::field(
                    "tail",
                    format!("must be a whole number from 1 to {LOG_TAIL_MAX}"),
                )),
            },
        }
    }
}

/// Read the last `tail` lines (default 100, at most 1000) of a host's container output.
#[utoipa::path(get, path = "/v1/admin/hosts/{id}/logs", tag = "hosts",
    params(("id" = Uuid, Path), ("tail" = Option<u32>, Query)),
    responses((status = 200, body = Data<HostLogs>), (status = 404), (status = 409), (status = 422)),
    security(("bearer" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    _: Admin<can::HostRead>,
    Path(id): Path<String>,
    LogTail(tail): LogTail,
) -> ApiResult<axum::Json<Data<HostLogs>>> {
    let id = parse_id(&id, "host")?;
    let spec = crate::tasks::host_spec(&state.store, id)
        .await?
        .ok_or(ApiError::NotFound("host"))?;
    let lines = state.runtime.logs(&spec, tail).await.map_err(|e| {
        ApiError::Conflict(format!("no logs for host {}: {}", spec.short_id, e.message))
    })?;
    Ok(data(HostLogs { lines }))
}
