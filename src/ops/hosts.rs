//! Host operations: list, read, create, the lifecycle steps (each a queued task), unsuspend,
//! SSH password rotation and logs. Who may do what: administrators and tokens with `host:*`
//! abilities on every host; a user reads their own hosts and may start or rebuild them, and
//! another user's host does not exist for them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Caller, Core, OpError, OpResult, Public, optional_uuid, uuid_field};
use crate::auth::{Ability, password};
use crate::events::{self, NewEvent};
use crate::hosts::{self as rules, HostStatus};
use crate::store::hosts::{BindingRow, HostRow, NewHost};
use crate::store::{self, Conn, PageRequest};
use crate::tasks::{self, Kind};
use crate::users::generate_password;
use crate::validation::FieldErrors;

/// How to reach a host.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Access {
    /// One line for the user: fetches the entry script and opens a shell.
    pub entry_command: String,
    /// Plain SSH through the proxy.
    pub ssh_command: String,
}

/// A host.
#[derive(Debug, Clone, Serialize, ToSchema)]
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
    /// Whether the host runs the desktop image: a desktop in the browser besides SSH (after
    /// a change, from its next rebuild).
    pub desktop: bool,
    /// The uid (and gid) of the owner's account inside the container, unique on this machine
    /// (from `SLUICE_HOST_UIDS`): processes of this host show under it on the machine.
    pub account_uid: Option<i64>,
    pub access: Access,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Host {
    /// The host as callers see it, with the access commands for `public`.
    pub fn view(core: &Core, h: HostRow, public: &Public) -> Host {
        let (entry_command, ssh_command) = rules::access_commands(
            &public.base_url,
            &public.ssh_host,
            core.ssh_port,
            &h.short_id,
        );
        let current = core
            .runtime
            .image(crate::runtime::image::Kind::of(h.desktop));
        let image_outdated =
            matches!((h.image.as_deref(), current.as_deref()), (Some(a), Some(b)) if a != b);
        Host {
            id: h.id,
            short_id: h.short_id,
            user_id: h.user_id,
            username: h.username,
            status: h.status,
            status_reason: h.status_reason,
            memory_mb: h.memory_mb,
            cpus: h.cpus,
            pids_limit: h.pids_limit,
            egress_ip_id: h.egress_ip_id,
            binding_id: h.binding_id,
            image: h.image,
            image_outdated,
            desktop: h.desktop,
            account_uid: h.account_uid,
            access: Access {
                entry_command,
                ssh_command,
            },
            created_at: h.created_at,
            updated_at: h.updated_at,
        }
    }
}

/// A new host for a user.
#[derive(Debug, Default, Deserialize, ToSchema, JsonSchema)]
pub struct CreateHost {
    /// The owner's user id.
    pub user_id: Option<String>,
    /// The egress to bind it to at once (optional).
    pub egress_ip_id: Option<String>,
    /// Memory limit in MiB, 64-65536 (default 1024).
    pub memory_mb: Option<i64>,
    /// CPU limit, 0.1-64 (default 1).
    pub cpus: Option<f64>,
    /// Process limit, 32-65536 (default 512; 4096 for a desktop, whose browser runs many
    /// threads).
    pub pids_limit: Option<i64>,
    /// Run the desktop image: a desktop (TigerVNC, a window manager, a terminal and Firefox
    /// ESR) opened in the browser, besides SSH. Default false.
    pub desktop: Option<bool>,
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

/// Options of a rebuild.
#[derive(Debug, Deserialize, ToSchema, JsonSchema, Default)]
pub struct RebuildRequest {
    /// Start with an empty home volume.
    pub wipe_home: Option<bool>,
    /// Rebuild into (true) or out of (false) desktop mode; the home volume is kept unless
    /// `wipe_home`. Omitted: the host keeps its mode.
    pub desktop: Option<bool>,
}

/// A host's new SSH password.
#[derive(Debug, Serialize, ToSchema)]
pub struct SshPassword {
    /// The host's new SSH password, shown only in this answer.
    pub ssh_password: String,
}

/// The last lines a host's container printed.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostLogs {
    pub lines: Vec<String>,
}

