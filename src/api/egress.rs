//! `/v1/admin/egress-ips`: the egresses hosts can be bound to. Secrets are accepted on write
//! and read back masked.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::types::Json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::{ApiError, ApiResult};
use super::extract::{Admin, JsonBody, Paging, can, parse_id};
use crate::egress::MASK;
use crate::egress::settings::{self, EgressInput, EgressSettings};
use crate::events::{self, NewEvent};
use crate::store::{self, egress::EgressRow};

/// An egress, secrets masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Egress {
    pub id: Uuid,
    pub label: String,
    /// The declared exit IP address.
    pub ip_address: String,
    pub provider: String,
    /// `wireguard` or `proxy`.
    pub tunnel_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wg_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wg_public_key: Option<String>,
    /// Masked when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wg_preshared_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wg_allowed_ips: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wg_dns_server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wg_peer_address: Option<String>,
    /// Always masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wg_private_key: Option<String>,
    /// The client's public key, to register with the WireGuard provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wg_client_public_key: Option<String>,
    /// The sing-box outbound, passwords and uuids masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub proxy_config: Option<Value>,
    /// DNS server a proxy egress resolves through (over TCP, through the proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_dns_server: Option<String>,
    /// The outcome of the last egress test, if any.
    #[schema(value_type = Option<Object>)]
    pub last_test: Option<Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<EgressRow> for Egress {
    fn from(e: EgressRow) -> Self {
        let mut out = Egress {
            id: e.id,
            label: e.label,
            ip_address: e.ip_address,
            provider: e.provider,
            tunnel_type: e.tunnel_type,
            wg_endpoint: None,
            wg_public_key: None,
            wg_preshared_key: None,
            wg_allowed_ips: None,
            wg_dns_server: None,
            wg_peer_address: None,
            wg_private_key: None,
            wg_client_public_key: None,
            proxy_config: None,
            proxy_dns_server: None,
            last_test: e.last_test.map(|j| j.0),
            created_at: e.created_at,
            updated_at: e.updated_at,
        };
        match e.settings.0 {
            EgressSettings::Wireguard(w) => {
                out.wg_endpoint = Some(w.endpoint);
                out.wg_public_key = Some(w.public_key);
                out.wg_preshared_key = w.preshared_key.map(|_| MASK.to_string());
                out.wg_allowed_ips = Some(w.allowed_ips);
                out.wg_dns_server = Some(w.dns_server);
                out.wg_peer_address = Some(w.peer_address);
                out.wg_private_key = Some(MASK.to_string());
                out.wg_client_public_key = Some(w.client_public_key);
            }
            EgressSettings::Proxy {
                proxy_config,
                dns_server,
            } => {
                out.proxy_config = Some(proxy_config.masked());
                out.proxy_dns_server = Some(dns_server);
            }
        }
        out
    }
}

/// Non-secret details of an egress for its events.
fn event_details(e: &EgressRow) -> Value {
    json!({"label": e.label, "ip_address": e.ip_address, "tunnel_type": e.tunnel_type})
}

async fn find(c: store::Conn<'_>, id: Uuid) -> ApiResult<EgressRow> {
    store::egress::get(c, id)
        .await?
        .ok_or(ApiError::NotFound("egress IP"))
}

/// List egresses.
#[utoipa::path(get, path = "/v1/admin/egress-ips", tag = "egress",
    params(("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<Egress>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: Admin<can::EgressRead>,
    paging: Paging,
) -> ApiResult<axum::Json<Page<Egress>>> {
    let mut db = state.store.acquire().await?;
    let (rows, total) = store::egress::list(db.conn(), paging.req).await?;
    Ok(page(
        &paging,
        rows.into_iter().map(Egress::from).collect(),
        total,
    ))
}

/// Add an egress. For WireGuard without `wg_private_key`, Sluice generates the client key pair
/// and answers `wg_client_public_key` to register with the provider.
#[utoipa::path(post, path = "/v1/admin/egress-ips", tag = "egress", request_body = EgressInput,
    responses((status = 201, body = Data<Egress>), (status = 422)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Admin<can::EgressWrite>,
    JsonBody(input): JsonBody<EgressInput>,
) -> ApiResult<(StatusCode, axum::Json<Data<Egress>>)> {
    let valid = settings::validate(input).map_err(ApiError::invalid)?;
    let now = crate::clock::now();
    let row = EgressRow {
        id: Uuid::now_v7(),
        label: valid.label,
        ip_address: valid.ip_address,
        provider: valid.provider,
        tunnel_type: valid.settings.tunnel_type().into(),
        settings: Json(valid.settings),
        last_test: None,
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.store.begin().await?;
    store::egress::insert(tx.conn(), &row).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "egress.created", "egress_ip")
            .target(row.id)
            .source(caller.source())
            .details(event_details(&row)),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, data(row.into())))
}

/// Read an egress.
#[utoipa::path(get, path = "/v1/admin/egress-ips/{id}", tag = "egress", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<Egress>), (status = 404)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _: Admin<can::EgressRead>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<Egress>>> {
    let id = parse_id(&id, "egress IP")?;
    let mut db = state.store.acquire().await?;
    Ok(data(find(db.conn(), id).await?.into()))
}

