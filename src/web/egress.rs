//! The egress pages: the list with each egress's last test, the form that adds or edits a
//! WireGuard tunnel or a proxy of each kind (secrets shown masked, a mask left as it is keeps
//! the secret), the test with its three results, and delete (refused while hosts are bound,
//! with the reason). The form translates to the API's `EgressInput`; the rules are
//! `ops::egress`.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::pages::{CsrfForm, Nav, error_page, forbidden, guard, render, show_refusal};
use super::session::WebUser;
use crate::api::AppState;
use crate::egress::settings::EgressInput;
use crate::ops::{self, OpError};
use crate::probe::Report;
use crate::store::PageRequest;

/// One row of the list.
pub struct Row {
    pub id: Uuid,
    pub label: String,
    pub kind: String,
    pub ip: String,
    pub test: String,
}

/// A test's three results, as the page shows them.
pub struct Results {
    label: String,
    status: String,
    connectivity: String,
    connectivity_detail: String,
    exit_ip: String,
    exit_ip_detail: String,
    dns: String,
    dns_detail: String,
}

fn verdict(passed: bool) -> String {
    if passed { "passed" } else { "failed" }.into()
}

impl Results {
    fn of(label: String, r: &Report) -> Results {
        let v = serde_json::to_value(r).unwrap_or(Value::Null);
        let c = &v["checks"];
        let text = |p: &str| match c.pointer(p) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        Results {
            label,
            status: r.status.to_string(),
            connectivity: verdict(c["connectivity"]["passed"] == json!(true)),
            connectivity_detail: match c["connectivity"]["latency_ms"].as_u64() {
                Some(ms) => format!("answered in {ms} ms"),
                None => text("/connectivity/error"),
            },
            exit_ip: verdict(c["exit_ip"]["passed"] == json!(true)),
            exit_ip_detail: format!(
                "seen as {}, declared {}",
                text("/exit_ip/observed"),
                text("/exit_ip/expected")
            ),
            dns: verdict(c["dns_leak"]["passed"] == json!(true)),
            dns_detail: format!("resolvers seen: {}", text("/dns_leak/resolvers")),
        }
    }
}

/// The form's values (as typed, or as stored with secrets masked).
#[derive(Debug, Default, Deserialize)]
pub struct EgressForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    ip_address: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    tunnel_type: String,
    #[serde(default)]
    wg_endpoint: String,
    #[serde(default)]
    wg_public_key: String,
    #[serde(default)]
    wg_private_key: String,
    #[serde(default)]
    wg_preshared_key: String,
    #[serde(default)]
    wg_allowed_ips: String,
    #[serde(default)]
    wg_dns_server: String,
    #[serde(default)]
    wg_peer_address: String,
    #[serde(default)]
    proxy_type: String,
    #[serde(default, rename = "proxy_config.server")]
    server: String,
    #[serde(default, rename = "proxy_config.server_port")]
    server_port: String,
    #[serde(default, rename = "proxy_config.username")]
    username: String,
    #[serde(default, rename = "proxy_config.password")]
    password: String,
    #[serde(default, rename = "proxy_config.method")]
    method: String,
    #[serde(default, rename = "proxy_config.uuid")]
    uuid: String,
    #[serde(default, rename = "proxy_config.security")]
    security: String,
    #[serde(default, rename = "proxy_config.tls.server_name")]
    tls_server_name: String,
    #[serde(default)]
    tls: Option<String>,
    #[serde(default)]
    proxy_dns_server: String,
    #[serde(default)]
    proxy_allowed_ranges: String,
}

type Field = (&'static str, &'static str, String, bool);

impl EgressForm {
    pub fn wireguard(&self) -> Vec<Field> {
        vec![
            (
                "wg_endpoint",
                "Server endpoint (host:port)",
                self.wg_endpoint.clone(),
                false,
            ),
            (
                "wg_public_key",
                "Server public key",
                self.wg_public_key.clone(),
                false,
            ),
            (
                "wg_peer_address",
                "Tunnel address (such as 10.64.0.2/32)",
                self.wg_peer_address.clone(),
                false,
            ),
            (
                "wg_dns_server",
                "DNS server through the tunnel",
                self.wg_dns_server.clone(),
                false,
            ),
            (
                "wg_allowed_ips",
                "Routed networks (default 0.0.0.0/0)",
                self.wg_allowed_ips.clone(),
                false,
            ),
            (
                "wg_private_key",
                "Client private key (empty: generated)",
                self.wg_private_key.clone(),
                true,
            ),
            (
                "wg_preshared_key",
                "Preshared key (optional)",
                self.wg_preshared_key.clone(),
                true,
            ),
        ]
    }