/// Largest `tail` of a host's logs.
pub const LOG_TAIL_MAX: u32 = 1000;

/// Reads a host the caller may act on: an operator holding `ability`, or the owner. Another
/// user's host is "not found", so ids do not leak.
async fn visible(c: Conn<'_>, caller: &Caller, id: Uuid, ability: Ability) -> OpResult<HostRow> {
    let host = store::hosts::get(c, id)
        .await?
        .ok_or(OpError::NotFound("host"))?;
    match caller.principal.user_id() {
        Some(me) if host.user_id == Some(me) => Ok(host),
        Some(_) => Err(OpError::NotFound("host")),
        None => caller.require(ability).map(|()| host),
    }
}

/// Whether the caller may queue `step` on `host`: `host:write`, or the owner starting or
/// rebuilding their own host.
fn may_step(caller: &Caller, host: &HostRow, step: Kind) -> OpResult<()> {
    match caller.principal.user_id() {
        Some(me) if host.user_id == Some(me) => match step {
            Kind::Start | Kind::Rebuild => Ok(()),
            _ => Err(OpError::Forbidden(format!(
                "only an administrator may {} a host",
                step.as_str()
            ))),
        },
        Some(_) => Err(OpError::NotFound("host")),
        None => caller.require(Ability::HostWrite),
    }
}

fn conflict(host: &HostRow, why: rules::StatusConflict) -> OpError {
    OpError::Conflict(format!("host {} {why}", host.short_id))
}

/// A host's row, for the caller who may see it.
pub async fn get(core: &Core, caller: &Caller, id: Uuid) -> OpResult<HostRow> {
    let mut db = core.store.acquire().await?;
    visible(db.conn(), caller, id, Ability::HostRead).await
}

/// A host named by its id or its short id (`k3x9m2qa`), for the caller who may see it.
pub async fn lookup(core: &Core, caller: &Caller, key: &str) -> OpResult<HostRow> {
    let key = key.trim();
    if rules::is_short_id(key) {
        let mut db = core.store.acquire().await?;
        let host = store::hosts::get_by_short_id(db.conn(), key)
            .await?
            .ok_or(OpError::NotFound("host"))?;
        return visible(db.conn(), caller, host.id, Ability::HostRead).await;
    }
    get(core, caller, super::parse_id(key, "host")?).await
}

/// The host a caller may open a terminal into: its owner, or an operator with `host:write`;
/// it must be running.
pub async fn terminal(core: &Core, caller: &Caller, id: Uuid) -> OpResult<HostRow> {
    let mut db = core.store.acquire().await?;
    let host = visible(db.conn(), caller, id, Ability::HostWrite).await?;
    if host.status != HostStatus::Running {
        return Err(OpError::Conflict(format!(
            "host {} is {}: start it first",
            host.short_id, host.status
        )));
    }
    Ok(host)
}

/// Hosts, oldest first: a user's own; for `host:read`, all or those of `user_id`.
pub async fn list(
    core: &Core,
    caller: &Caller,
    filter: HostFilter,
    page: PageRequest,
) -> OpResult<(Vec<HostRow>, i64)> {
    let owner = match caller.principal.user_id() {
        Some(me) => Some(me),
        None => {
            caller.require(Ability::HostRead)?;
            filter.user_id
        }
    };
    if let Some(s) = &filter.status
        && HostStatus::parse(s).is_none()
    {
        return Err(OpError::field(
            "status",
            format!(
                "must be one of {}",
                HostStatus::ALL.map(|s| s.as_str()).join(", ")
            ),
        ));
    }
    let mut db = core.store.acquire().await?;
    Ok(store::hosts::list(db.conn(), owner, filter.status.as_deref(), page).await?)
}