/// Change an egress: fields present replace the stored ones; a secret sent back masked keeps
/// its value. Running hosts bound to it are moved onto the new settings by a task each.
#[utoipa::path(put, path = "/v1/admin/egress-ips/{id}", tag = "egress", params(("id" = Uuid, Path)),
    request_body = EgressInput,
    responses((status = 200, body = Data<Egress>), (status = 404), (status = 422)), security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Admin<can::EgressWrite>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<EgressInput>,
) -> ApiResult<axum::Json<Data<Egress>>> {
    let id = parse_id(&id, "egress IP")?;
    let mut tx = state.store.begin().await?;
    let old = find(tx.conn(), id).await?;
    let base = settings::to_input(&old.label, &old.ip_address, &old.provider, &old.settings.0);
    let merged = settings::overlay(base, input).map_err(ApiError::invalid)?;
    let valid = settings::validate(merged).map_err(ApiError::invalid)?;
    let row = EgressRow {
        label: valid.label,
        ip_address: valid.ip_address,
        provider: valid.provider,
        tunnel_type: valid.settings.tunnel_type().into(),
        settings: Json(valid.settings),
        updated_at: crate::clock::now(),
        ..old
    };
    store::egress::update(tx.conn(), &row).await?;
    let mut queued = 0;
    for host_id in store::egress::bound_host_ids(tx.conn(), id).await? {
        if let Some(host) = store::hosts::get(tx.conn(), host_id).await?
            && crate::ops::bindings::move_if_live(tx.conn(), &host, &caller.actor())
                .await?
                .is_some()
        {
            queued += 1;
        }
    }
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "egress.updated", "egress_ip")
            .target(row.id)
            .source(caller.source())
            .details(event_details(&row)),
    )
    .await?;
    tx.commit().await?;
    if queued > 0 {
        state.queue.wake();
    }
    Ok(data(row.into()))
}

/// Delete an egress. Refused (409, naming them) while hosts are bound to it.
#[utoipa::path(delete, path = "/v1/admin/egress-ips/{id}", tag = "egress", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Admin<can::EgressWrite>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "egress IP")?;
    let mut tx = state.store.begin().await?;
    let row = find(tx.conn(), id).await?;
    let bound = store::egress::bound_hosts(tx.conn(), id).await?;
    if !bound.is_empty() {
        return Err(ApiError::Conflict(format!(
            "egress IP is bound to hosts {}: unbind them first",
            bound.join(", ")
        )));
    }
    store::egress::delete(tx.conn(), id).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "egress.deleted", "egress_ip")
            .target(id)
            .source(caller.source())
            .details(event_details(&row)),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs the three checks through a path and answers the report.
async fn probe_through(
    state: &AppState,
    ns: crate::netns::NetNs,
    settings: &EgressSettings,
    expected: &str,
) -> ApiResult<crate::probe::Report> {
    let path = crate::probe::Path::through(ns, settings);
    Ok(crate::probe::run(&state.probe, &path, &crate::probe::Path::direct(), expected).await)
}

/// Test an egress: connectivity, exit IP (against the declared address) and DNS leak, through
/// the egress's own data plane: the attached host's session when one is bound and running,
/// otherwise a throwaway namespace. The result is kept as the egress's `last_test`.
#[utoipa::path(post, path = "/v1/admin/egress-ips/{id}/test", tag = "egress", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<crate::probe::Report>), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<AppState>,
    caller: Admin<can::EgressTest>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<crate::probe::Report>>> {
    let id = parse_id(&id, "egress IP")?;
    let (row, bound) = {
        let mut db = state.store.acquire().await?;
        let row = find(db.conn(), id).await?;
        let bound = store::egress::bound_host_ids(db.conn(), id).await?;
        (row, bound)
    };
    let engine = state
        .runtime
        .engine()
        .ok_or_else(|| ApiError::Conflict("this Sluice runs no egress data plane".into()))?;
    let _turn = engine.test_turn(id).await;
    let mut live = None;
    for host_id in bound {
        if let Some(spec) = crate::tasks::host_spec(&state.store, host_id).await?
            && let Some(ns) = state.runtime.egress_netns(&spec).await
        {
            live = Some(ns);
            break;
        }
    }
    let (ns, _throwaway) = match live {
        Some(ns) => (ns, None),
        None => {
            let t = engine
                .throwaway(&row.settings.0)
                .await
                .map_err(|e| ApiError::Conflict(format!("cannot bring the egress up: {e}")))?;
            (t.ns.clone(), Some(t))
        }
    };
    let report = probe_through(&state, ns, &row.settings.0, &row.ip_address).await?;
    crate::probe::record(
        &state.store,
        id,
        &row.label,
        &caller.actor(),
        caller.source(),
        &report,
    )
    .await?;
    Ok(data(report))
}

/// Run the egress checks from inside a host's container, through its real path.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/egress-check", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<crate::probe::Report>), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub async fn host_check(
    State(state): State<AppState>,
    caller: Admin<can::EgressTest>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<crate::probe::Report>>> {
    let id = parse_id(&id, "host")?;
    let spec = crate::tasks::host_spec(&state.store, id)
        .await?
        .ok_or(ApiError::NotFound("host"))?;
    let egress = spec
        .egress
        .clone()
        .ok_or_else(|| ApiError::Conflict(format!("host {} has no egress bound", spec.short_id)))?;
    let ns = state.runtime.egress_netns(&spec).await.ok_or_else(|| {
        ApiError::Conflict(format!(
            "host {} has no egress attached: is it running?",
            spec.short_id
        ))
    })?;
    let report = probe_through(&state, ns, &egress.settings, &egress.ip_address).await?;
    let mut db = state.store.acquire().await?;
    events::record(
        db.conn(),
        NewEvent::new(caller.actor(), "host.egress_checked", "host")
            .target(id)
            .host(id)
            .source(caller.source())
            .details(json!({"short_id": spec.short_id, "status": report.status,
                "exit_ip": report.checks.exit_ip.observed})),
    )
    .await?;
    Ok(data(report))
}