    pub fn proxy(&self) -> Vec<Field> {
        vec![
            ("proxy_config.server", "Server", self.server.clone(), false),
            (
                "proxy_config.server_port",
                "Port",
                self.server_port.clone(),
                false,
            ),
            (
                "proxy_config.username",
                "User name (socks, http)",
                self.username.clone(),
                false,
            ),
            (
                "proxy_config.password",
                "Password (socks, http, shadowsocks, trojan)",
                self.password.clone(),
                true,
            ),
            (
                "proxy_config.method",
                "Cipher (shadowsocks)",
                self.method.clone(),
                false,
            ),
            ("proxy_config.uuid", "UUID (vmess)", self.uuid.clone(), true),
            (
                "proxy_config.security",
                "Security (vmess, default auto)",
                self.security.clone(),
                false,
            ),
            (
                "proxy_config.tls.server_name",
                "TLS server name (optional)",
                self.tls_server_name.clone(),
                false,
            ),
            (
                "proxy_dns_server",
                "DNS server through the proxy (default 1.1.1.1)",
                self.proxy_dns_server.clone(),
                false,
            ),
            (
                "proxy_allowed_ranges",
                "Internal ranges hosts may reach through it, comma-separated (default none: private, loopback and metadata addresses are refused)",
                self.proxy_allowed_ranges.clone(),
                false,
            ),
        ]
    }