/// Which hosts a list shows: one owner's (ignored for a user, who sees their own), in one
/// status.
#[derive(Debug, Clone, Default)]
pub struct HostFilter {
    pub user_id: Option<Uuid>,
    pub status: Option<String>,
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

/// The lowest uid of `range` no host holds, for a new host's account; taken inside the
/// transaction that writes the host, under the store's lock on account uids.
pub(crate) async fn free_account_uid(
    tx: &mut store::Tx,
    range: rules::account::UidRange,
) -> OpResult<u32> {
    store::hosts::lock_account_uids(tx.conn()).await?;
    let taken = store::hosts::account_uids_in(tx.conn(), range).await?;
    range.first_free(&taken).ok_or_else(|| full(range))
}

/// The refusal when every uid of the range is taken.
fn full(range: rules::account::UidRange) -> OpError {
    OpError::Unavailable(format!(
        "every account uid of SLUICE_HOST_UIDS ({range}, {} hosts) is taken",
        range.len()
    ))
}

/// Gives every host made before uids were per host an account uid of its own (at startup);
/// its home is re-owned to that uid by the container's entrypoint at the host's next start.
/// Answers how many hosts were given one.
pub async fn assign_account_uids(
    store: &store::Store,
    range: rules::account::UidRange,
) -> OpResult<usize> {
    let mut tx = store.begin().await?;
    let hosts = store::hosts::without_account_uid(tx.conn()).await?;
    if hosts.is_empty() {
        return Ok(0);
    }
    store::hosts::lock_account_uids(tx.conn()).await?;
    let mut taken = store::hosts::account_uids_in(tx.conn(), range).await?;
    for &id in &hosts {
        let uid = range.first_free(&taken).ok_or_else(|| full(range))?;
        let at = taken.partition_point(|&t| t < uid);
        taken.insert(at, uid);
        store::hosts::set_account_uid(tx.conn(), id, Some(uid)).await?;
        events::record(
            tx.conn(),
            NewEvent::new(events::SYSTEM, "host.account_uid_assigned", "host")
                .target(id)
                .host(id)
                .details(json!({"account_uid": uid})),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(hosts.len())
}

/// Creates a host for a user, bound to an egress if one is named, and queues its creation.
/// Answers with the SSH password, which is not kept in clear.
pub async fn create(core: &Core, caller: &Caller, req: CreateHost) -> OpResult<CreatedHostRow> {
    caller.require(Ability::HostWrite)?;
    let mut errs = FieldErrors::new();
    let user_id = uuid_field(&mut errs, "user_id", req.user_id.as_deref());
    let egress_ip_id = optional_uuid(&mut errs, "egress_ip_id", req.egress_ip_id.as_deref());
    let memory_mb = bounded_i64(
        &mut errs,
        "memory_mb",
        req.memory_mb,
        rules::MEMORY_MB_DEFAULT,
        rules::MEMORY_MB_RANGE,
    );
    let desktop = req.desktop.unwrap_or(false);
    let pids_limit = bounded_i64(
        &mut errs,
        "pids_limit",
        req.pids_limit,
        if desktop {
            rules::DESKTOP_PIDS_DEFAULT
        } else {
            rules::PIDS_DEFAULT
        },
        rules::PIDS_RANGE,
    );
    let (lo, hi) = rules::CPUS_RANGE;
    let cpus = match req.cpus {
        None => rules::CPUS_DEFAULT,
        Some(c) if c.is_finite() && (lo..=hi).contains(&c) => c,
        Some(_) => {
            errs.add("cpus", format!("must be from {lo} to {hi}"));
            rules::CPUS_DEFAULT
        }
    };

    let mut db = core.store.acquire().await?;
    if let Some(uid) = user_id
        && store::users::get(db.conn(), uid).await?.is_none()
    {
        errs.add("user_id", "no such user");
    }
    if let Some(eid) = egress_ip_id {
        match store::egress::get(db.conn(), core.store.keys(), eid).await? {
            None => errs.add("egress_ip_id", "no such egress"),
            Some(e) => {
                let bound = store::egress::bound_hosts(db.conn(), eid).await?;
                super::bindings::one_host_per_peer(&e.tunnel_type, &bound)?;
            }
        }
    }
    drop(db);
    let Some(user_id) = user_id.filter(|_| errs.is_empty()) else {
        return Err(OpError::Invalid(errs));
    };
    // Hash before taking the write transaction; foreign keys still guard the references.
    let ssh_password = generate_password();
    let ssh_password_hash = password::hash(&ssh_password).await?;
    let mut tx = core.store.begin().await?;

    let now = crate::clock::now();
    let host_id = Uuid::now_v7();
    let mut new = NewHost {
        id: host_id,
        short_id: String::new(),
        user_id,
        status: HostStatus::Pending,
        memory_mb,
        cpus,
        pids_limit,
        ssh_password_hash,
        desktop,
        account_uid: free_account_uid(&mut tx, core.host_uids).await?,
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
        .await
        .map_err(|e| super::bindings::binding_conflict(e, &new.short_id))?;
    }
    let task_id =
        tasks::enqueue(tx.conn(), Kind::Create, host_id, json!({}), &caller.actor()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "host.created", "host")
            .target(host_id)
            .host(host_id)
            .user(Some(user_id))
            .source(caller.source.clone())
            .details(json!({
                "short_id": new.short_id, "memory_mb": memory_mb, "cpus": cpus,
                "pids_limit": pids_limit, "egress_ip_id": egress_ip_id, "task_id": task_id,
                "desktop": desktop,
            })),
    )
    .await?;
    let row = store::hosts::get(tx.conn(), host_id)
        .await?
        .ok_or(OpError::NotFound("host"))?;
    tx.commit().await?;
    core.queue.wake();
    Ok(CreatedHostRow {
        host: row,
        task_id,
        ssh_password,
    })
}

/// A created host's row, its creation task and its one-time SSH password.
pub struct CreatedHostRow {
    pub host: HostRow,
    pub task_id: Uuid,
    pub ssh_password: String,
}

/// Queues a lifecycle step for a host after checking who asks and that its status allows it.
pub async fn step(
    core: &Core,
    caller: &Caller,
    host_id: Uuid,
    kind: Kind,
    payload: Value,
) -> OpResult<TaskQueued> {
    let mut tx = core.store.begin().await?;
    let host = visible(tx.conn(), caller, host_id, Ability::HostWrite).await?;
    may_step(caller, &host, kind)?;
    host.status
        .may_queue(kind)
        .map_err(|why| conflict(&host, why))?;
    if let Some(now_status) = HostStatus::on_request(kind) {
        store::hosts::set_status(tx.conn(), host_id, now_status, None, crate::clock::now()).await?;
    }
    // A rebuild may move the host into or out of desktop mode; the row says what the rebuild
    // makes.
    if kind == Kind::Rebuild
        && let Some(desktop) = payload.get("desktop").and_then(Value::as_bool)
        && desktop != host.desktop
    {
        if caller.principal.user_id().is_some() {
            return Err(OpError::Forbidden(
                "only an administrator may move a host into or out of desktop mode".into(),
            ));
        }
        store::hosts::set_desktop(tx.conn(), host_id, desktop).await?;
    }
    let task_id =
        tasks::enqueue(tx.conn(), kind, host_id, payload.clone(), &caller.actor()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), kind.requested_action(), "host")
            .target(host_id)
            .host(host_id)
            .user(host.user_id)
            .source(caller.source.clone())
            .details(json!({"short_id": host.short_id, "task_id": task_id, "options": payload})),
    )
    .await?;
    tx.commit().await?;
    core.queue.wake();
    Ok(TaskQueued { task_id, host_id })
}

