//! `POST /v1/auth/login` (and its alias `/v1/admin/login`): user name and password for a
//! login token. Rate limited per source address and user name.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ClientIp, JsonBody};
use super::layers::check;
use crate::auth::AuthError;
use crate::auth::attempts::Target;
use crate::events::{self, NewEvent};
use crate::validation::FieldErrors;

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer token for later requests.
    pub token: String,
    /// `admin` or `user`.
    pub role: crate::users::Role,
    /// Seconds until the token expires.
    pub expires_in: i64,
}

/// Log in with a user name and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401), (status = 403), (status = 422), (status = 429)))]
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    JsonBody(req): JsonBody<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let mut errs = FieldErrors::new();
    let username = req.username.unwrap_or_default();
    let password = req.password.unwrap_or_default();
    if username.is_empty() {
        errs.add("username", "is required");
    }
    if password.is_empty() {
        errs.add("password", "is required");
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(errs));
    }
    check(&state.limits.login, &(ip.0, username.to_lowercase()))?;
    // The failure slot is taken before the password is checked; unknown names count too.
    let attempt = state.attempts.begin(ip.0, Target::account(&username))?;
    let result = match state.auth.login(&username, &password).await {
        // Not a verdict on the password (busy, database): the slot goes back.
        Err(e @ (AuthError::Busy | AuthError::Store(_) | AuthError::Hash(_))) => {
            attempt.succeeded();
            return Err(e.into());
        }
        Err(AuthError::Invalid) => {
            attempt.failed();
            Err(AuthError::Invalid)
        }
        other => {
            attempt.succeeded();
            other
        }
    };
    // The name as typed goes into the event; bound its length.
    let shown: String = username.chars().take(64).collect();
    let mut db = state.store.acquire().await?;
    let (action, user_id, reason) = match &result {
        Ok(l) => ("auth.login", Some(l.user_id), None),
        Err(AuthError::Inactive(why)) => {
            ("auth.login_failed", None, Some(format!("account {why}")))
        }
        Err(_) => (
            "auth.login_failed",
            None,
            Some("bad credentials".to_string()),
        ),
    };
    events::record(
        db.conn(),
        NewEvent::new(format!("login:{shown}"), action, "user")
            .user(user_id)
            .source(ip.to_option_string())
            .details(json!({"username": shown, "reason": reason})),
    )
    .await?;
    match result {
        Ok(l) => Ok(Json(LoginResponse {
            token: l.token,
            role: l.role,
            expires_in: l.expires_in,
        })),
        Err(AuthError::Inactive(why)) => Err(ApiError::Forbidden(format!("account is {why}"))),
        Err(AuthError::Invalid) => Err(ApiError::Unauthorized(
            "invalid username or password".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Alias of `/v1/auth/login`, kept for cloud-cli-proxy clients.
#[utoipa::path(post, path = "/v1/admin/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401), (status = 422), (status = 429)))]
pub async fn admin_login(
    state: State<AppState>,
    ip: ClientIp,
    body: JsonBody<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    login(state, ip, body).await
}