    /// The stored egress as the form shows it (secrets masked, as the API reads them).
    fn of(e: &ops::egress::Egress) -> EgressForm {
        let p = e.proxy_config.clone().unwrap_or(Value::Null);
        let s = |k: &str| match &p[k] {
            Value::String(v) => v.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        EgressForm {
            label: e.label.clone(),
            ip_address: e.ip_address.clone(),
            provider: e.provider.clone(),
            tunnel_type: e.tunnel_type.clone(),
            wg_endpoint: e.wg_endpoint.clone().unwrap_or_default(),
            wg_public_key: e.wg_public_key.clone().unwrap_or_default(),
            wg_private_key: e.wg_private_key.clone().unwrap_or_default(),
            wg_preshared_key: e.wg_preshared_key.clone().unwrap_or_default(),
            wg_allowed_ips: e.wg_allowed_ips.clone().unwrap_or_default().join(", "),
            wg_dns_server: e.wg_dns_server.clone().unwrap_or_default(),
            wg_peer_address: e.wg_peer_address.clone().unwrap_or_default(),
            proxy_type: s("type"),
            server: s("server"),
            server_port: s("server_port"),
            username: s("username"),
            password: s("password"),
            method: s("method"),
            uuid: s("uuid"),
            security: s("security"),
            tls_server_name: p["tls"]["server_name"].as_str().unwrap_or_default().into(),
            tls: (p["tls"]["enabled"] == json!(true)).then(|| "on".into()),
            proxy_dns_server: e.proxy_dns_server.clone().unwrap_or_default(),
            proxy_allowed_ranges: e
                .proxy_allowed_ranges
                .clone()
                .unwrap_or_default()
                .join(", "),
            ..Default::default()
        }
    }

    /// The API's input: the chosen kind's fields only; empty fields are absent.
    fn input(&self) -> EgressInput {
        let opt = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
        let mut input = EgressInput {
            label: opt(&self.label),
            ip_address: opt(&self.ip_address),
            provider: Some(self.provider.trim().to_string()),
            tunnel_type: opt(&self.tunnel_type),
            ..Default::default()
        };
        if self.tunnel_type == "wireguard" {
            input.wg_endpoint = opt(&self.wg_endpoint);
            input.wg_public_key = opt(&self.wg_public_key);
            input.wg_private_key = opt(&self.wg_private_key);
            input.wg_preshared_key = opt(&self.wg_preshared_key);
            input.wg_allowed_ips = opt(&self.wg_allowed_ips)
                .map(|v| v.split(',').map(|c| c.trim().to_string()).collect());
            input.wg_dns_server = opt(&self.wg_dns_server);
            input.wg_peer_address = opt(&self.wg_peer_address);
        } else {
            let mut p = json!({"type": self.proxy_type.trim(), "server": self.server.trim()});
            // A port that is not a number goes as typed, so the validation names it.
            p["server_port"] = match self.server_port.trim().parse::<u64>() {
                Ok(n) => json!(n),
                Err(_) => json!(self.server_port.trim()),
            };
            let tls = json!({"enabled": true, "server_name": opt(&self.tls_server_name)});
            match self.proxy_type.as_str() {
                "socks" | "http" => {
                    if let Some(u) = opt(&self.username) {
                        p["username"] = json!(u);
                    }
                    if let Some(pw) = opt(&self.password) {
                        p["password"] = json!(pw);
                    }
                    if self.proxy_type == "http" && self.tls.is_some() {
                        p["tls"] = tls;
                    }
                }
                "shadowsocks" => {
                    p["method"] = json!(self.method.trim());
                    p["password"] = json!(self.password);
                }
                "trojan" => {
                    p["password"] = json!(self.password);
                    p["tls"] = tls;
                }
                "vmess" => {
                    p["uuid"] = json!(self.uuid.trim());
                    p["security"] = json!(opt(&self.security).unwrap_or_else(|| "auto".into()));
                    p["alter_id"] = json!(0);
                    if self.tls.is_some() {
                        p["tls"] = tls;
                    }
                }
                _ => {}
            }
            input.proxy_config = Some(p);
            input.proxy_dns_server = opt(&self.proxy_dns_server);
            // The form holds the whole list: left empty, it allows none.
            input.proxy_allowed_ranges = Some(
                self.proxy_allowed_ranges
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
        input
    }
}

#[derive(Template)]
#[template(path = "admin_egress.html")]
struct EgressPage {
    nav: Nav,
    egress: Vec<Row>,
    report: Option<Results>,
    form: EgressForm,
    editing: Option<Uuid>,
    errors: BTreeMap<String, Vec<String>>,
}

impl EgressPage {
    fn field_error(&self, name: &str) -> Option<String> {
        self.errors.get(name).map(|m| m.join("; "))
    }
}

/// Rows of the list, failing tests first.
pub async fn rows(state: &AppState, user: &WebUser) -> Result<Vec<Row>, OpError> {
    let all = PageRequest {
        page: 1,
        per_page: 100,
    };
    let (list, _) = ops::egress::list(state, &user.caller, all).await?;
    let mut rows: Vec<Row> = list
        .into_iter()
        .map(|e| Row {
            test: e
                .last_test
                .as_ref()
                .and_then(|t| t["status"].as_str().map(String::from))
                .unwrap_or_else(|| "untested".into()),
            id: e.id,
            label: e.label,
            kind: e.tunnel_type,
            ip: e.ip_address,
        })
        .collect();
    rows.sort_by_key(|e| match e.test.as_str() {
        "failed" => 0,
        "untested" => 1,
        _ => 2,
    });
    Ok(rows)
}

struct Shown {
    report: Option<Results>,
    form: EgressForm,
    editing: Option<Uuid>,
    refused: Option<OpError>,
}

async fn page(state: &AppState, user: &WebUser, shown: Shown) -> Response {
    let egress = match rows(state, user).await {
        Ok(r) => r,
        Err(e) => return error_page(user, e),
    };
    let mut nav = Nav::of(user);
    let (status, errors) = show_refusal(&mut nav, shown.refused);
    let mut form = shown.form;
    if form.tunnel_type.is_empty() {
        form.tunnel_type = "wireguard".into();
    }
    let page = EgressPage {
        nav,
        egress,
        report: shown.report,
        form,
        editing: shown.editing,
        errors,
    };
    (status, render(&page)).into_response()
}

fn fresh() -> Shown {
    Shown {
        report: None,
        form: EgressForm::default(),
        editing: None,
        refused: None,
    }
}

pub async fn list(State(state): State<AppState>, user: WebUser) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    page(&state, &user, fresh()).await
}

pub async fn edit(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> Response {
    if !user.is_admin() {
        return forbidden();
    }
    let found = match ops::parse_id(&id, "egress") {
        Ok(id) => ops::egress::get(&state, &user.caller, id).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(e) => {
            let shown = Shown {
                form: EgressForm::of(&e),
                editing: Some(e.id),
                ..fresh()
            };
            page(&state, &user, shown).await
        }
        Err(e) => error_page(&user, e),
    }
}

pub async fn create(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    Form(form): Form<EgressForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    match ops::egress::create(&state, &user.caller, form.input()).await {
        Ok(_) => Redirect::to("/admin/egress").into_response(),
        Err(e) => {
            let shown = Shown {
                form,
                refused: Some(e),
                ..fresh()
            };
            page(&state, &user, shown).await
        }
    }
}

pub async fn update(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<EgressForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let id = match ops::parse_id(&id, "egress") {
        Ok(id) => id,
        Err(e) => return error_page(&user, e),
    };
    match ops::egress::update(&state, &user.caller, id, form.input()).await {
        Ok(_) => Redirect::to("/admin/egress").into_response(),
        Err(e) => {
            let shown = Shown {
                form,
                editing: Some(id),
                refused: Some(e),
                ..fresh()
            };
            page(&state, &user, shown).await
        }
    }
}

pub async fn action(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = guard(&state, &user, &headers, &form.csrf) {
        return r.into_response();
    }
    let id = match ops::parse_id(&id, "egress") {
        Ok(id) => id,
        Err(e) => return error_page(&user, e),
    };
    let c = &user.caller;
    match action.as_str() {
        "test" => {
            let label = ops::egress::get(&state, c, id)
                .await
                .map(|e| e.label)
                .unwrap_or_default();
            match ops::egress::test(&state, c, id).await {
                Ok(report) => {
                    let shown = Shown {
                        report: Some(Results::of(label, &report)),
                        ..fresh()
                    };
                    page(&state, &user, shown).await
                }
                Err(e) => {
                    let shown = Shown {
                        refused: Some(e),
                        ..fresh()
                    };
                    page(&state, &user, shown).await
                }
            }
        }
        "delete" => match ops::egress::delete(&state, c, id).await {
            Ok(()) => Redirect::to("/admin/egress").into_response(),
            Err(e) => {
                let shown = Shown {
                    refused: Some(e),
                    ..fresh()
                };
                page(&state, &user, shown).await
            }
        },
        _ => (StatusCode::NOT_FOUND, "no such action").into_response(),
    }
}