/// Rebuilds a host's container; the home volume survives unless `wipe_home`.
pub async fn rebuild(
    core: &Core,
    caller: &Caller,
    host_id: Uuid,
    req: RebuildRequest,
) -> OpResult<TaskQueued> {
    let mut payload = json!({"wipe_home": req.wipe_home.unwrap_or(false)});
    if let Some(desktop) = req.desktop {
        payload["desktop"] = json!(desktop);
    }
    step(core, caller, host_id, Kind::Rebuild, payload).await
}

/// Starts a stopped host for its owner's entry (short link, bootstrap), or finds the task
/// already bringing it up. `None`: the host's status does not start on entry.
pub async fn start_on_entry(
    core: &Core,
    caller: &Caller,
    host: &HostRow,
) -> OpResult<Option<Uuid>> {
    let mut db = core.store.acquire().await?;
    if let Some(t) = store::tasks::open_for_host(db.conn(), host.id).await? {
        return Ok(Some(t.id));
    }
    drop(db);
    if !host.status.starts_on_entry() {
        return Ok(None);
    }
    let queued = step(core, caller, host.id, Kind::Start, json!({})).await?;
    Ok(Some(queued.task_id))
}

/// Replaces a host's SSH password with a generated one, answered once.
pub async fn rotate_ssh_password(core: &Core, caller: &Caller, id: Uuid) -> OpResult<SshPassword> {
    caller.require(Ability::HostWrite)?;
    let ssh_password = generate_password();
    let hash = password::hash(&ssh_password).await?;
    let mut tx = core.store.begin().await?;
    let host = visible(tx.conn(), caller, id, Ability::HostWrite).await?;
    host.status
        .may_change()
        .map_err(|why| conflict(&host, why))?;
    store::hosts::set_ssh_password(tx.conn(), id, &hash, crate::clock::now()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "host.ssh_password_rotated", "host")
            .target(id)
            .host(id)
            .user(host.user_id)
            .source(caller.source.clone())
            .details(json!({"short_id": host.short_id})),
    )
    .await?;
    tx.commit().await?;
    Ok(SshPassword { ssh_password })
}

