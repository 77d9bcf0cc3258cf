//! Egress operations: list, read, create, change, delete, test an egress, and check a host's
//! egress from inside it. Secrets are accepted on write and read back masked; a change reaches
//! the live hosts bound to the egress by a task each.

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::types::Json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Caller, Core, OpError, OpResult};
use crate::auth::Ability;
use crate::egress::MASK;
use crate::egress::settings::{self, EgressInput, EgressSettings};
use crate::events::{self, NewEvent};
use crate::keys::Keyring;
use crate::probe::Report;
use crate::store::{self, PageRequest, egress::EgressRow};

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
    /// Internal ranges a proxy egress still takes hosts to (every other internal address is
    /// refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_allowed_ranges: Option<Vec<String>>,
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
            proxy_allowed_ranges: None,
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
                allowed_ranges,
            } => {
                out.proxy_config = Some(proxy_config.masked());
                out.proxy_dns_server = Some(dns_server);
                out.proxy_allowed_ranges =
                    Some(allowed_ranges.iter().map(ToString::to_string).collect());
            }
        }
        out
    }
}

/// Non-secret details of an egress for its events.
fn event_details(e: &EgressRow) -> Value {
    json!({"label": e.label, "ip_address": e.ip_address, "tunnel_type": e.tunnel_type})
}

async fn find(c: store::Conn<'_>, keys: &Keyring, id: Uuid) -> OpResult<EgressRow> {
    store::egress::get(c, keys, id)
        .await?
        .ok_or(OpError::NotFound("egress"))
}

