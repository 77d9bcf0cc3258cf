//! `/v1/admin/egress-ips`: the egresses hosts can be bound to, and the checks of an egress and
//! of a host's path. Translation only: the rules are in `ops::egress`.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::ApiResult;
use super::extract::{Admin, JsonBody, Paging, can, parse_id};
use crate::egress::settings::EgressInput;
use crate::ops::egress as ops;
pub use crate::ops::egress::Egress;
use crate::probe::Report;

/// List egresses.
#[utoipa::path(get, path = "/v1/admin/egress-ips", tag = "egress",
    params(("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<Egress>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Admin<can::EgressRead>,
    paging: Paging,
) -> ApiResult<axum::Json<Page<Egress>>> {
    let (rows, total) = ops::list(&state, &caller.caller(), paging.req).await?;
    Ok(page(&paging, rows, total))
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
    let egress = ops::create(&state, &caller.caller(), input).await?;
    Ok((StatusCode::CREATED, data(egress)))
}

/// Read an egress.
#[utoipa::path(get, path = "/v1/admin/egress-ips/{id}", tag = "egress", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<Egress>), (status = 404)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Admin<can::EgressRead>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<Egress>>> {
    let id = parse_id(&id, "egress")?;
    Ok(data(ops::get(&state, &caller.caller(), id).await?))
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
    let id = parse_id(&id, "egress")?;
    Ok(data(
        ops::update(&state, &caller.caller(), id, input).await?,
    ))
}

/// Delete an egress. Refused (409, naming them) while hosts are bound to it.
#[utoipa::path(delete, path = "/v1/admin/egress-ips/{id}", tag = "egress", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Admin<can::EgressWrite>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "egress")?;
    ops::delete(&state, &caller.caller(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Test an egress: connectivity, exit IP (against the declared address) and DNS leak, through
/// the egress's own data plane: the attached host's session when one is bound and running,
/// otherwise a throwaway namespace. The result is kept as the egress's `last_test`.
#[utoipa::path(post, path = "/v1/admin/egress-ips/{id}/test", tag = "egress", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<Report>), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<AppState>,
    caller: Admin<can::EgressTest>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<Report>>> {
    let id = parse_id(&id, "egress")?;
    Ok(data(ops::test(&state, &caller.caller(), id).await?))
}

/// Run the egress checks from inside a host's container, through its real path.
#[utoipa::path(post, path = "/v1/admin/hosts/{id}/egress-check", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Data<Report>), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub async fn host_check(
    State(state): State<AppState>,
    caller: Admin<can::EgressTest>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Data<Report>>> {
    let id = parse_id(&id, "host")?;
    Ok(data(ops::check_host(&state, &caller.caller(), id).await?))
}