/// Lifts a suspension: the host becomes `stopped` and can be started again.
pub async fn unsuspend(core: &Core, caller: &Caller, id: Uuid) -> OpResult<HostRow> {
    caller.require(Ability::HostWrite)?;
    let mut tx = core.store.begin().await?;
    let host = visible(tx.conn(), caller, id, Ability::HostWrite).await?;
    let next = host
        .status
        .unsuspended()
        .map_err(|why| conflict(&host, why))?;
    store::hosts::set_status(tx.conn(), id, next, None, crate::clock::now()).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "host.unsuspended", "host")
            .target(id)
            .host(id)
            .user(host.user_id)
            .source(caller.source.clone())
            .details(json!({"short_id": host.short_id})),
    )
    .await?;
    let row = store::hosts::get(tx.conn(), id)
        .await?
        .ok_or(OpError::NotFound("host"))?;
    tx.commit().await?;
    Ok(row)
}

/// The last `tail` lines (1 to [`LOG_TAIL_MAX`]) of a host's container output.
pub async fn logs(core: &Core, caller: &Caller, id: Uuid, tail: u32) -> OpResult<HostLogs> {
    caller.require(Ability::HostRead)?;
    if !(1..=LOG_TAIL_MAX).contains(&tail) {
        return Err(OpError::field(
            "tail",
            format!("must be a whole number from 1 to {LOG_TAIL_MAX}"),
        ));
    }
    let spec = crate::tasks::host_spec(&core.store, id)
        .await?
        .ok_or(OpError::NotFound("host"))?;
    let lines = core.runtime.logs(&spec, tail).await.map_err(|e| {
        OpError::Conflict(format!(
            "no logs for host {}: {}",
            spec.short_id,
            e.summary()
        ))
    })?;
    Ok(HostLogs { lines })
}
