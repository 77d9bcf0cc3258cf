//! SSH keys of a user: `/v1/admin/users/{id}/ssh-keys...` for administrators and
//! `/v1/user/ssh-keys...` for the user themselves. Both share the logic below.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::envelope::{Data, Page, data, page};
use super::error::{ApiError, ApiResult};
use super::extract::{Admin, JsonBody, Paging, UserCaller, can, parse_id};
use crate::auth::sshkey;
use crate::events::{self, NewEvent};
use crate::ops::users::find_user;
use crate::store::{self, ssh_keys::SshKeyRow};

/// A public key of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct SshKey {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, ...
    pub key_type: String,
    pub public_key: String,
    /// `SHA256:...`
    pub fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<SshKeyRow> for SshKey {
    fn from(k: SshKeyRow) -> Self {
        SshKey {
            id: k.id,
            user_id: k.user_id,
            name: k.name,
            key_type: k.key_type,
            public_key: k.public_key,
            fingerprint: k.fingerprint,
            created_at: k.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddKey {
    /// One OpenSSH public key line.
    pub public_key: Option<String>,
    /// A name for the key (default: the key's comment).
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GenerateKey {
    /// A name for the key (default `generated`).
    pub name: Option<String>,
}

/// A generated key pair; the private key is shown only here and not kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct GeneratedKey {
    #[serde(flatten)]
    pub key: SshKey,
    pub private_key: String,
}

fn key_name(name: Option<String>, fallback: &str) -> Result<String, ApiError> {
    let name = name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| fallback.to_string());
    crate::validation::display_name(&name, 100, true).map_err(|m| ApiError::field("name", m))
}

async fn list_keys(
    state: &AppState,
    user_id: Uuid,
    paging: &Paging,
) -> ApiResult<axum::Json<Page<SshKey>>> {
    let mut db = state.store.acquire().await?;
    let (rows, total) = store::ssh_keys::list(db.conn(), user_id, paging.req).await?;
    Ok(page(
        paging,
        rows.into_iter().map(SshKey::from).collect(),
        total,
    ))
}

async fn insert_key(
    state: &AppState,
    user_id: Uuid,
    name: String,
    parsed: sshkey::ParsedKey,
    actor: String,
    source: Option<String>,
    action: &'static str,
) -> ApiResult<SshKey> {
    let row = SshKeyRow {
        id: Uuid::now_v7(),
        user_id,
        name,
        key_type: parsed.key_type,
        public_key: parsed.public_key,
        fingerprint: parsed.fingerprint,
        created_at: crate::clock::now(),
    };
    let mut tx = state.store.begin().await?;
    find_user(tx.conn(), user_id).await?;
    store::ssh_keys::insert(tx.conn(), &row)
        .await
        .map_err(|e| match e {
            store::StoreError::Conflict(_) => ApiError::Conflict(format!(
                "this key ({}) is already registered for the user",
                row.fingerprint
            )),
            other => other.into(),
        })?;
    events::record(
        tx.conn(),
        NewEvent::new(actor, action, "ssh_key")
            .target(row.id)
            .user(Some(user_id))
            .source(source)
            .details(
                json!({"name": row.name, "fingerprint": row.fingerprint, "key_type": row.key_type}),
            ),
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

async fn add_key(
    state: &AppState,
    user_id: Uuid,
    req: AddKey,
    actor: String,
    source: Option<String>,
) -> ApiResult<SshKey> {
    let parsed = sshkey::parse(req.public_key.as_deref().unwrap_or_default())
        .map_err(|m| ApiError::field("public_key", m))?;
    let fallback = if parsed.comment.is_empty() {
        "key".to_string()
    } else {
        parsed.comment.clone()
    };
    let name = key_name(req.name, &fallback)?;
    insert_key(state, user_id, name, parsed, actor, source, "ssh_key.added").await
}

async fn generate_key(
    state: &AppState,
    user_id: Uuid,
    req: GenerateKey,
    actor: String,
    source: Option<String>,
) -> ApiResult<GeneratedKey> {
    let name = key_name(req.name, "generated")?;
    let (private_key, parsed) = sshkey::generate(&name).map_err(ApiError::Internal)?;
    let key = insert_key(
        state,
        user_id,
        name,
        parsed,
        actor,
        source,
        "ssh_key.generated",
    )
    .await?;
    Ok(GeneratedKey { key, private_key })
}

async fn delete_key(
    state: &AppState,
    user_id: Uuid,
    key_id: &str,
    actor: String,
    source: Option<String>,
) -> ApiResult<StatusCode> {
    let key_id = parse_id(key_id, "ssh key")?;
    let mut tx = state.store.begin().await?;
    let Some(row) = store::ssh_keys::delete(tx.conn(), user_id, key_id).await? else {
        return Err(ApiError::NotFound("ssh key"));
    };
    events::record(
        tx.conn(),
        NewEvent::new(actor, "ssh_key.deleted", "ssh_key")
            .target(key_id)
            .user(Some(user_id))
            .source(source)
            .details(json!({"name": row.name, "fingerprint": row.fingerprint})),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn existing_user(state: &AppState, id: &str) -> ApiResult<Uuid> {
    let id = parse_id(id, "user")?;
    let mut db = state.store.acquire().await?;
    Ok(find_user(db.conn(), id).await?.id)
}

/// List a user's SSH keys.
#[utoipa::path(get, path = "/v1/admin/users/{id}/ssh-keys", tag = "ssh keys",
    params(("id" = Uuid, Path), ("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<SshKey>), (status = 404)), security(("bearer" = [])))]
pub async fn admin_list(
    State(state): State<AppState>,
    _: Admin<can::UserRead>,
    Path(id): Path<String>,
    paging: Paging,
) -> ApiResult<axum::Json<Page<SshKey>>> {
    let id = existing_user(&state, &id).await?;
    list_keys(&state, id, &paging).await
}

/// Add a public key to a user.
#[utoipa::path(post, path = "/v1/admin/users/{id}/ssh-keys", tag = "ssh keys",
    params(("id" = Uuid, Path)), request_body = AddKey,
    responses((status = 201, body = Data<SshKey>), (status = 404), (status = 409), (status = 422)),
    security(("bearer" = [])))]
pub async fn admin_add(
    State(state): State<AppState>,
    caller: Admin<can::UserWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AddKey>,
) -> ApiResult<(StatusCode, axum::Json<Data<SshKey>>)> {
    let id = parse_id(&id, "user")?;
    let key = add_key(&state, id, req, caller.actor(), caller.source()).await?;
    Ok((StatusCode::CREATED, data(key)))
}

/// Generate an ed25519 key pair for a user; the private key is answered once.
#[utoipa::path(post, path = "/v1/admin/users/{id}/ssh-keys/generate", tag = "ssh keys",
    params(("id" = Uuid, Path)), request_body = GenerateKey,
    responses((status = 201, body = Data<GeneratedKey>), (status = 404)), security(("bearer" = [])))]
pub async fn admin_generate(
    State(state): State<AppState>,
    caller: Admin<can::UserWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<GenerateKey>,
) -> ApiResult<(StatusCode, axum::Json<Data<GeneratedKey>>)> {
    let id = parse_id(&id, "user")?;
    let key = generate_key(&state, id, req, caller.actor(), caller.source()).await?;
    Ok((StatusCode::CREATED, data(key)))
}

/// Remove a key from a user.
#[utoipa::path(delete, path = "/v1/admin/users/{id}/ssh-keys/{key_id}", tag = "ssh keys",
    params(("id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses((status = 204), (status = 404)), security(("bearer" = [])))]
pub async fn admin_delete(
    State(state): State<AppState>,
    caller: Admin<can::UserWrite>,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = existing_user(&state, &id).await?;
    delete_key(&state, id, &key_id, caller.actor(), caller.source()).await
}

/// List my SSH keys.
#[utoipa::path(get, path = "/v1/user/ssh-keys", tag = "user portal",
    params(("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<SshKey>)), security(("bearer" = [])))]
pub async fn user_list(
    State(state): State<AppState>,
    caller: UserCaller,
    paging: Paging,
) -> ApiResult<axum::Json<Page<SshKey>>> {
    list_keys(&state, caller.id, &paging).await
}

/// Add a public key to my account.
#[utoipa::path(post, path = "/v1/user/ssh-keys", tag = "user portal", request_body = AddKey,
    responses((status = 201, body = Data<SshKey>), (status = 409), (status = 422)), security(("bearer" = [])))]
pub async fn user_add(
    State(state): State<AppState>,
    caller: UserCaller,
    JsonBody(req): JsonBody<AddKey>,
) -> ApiResult<(StatusCode, axum::Json<Data<SshKey>>)> {
    let key = add_key(&state, caller.id, req, caller.actor(), caller.source()).await?;
    Ok((StatusCode::CREATED, data(key)))
}

/// Generate an ed25519 key pair for my account; the private key is answered once.
#[utoipa::path(post, path = "/v1/user/ssh-keys/generate", tag = "user portal", request_body = GenerateKey,
    responses((status = 201, body = Data<GeneratedKey>)), security(("bearer" = [])))]
pub async fn user_generate(
    State(state): State<AppState>,
    caller: UserCaller,
    JsonBody(req): JsonBody<GenerateKey>,
) -> ApiResult<(StatusCode, axum::Json<Data<GeneratedKey>>)> {
    let key = generate_key(&state, caller.id, req, caller.actor(), caller.source()).await?;
    Ok((StatusCode::CREATED, data(key)))
}

/// Remove one of my keys.
#[utoipa::path(delete, path = "/v1/user/ssh-keys/{key_id}", tag = "user portal",
    params(("key_id" = Uuid, Path)), responses((status = 204), (status = 404)), security(("bearer" = [])))]
pub async fn user_delete(
    State(state): State<AppState>,
    caller: UserCaller,
    Path(key_id): Path<String>,
) -> ApiResult<StatusCode> {
    delete_key(&state, caller.id, &key_id, caller.actor(), caller.source()).await
}
