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
    /// For an administrator: answer an API token holding only these abilities (such as
    /// `["host:read"]`), expiring as a login does, instead of a login token.
    pub abilities: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer token for later requests.
    pub token: String,
    /// `admin` or `user`.
    pub role: crate::users::Role,
    /// Seconds until the token expires.
    pub expires_in: i64,
    /// The token's abilities, when `abilities` was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abilities: Option<Vec<String>>,
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
    // Asked-for abilities are checked before the password is.
    let scoped = req
        .abilities
        .as_deref()
        .map(crate::ops::account::parse_abilities)
        .transpose()?;
    let l = password_login(&state, ip.0, &username, &password).await?;
    let shown: String = username.chars().take(64).collect();
    match scoped {
        Some(abilities) => {
            let admin = crate::auth::Principal::Account {
                id: l.user_id,
                username: shown,
                role: l.role,
                login: None,
            };
            let (token, expires_at) = crate::ops::account::scoped_token(
                &state,
                &admin,
                &abilities,
                ip.to_option_string(),
            )
            .await?;
            Ok(Json(LoginResponse {
                token,
                role: l.role,
                expires_in: (expires_at - crate::clock::now()).whole_seconds(),
                abilities: Some(abilities.iter().map(|a| a.as_str().to_string()).collect()),
            }))
        }
        None => Ok(Json(LoginResponse {
            token: l.token,
            role: l.role,
            expires_in: l.expires_in,
            abilities: None,
        })),
    }
}

/// A password login as every login door does it (the API's and the web page's): the
/// per-source and per-name rate limit, the attempt budget (a slot taken before the check,
/// unknown names counting), the event, and refusals as API errors.
pub async fn password_login(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    username: &str,
    password: &str,
) -> ApiResult<crate::auth::principal::Login> {
    check(&state.limits.login, &(ip, username.to_lowercase()))?;
    // The failure slot is taken before the password is checked; unknown names count too.
    let attempt = state.attempts.begin(ip, Target::account(username))?;
    let result = match state.auth.login(username, password).await {
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
            .source(ip.map(|i| i.to_string()))
            .details(json!({"username": shown, "reason": reason})),
    )
    .await?;
    match result {
        Ok(l) => Ok(l),
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
