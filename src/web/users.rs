//! One user's page: the account (expiry, enable or disable, a new password shown once, delete
//! with their hosts) and their SSH keys (add, generate with the private key offered once as a
//! download and not kept, delete). Each form calls the operation the API calls.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::pages::{Nav, error_page, forbidden, guard, render, show_refusal};
use super::session::WebUser;
use crate::api::AppState;
use crate::ops::{self, OpError};
use crate::store::PageRequest;

#[derive(Template)]
#[template(path = "admin_user.html")]
struct UserPage {
    nav: Nav,
    user: UserView,
    expires: String,
    keys: Vec<ops::ssh_keys::SshKey>,
    password: Option<String>,
    private_key: Option<(String, String)>,
    errors: BTreeMap<String, Vec<String>>,
}

struct UserView {
    id: Uuid,
    username: String,
    status: String,
}

impl UserPage {
    fn field_error(&self, name: &str) -> Option<String> {
        self.errors.get(name).map(|m| m.join("; "))
    }
}

/// What a form's answer adds to the page.
#[derive(Default)]
struct Shown {
    password: Option<String>,
    private_key: Option<(String, String)>,
    refused: Option<OpError>,
}

async fn page(state: &AppState, me: &WebUser, id: Uuid, shown: Shown) -> Response {
    let c = &me.caller;
    let user = match ops::users::get(state, c, id).await {
        Ok(u) => u,
        Err(e) => return error_page(me, e),
    };
    let all = PageRequest {
        page: 1,
        per_page: 100,
    };
    let keys = match ops::ssh_keys::list(state, c, id, all).await {
        Ok((k, _)) => k,
        Err(e) => return error_page(me, e),
    };
    let mut nav = Nav::of(me);
    let (status, errors) = show_refusal(&mut nav, shown.refused);
    let page = UserPage {
        nav,
        expires: user
            .expires_at
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| "never".into()),
        user: UserView {
            id: user.id,
            username: user.username,
            status: user.status.as_str().to_string(),
        },
        keys,
        password: shown.password,
        private_key: shown.private_key,
        errors,
    };
    (status, render(&page)).into_response()
}

pub async fn show(State(state): State<AppState>, me: WebUser, Path(id): Path<String>) -> Response {
    if !me.is_admin() {
        return forbidden();
    }
    match ops::parse_id(&id, "user") {
        Ok(id) => page(&state, &me, id, Shown::default()).await,
        Err(e) => error_page(&me, e),
    }
}

/// The account's forms: enable, disable, expiry, rotate-password, delete, add-key,
/// generate-key.
pub async fn action(
    State(state): State<AppState>,
    me: WebUser,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    if let Err(r) = guard(&state, &me, &headers, &field("csrf")) {
        return r.into_response();
    }
    let id = match ops::parse_id(&id, "user") {
        Ok(id) => id,
        Err(e) => return error_page(&me, e),
    };
    let c = &me.caller;
    let back = || Redirect::to(&format!("/admin/users/{id}")).into_response();
    let status = |s: &str| ops::users::UpdateUser {
        status: Some(s.into()),
    };
    let result: Result<Option<Shown>, OpError> = match action.as_str() {
        "enable" => ops::users::set_status(&state, c, id, status("active"))
            .await
            .map(|_| None),
        "disable" => ops::users::set_status(&state, c, id, status("disabled"))
            .await
            .map(|_| None),
        "expiry" => {
            let v = field("expires_at").trim().to_string();
            let req = ops::users::SetExpiry {
                expires_at: Some(Some(v).filter(|v| !v.is_empty())),
            };
            ops::users::set_expiry(&state, c, id, req)
                .await
                .map(|_| None)
        }
        "rotate-password" => ops::users::rotate_password(&state, c, id).await.map(|p| {
            Some(Shown {
                password: Some(p.password),
                ..Default::default()
            })
        }),
        "delete" => {
            return match ops::users::delete(&state, c, id).await {
                Ok(_) => Redirect::to("/admin/users").into_response(),
                Err(e) => {
                    let shown = Shown {
                        refused: Some(e),
                        ..Default::default()
                    };
                    page(&state, &me, id, shown).await
                }
            };
        }
        "add-key" => {
            let req = ops::ssh_keys::AddKey {
                public_key: Some(field("public_key")),
                name: Some(field("name")).filter(|n| !n.trim().is_empty()),
            };
            ops::ssh_keys::add(&state, c, id, req).await.map(|_| None)
        }
        "generate-key" => {
            let req = ops::ssh_keys::GenerateKey {
                name: Some(field("name")).filter(|n| !n.trim().is_empty()),
            };
            ops::ssh_keys::generate(&state, c, id, req).await.map(|k| {
                Some(Shown {
                    private_key: Some((k.key.name, k.private_key)),
                    ..Default::default()
                })
            })
        }
        _ => return (StatusCode::NOT_FOUND, "no such action").into_response(),
    };
    match result {
        Ok(None) => back(),
        Ok(Some(shown)) => page(&state, &me, id, shown).await,
        Err(e) => {
            let shown = Shown {
                refused: Some(e),
                ..Default::default()
            };
            page(&state, &me, id, shown).await
        }
    }
}

pub async fn delete_key(
    State(state): State<AppState>,
    me: WebUser,
    headers: HeaderMap,
    Path((id, key_id)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let csrf = form.get("csrf").cloned().unwrap_or_default();
    if let Err(r) = guard(&state, &me, &headers, &csrf) {
        return r.into_response();
    }
    let ids = ops::parse_id(&id, "user").and_then(|u| Ok((u, ops::parse_id(&key_id, "ssh key")?)));
    let (user_id, key_id) = match ids {
        Ok(ids) => ids,
        Err(e) => return error_page(&me, e),
    };
    match ops::ssh_keys::delete(&state, &me.caller, user_id, key_id).await {
        Ok(()) => Redirect::to(&format!("/admin/users/{user_id}")).into_response(),
        Err(e) => {
            let shown = Shown {
                refused: Some(e),
                ..Default::default()
            };
            page(&state, &me, user_id, shown).await
        }
    }
}