/// An egress named by its id or its label, as an operator types it. Labels need not be
/// unique: a label several egresses share names none of them, and the refusal lists their ids.
pub async fn lookup(core: &Core, caller: &Caller, key: &str) -> OpResult<Uuid> {
    may_name(caller)?;
    let key = key.trim();
    let mut db = core.store.acquire().await?;
    if let Ok(id) = Uuid::parse_str(key) {
        return Ok(find(db.conn(), core.store.keys(), id).await?.id);
    }
    let ids: Vec<Uuid> = store::egress::summaries(db.conn())
        .await?
        .into_iter()
        .filter(|(_, label, _, _)| label == key)
        .map(|(id, ..)| id)
        .collect();
    match ids.as_slice() {
        [] => Err(OpError::NotFound("egress")),
        [id] => Ok(*id),
        many => Err(OpError::Conflict(format!(
            "{} egresses are labelled `{key}`: name one by its id ({})",
            many.len(),
            many.iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Whoever may read, test or change egresses may name one (a token made only to run tests
/// names the egress it tests).
fn may_name(caller: &Caller) -> OpResult<()> {
    let abilities = [
        Ability::EgressRead,
        Ability::EgressTest,
        Ability::EgressWrite,
    ];
    if abilities.iter().any(|a| caller.principal.can(*a)) {
        return Ok(());
    }
    caller.require(Ability::EgressRead)
}

/// Egresses, oldest first.
pub async fn list(core: &Core, caller: &Caller, page: PageRequest) -> OpResult<(Vec<Egress>, i64)> {
    caller.require(Ability::EgressRead)?;
    let mut db = core.store.acquire().await?;
    let (rows, total) = store::egress::list(db.conn(), core.store.keys(), page).await?;
    Ok((rows.into_iter().map(Egress::from).collect(), total))
}

/// One egress, secrets masked.
pub async fn get(core: &Core, caller: &Caller, id: Uuid) -> OpResult<Egress> {
    caller.require(Ability::EgressRead)?;
    let mut db = core.store.acquire().await?;
    Ok(find(db.conn(), core.store.keys(), id).await?.into())
}

/// Adds an egress. For WireGuard without a private key, the client key pair is generated and
/// its public key answered, to register with the provider.
pub async fn create(core: &Core, caller: &Caller, input: EgressInput) -> OpResult<Egress> {
    caller.require(Ability::EgressWrite)?;
    let valid = settings::validate(input)?;
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
    let mut tx = core.store.begin().await?;
    store::egress::insert(tx.conn(), core.store.keys(), &row).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "egress.created", "egress_ip")
            .target(row.id)
            .source(caller.source.clone())
            .details(event_details(&row)),
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Changes an egress: fields present replace the stored ones; a secret sent back masked keeps
/// its value. Live hosts bound to it are moved onto the new settings by a task each.
pub async fn update(
    core: &Core,
    caller: &Caller,
    id: Uuid,
    input: EgressInput,
) -> OpResult<Egress> {
    caller.require(Ability::EgressWrite)?;
    let mut tx = core.store.begin().await?;
    let old = find(tx.conn(), core.store.keys(), id).await?;
    let base = settings::to_input(&old.label, &old.ip_address, &old.provider, &old.settings.0);
    let merged = settings::overlay(base, input)?;
    let valid = settings::validate(merged)?;
    let row = EgressRow {
        label: valid.label,
        ip_address: valid.ip_address,
        provider: valid.provider,
        tunnel_type: valid.settings.tunnel_type().into(),
        settings: Json(valid.settings),
        updated_at: crate::clock::now(),
        ..old
    };
    store::egress::update(tx.conn(), core.store.keys(), &row)
        .await
        .map_err(|e| match e {
            store::StoreError::Conflict(c) if store::hosts::is_exclusive_binding(&c) => {
                OpError::Conflict(
                    "more than one host is bound to this egress, and a WireGuard egress serves one host: unbind the others first".into(),
                )
            }
            other => other.into(),
        })?;
    let mut queued = 0;
    for host_id in store::egress::bound_host_ids(tx.conn(), id).await? {
        if let Some(host) = store::hosts::get(tx.conn(), host_id).await?
            && super::bindings::move_if_live(tx.conn(), &host, &caller.actor())
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
            .source(caller.source.clone())
            .details(event_details(&row)),
    )
    .await?;
    tx.commit().await?;
    if queued > 0 {
        core.queue.wake();
    }
    Ok(row.into())
}

/// Deletes an egress; refused, naming them, while hosts are bound to it.
pub async fn delete(core: &Core, caller: &Caller, id: Uuid) -> OpResult<()> {
    caller.require(Ability::EgressWrite)?;
    let mut tx = core.store.begin().await?;
    let row = find(tx.conn(), core.store.keys(), id).await?;
    let bound = store::egress::bound_hosts(tx.conn(), id).await?;
    if !bound.is_empty() {
        return Err(OpError::Conflict(format!(
            "egress `{}` is bound to hosts {}: unbind them first",
            row.label,
            bound.join(", ")
        )));
    }
    store::egress::delete(tx.conn(), id).await?;
    events::record(
        tx.conn(),
        NewEvent::new(caller.actor(), "egress.deleted", "egress_ip")
            .target(id)
            .source(caller.source.clone())
            .details(event_details(&row)),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Runs the three checks through a path.
async fn probe_through(
    core: &Core,
    ns: crate::netns::NetNs,
    settings: &EgressSettings,
    expected: &str,
) -> Report {
    let path = crate::probe::Path::through(ns, settings);
    crate::probe::run(&core.probe, &path, &crate::probe::Path::direct(), expected).await
}

/// Tests an egress: connectivity, exit IP (against the declared address) and DNS leak, through
/// the egress's own data plane: a bound host's live session when this process carries one,
/// otherwise a throwaway namespace. A running host whose session this process does not carry
/// (the CLI next to a running server) is not disturbed by a second peer with its keys: the
/// test is left to the server ([`OpError::ServerOnly`]; the CLI then asks it). The result is
/// kept as the egress's `last_test`.
pub async fn test(core: &Core, caller: &Caller, id: Uuid) -> OpResult<Report> {
    caller.require(Ability::EgressTest)?;
    let (row, bound) = {
        let mut db = core.store.acquire().await?;
        let row = find(db.conn(), core.store.keys(), id).await?;
        let bound = store::egress::bound_host_ids(db.conn(), id).await?;
        (row, bound)
    };
    let engine = core
        .runtime
        .engine()
        .ok_or_else(|| OpError::Unavailable("this Sluice runs no egress data plane".into()))?;
    let _turn = engine.test_turn(id).await;
    let mut live = None;
    let mut running_elsewhere = None;
    for host_id in bound {
        let Some(spec) = crate::tasks::host_spec(&core.store, host_id).await? else {
            continue;
        };
        if let Some(ns) = core.runtime.egress_netns(&spec).await {
            live = Some(ns);
            break;
        }
        let mut db = core.store.acquire().await?;
        if let Some(h) = store::hosts::get(db.conn(), host_id).await?
            && h.status.is_live()
        {
            running_elsewhere = Some(h.short_id);
        }
    }
    let (ns, _throwaway) = match (live, running_elsewhere) {
        (Some(ns), _) => (ns, None),
        (None, Some(short_id)) => {
            return Err(OpError::ServerOnly(format!(
                "egress `{}` carries running host {short_id}, whose session only the running \
                 server holds: the test probes through that session",
                row.label
            )));
        }
        (None, None) => {
            let t = engine.throwaway(&row.settings.0).await.map_err(|e| {
                OpError::Unavailable(format!("cannot bring egress `{}` up: {e}", row.label))
            })?;
            (t.ns.clone(), Some(t))
        }
    };
    let report = probe_through(core, ns, &row.settings.0, &row.ip_address).await;
    crate::probe::record(
        &core.store,
        id,
        &row.label,
        &caller.actor(),
        caller.source.clone(),
        &report,
    )
    .await?;
    Ok(report)
}

/// Runs the egress checks from inside a running host, through its real path.
pub async fn check_host(core: &Core, caller: &Caller, host_id: Uuid) -> OpResult<Report> {
    caller.require(Ability::EgressTest)?;
    let spec = crate::tasks::host_spec(&core.store, host_id)
        .await?
        .ok_or(OpError::NotFound("host"))?;
    let egress = spec
        .egress
        .clone()
        .ok_or_else(|| OpError::Conflict(format!("host {} has no egress bound", spec.short_id)))?;
    let ns = core.runtime.egress_netns(&spec).await.ok_or_else(|| {
        OpError::Conflict(format!(
            "host {} has no egress attached: is it running?",
            spec.short_id
        ))
    })?;
    let mut report = probe_through(core, ns, &egress.settings, &egress.ip_address).await;
    if matches!(egress.settings, EgressSettings::Proxy { .. })
        && let Some(engine) = core.runtime.engine()
    {
        report.refused_destinations = engine
            .session(host_id)
            .await
            .map(|s| s.refused_destinations);
    }
    let mut db = core.store.acquire().await?;
    events::record(
        db.conn(),
        NewEvent::new(caller.actor(), "host.egress_checked", "host")
            .target(host_id)
            .host(host_id)
            .source(caller.source.clone())
            .details(json!({"short_id": spec.short_id, "status": report.status,
                "exit_ip": report.checks.exit_ip.observed})),
    )
    .await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::ops::Face;

    fn token(abilities: &[Ability]) -> Caller {
        Caller::new(
            Principal::Token {
                id: Uuid::nil(),
                name: "t".into(),
                abilities: abilities.to_vec(),
            },
            None,
            Face::Mcp,
        )
    }

    #[test]
    fn who_may_read_test_or_change_egresses_may_name_one() {
        for a in [
            Ability::EgressRead,
            Ability::EgressTest,
            Ability::EgressWrite,
        ] {
            assert!(may_name(&token(&[a])).is_ok(), "{a:?}");
        }
        assert!(matches!(
            may_name(&token(&[Ability::HostRead])),
            Err(OpError::Auth(_) | OpError::Forbidden(_))
        ));
    }
}
