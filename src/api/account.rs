//! `GET /v1/user` and `POST /v1/auth/logout`: the caller's own credential, for logins and API
//! tokens alike. Translation only: `ops::account` holds the rules.

use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use super::envelope::{Data, data};
use super::error::ApiResult;
use super::extract::Authed;
use crate::ops::account::{self as ops, Me};

/// Who the credential belongs to: its kind, name, role and abilities.
#[utoipa::path(get, path = "/v1/user", tag = "auth",
    responses((status = 200, body = Data<Me>)), security(("bearer" = [])))]
pub async fn me(State(state): State<AppState>, caller: Authed) -> ApiResult<axum::Json<Data<Me>>> {
    Ok(data(ops::whoami(&state, &caller.0).await?))
}

/// Revoke the credential of this request: a login token at once (others of the account stay),
/// or the API token with every token it minted.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    responses((status = 204)), security(("bearer" = [])))]
pub async fn logout(State(state): State<AppState>, caller: Authed) -> ApiResult<StatusCode> {
    ops::logout(&state, &caller.0).await?;
    Ok(StatusCode::NO_CONTENT)
}
