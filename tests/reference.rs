//! The reference API document (cloud-cli-proxy's "API Reference", which Sluice was specified
//! from), replayed request by request, in its order, against a real server driving the real
//! Docker engine. Each body is the document's own text; only its placeholders are filled in
//! (ids, `YOUR_HOST`, passwords, keys that must be real keys, dates that must lie ahead, and
//! the one proxy server the test actually dials, pointed at a closed loopback port so that no
//! traffic leaves this machine). Each answer must carry the status the document gives, or a
//! success where it gives none.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::docker::{Cleanup, ensure_image};
use common::{Backend, RecordingRuntime, Server};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sluice::runtime::HostRuntime;
use sluice::runtime::docker::DockerRuntime;

/// One request as the document writes it: a raw JSON body, sent with curl's headers.
async fn send(
    s: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = s.http.request(method, format!("{}{path}", s.base));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// Sends and checks: `want` is the documented status, or `None` for "any success".
async fn step(
    s: &Server,
    what: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    want: Option<StatusCode>,
) -> Value {
    let (st, v) = send(s, method, path, token, body).await;
    match want {
        Some(w) => assert_eq!(st, w, "{what}: {v}"),
        None => assert!(st.is_success(), "{what}: {st} {v}"),
    }
    v
}

fn wg_key() -> String {
    sluice::egress::settings::public_key_of(&sluice::egress::settings::generate_private_key())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_of_the_reference_document_is_answered_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(Backend::Sqlite, tmp.path()).await;
    let mut settings = common::settings(tmp.path(), url);
    // The egress test's probes go nowhere but a closed loopback port.
    settings.probe.probe_url = "http://127.0.0.1:9/".into();
    settings.probe.probe_ip_urls = vec!["http://127.0.0.1:9/".into()];
    let runtime = Arc::new(DockerRuntime::new(tmp.path()).unwrap());
    ensure_image(&runtime).await;
    let _cleanup = Cleanup(runtime.instance().to_string());
    let dir = tmp.path().to_path_buf();
    let dynamic: Arc<dyn HostRuntime> = runtime.clone();
    let s = Server::start_on(
        settings,
        dynamic,
        RecordingRuntime::default(),
        dir,
        Some(tmp),
    )
    .await;
    let ok = Some(StatusCode::OK);
    let created = Some(StatusCode::CREATED);
    let pw = common::ADMIN_PASSWORD;

    // Authentication.
    let login = format!(r#"{{"username":"admin","password":"{pw}"}}"#);
    let v = step(
        &s,
        "login",
        Method::POST,
        "/v1/auth/login",
        None,
        Some(&login),
        ok,
    )
    .await;
    assert_eq!(v["role"], "admin", "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    let t = Some(token.as_str());
    step(
        &s,
        "legacy login",
        Method::POST,
        "/v1/admin/login",
        None,
        Some(&login),
        ok,
    )
    .await;
    let v = step(&s, "health", Method::GET, "/healthz", None, None, ok).await;
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["checks"]["database"], "ok", "{v}");

    // User management. (The document's expiry date has to lie ahead.)
    let new_user = r#"{
    "username": "newuser",
    "password": "min-8-chars",
    "expires_at": "2099-12-31T23:59:59Z"
  }"#;
    let v = step(
        &s,
        "create user",
        Method::POST,
        "/v1/admin/users",
        t,
        Some(new_user),
        created,
    )
    .await;
    let uid = v["data"]["id"].as_str().unwrap().to_string();
    step(
        &s,
        "user exists",
        Method::POST,
        "/v1/admin/users",
        t,
        Some(new_user),
        Some(StatusCode::CONFLICT),
    )
    .await;
    step(
        &s,
        "list users",
        Method::GET,
        "/v1/admin/users",
        t,
        None,
        ok,
    )
    .await;
    let user_path = format!("/v1/admin/users/{uid}");
    step(&s, "get user", Method::GET, &user_path, t, None, ok).await;
    step(
        &s,
        "disable",
        Method::PATCH,
        &user_path,
        t,
        Some(r#"{"status":"disabled"}"#),
        ok,
    )
    .await;
    step(
        &s,
        "enable",
        Method::PATCH,
        &user_path,
        t,
        Some(r#"{"status":"active"}"#),
        ok,
    )
    .await;
    let v = step(
        &s,
        "rotate password",
        Method::POST,
        &format!("{user_path}/rotate-password"),
        t,
        None,
        ok,
    )
    .await;
    let user_pw = v["data"]["password"].as_str().unwrap().to_string();
    assert_eq!(user_pw.len(), 20);
    let expiry = format!("{user_path}/expiry");
    step(
        &s,
        "set expiry",
        Method::PUT,
        &expiry,
        t,
        Some(r#"{"expires_at":"2099-12-31T23:59:59Z"}"#),
        ok,
    )
    .await;
    step(
        &s,
        "clear expiry",
        Method::PUT,
        &expiry,
        t,
        Some(r#"{"expires_at":null}"#),
        ok,
    )
    .await;

    // SSH keys, admin-managed. (The document's key is a placeholder; a real one is sent.)
    let keys = format!("{user_path}/ssh-keys");
    let public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq6ZpGxkWW0mCqHzDeFe4tBZcT9vmJOaSHQ9ypd0e4D user@host";
    step(&s, "list keys", Method::GET, &keys, t, None, ok).await;
    let v = step(
        &s,
        "add key",
        Method::POST,
        &keys,
        t,
        Some(&format!(r#"{{"public_key":"{public}"}}"#)),
        None,
    )
    .await;
    let key_id = v["data"]["id"].as_str().unwrap().to_string();
    step(
        &s,
        "generate key",
        Method::POST,
        &format!("{keys}/generate"),
        t,
        None,
        None,
    )
    .await;
    step(
        &s,
        "delete key",
        Method::DELETE,
        &format!("{keys}/{key_id}"),
        t,
        None,
        None,
    )
    .await;

    // SSH keys, self-managed, with the user's own login.
    let v = step(
        &s,
        "user login",
        Method::POST,
        "/v1/auth/login",
        None,
        Some(&format!(
            r#"{{"username":"newuser","password":"{user_pw}"}}"#
        )),
        ok,
    )
    .await;
    let user_token = v["token"].as_str().unwrap().to_string();
    let u = Some(user_token.as_str());
    step(
        &s,
        "own keys",
        Method::GET,
        "/v1/user/ssh-keys",
        u,
        None,
        ok,
    )
    .await;
    step(
        &s,
        "add own key",
        Method::POST,
        "/v1/user/ssh-keys",
        u,
        Some(&format!(r#"{{"public_key":"{public}"}}"#)),
        None,
    )
    .await;
    step(
        &s,
        "generate own key",
        Method::POST,
        "/v1/user/ssh-keys/generate",
        u,
        None,
        None,
    )
    .await;

    // Egress IPs: the WireGuard example, with `wg_allowed_ips` as the string it is there.
    let wg = r#"{
    "label": "hk-wg-01",
    "ip_address": "203.0.113.10",
    "tunnel_type": "wireguard",
    "provider": "manual",
    "wg_endpoint": "vpn-provider.example.com:51820",
    "wg_public_key": "PeerPublicKeyBase64",
    "wg_preshared_key": "PresharedKeyBase64",
    "wg_allowed_ips": "0.0.0.0/0",
    "wg_dns_server": "1.1.1.1",
    "wg_peer_address": "10.0.0.2/32"
  }"#
    .replace("PeerPublicKeyBase64", &wg_key())
    .replace("PresharedKeyBase64", &wg_key());
    let v = step(
        &s,
        "create WireGuard egress",
        Method::POST,
        "/v1/admin/egress-ips",
        t,
        Some(&wg),
        None,
    )
    .await;
    let wg_id = v["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        v["data"]["wg_allowed_ips"],
        serde_json::json!(["0.0.0.0/0"]),
        "{v}"
    );
    let proxies = [
        r#"{
    "label": "jp-ss-01",
    "ip_address": "198.51.100.5",
    "tunnel_type": "proxy",
    "provider": "manual",
    "proxy_config": {
      "type": "shadowsocks",
      "server": "198.51.100.5",
      "server_port": 8388,
      "method": "aes-256-gcm",
      "password": "your-password"
    }
  }"#
        .to_string(),
        r#"{
    "label": "us-vmess-01",
    "ip_address": "203.0.113.20",
    "tunnel_type": "proxy",
    "provider": "manual",
    "proxy_config": {
      "type": "vmess",
      "server": "203.0.113.20",
      "server_port": 443,
      "uuid": "your-uuid",
      "security": "auto",
      "alter_id": 0
    }
  }"#
        .replace("your-uuid", &uuid::Uuid::new_v4().to_string()),
        // The one proxy this test dials (egress test, binding): a closed port on loopback.
        r#"{
    "label": "eu-socks-01",
    "ip_address": "192.0.2.50",
    "tunnel_type": "proxy",
    "provider": "manual",
    "proxy_config": {
      "type": "socks",
      "server": "192.0.2.50",
      "server_port": 1080,
      "username": "user",
      "password": "pass"
    }
  }"#
        .replace(r#""server": "192.0.2.50""#, r#""server": "127.0.0.1""#)
        .replace("1080", "9"),
        r#"{
    "label": "sg-trojan-01",
    "ip_address": "203.0.113.30",
    "tunnel_type": "proxy",
    "provider": "manual",
    "proxy_config": {
      "type": "trojan",
      "server": "203.0.113.30",
      "server_port": 443,
      "password": "your-password",
      "tls": {"enabled": true, "server_name": "your-domain.com"}
    }
  }"#
        .to_string(),
        r#"{
    "label": "proxy-http-01",
    "ip_address": "192.0.2.100",
    "tunnel_type": "proxy",
    "provider": "manual",
    "proxy_config": {
      "type": "http",
      "server": "192.0.2.100",
      "server_port": 8080,
      "username": "user",
      "password": "pass"
    }
  }"#
        .to_string(),
    ];
    let mut proxy_ids = vec![];
    for body in &proxies {
        let v = step(
            &s,
            "create proxy egress",
            Method::POST,
            "/v1/admin/egress-ips",
            t,
            Some(body),
            None,
        )
        .await;
        // Secrets come back masked.
        if let Some(p) = v["data"]["proxy_config"].get("password") {
            assert_eq!(p, "********", "{v}");
        }
        proxy_ids.push(v["data"]["id"].as_str().unwrap().to_string());
    }
    let socks_id = proxy_ids[2].clone();
    step(
        &s,
        "list egress",
        Method::GET,
        "/v1/admin/egress-ips",
        t,
        None,
        ok,
    )
    .await;
    step(
        &s,
        "get egress",
        Method::GET,
        &format!("/v1/admin/egress-ips/{wg_id}"),
        t,
        None,
        ok,
    )
    .await;
    let update = r#"{"wg_endpoint": "new-endpoint:51820", "wg_public_key": "NewKey"}"#
        .replace("NewKey", &wg_key());
    let v = step(
        &s,
        "update egress",
        Method::PUT,
        &format!("/v1/admin/egress-ips/{wg_id}"),
        t,
        Some(&update),
        ok,
    )
    .await;
    assert_eq!(v["data"]["wg_endpoint"], "new-endpoint:51820", "{v}");
    step(
        &s,
        "delete egress",
        Method::DELETE,
        &format!("/v1/admin/egress-ips/{}", proxy_ids[4]),
        t,
        None,
        None,
    )
    .await;
    let v = step(
        &s,
        "test egress",
        Method::POST,
        &format!("/v1/admin/egress-ips/{socks_id}/test"),
        t,
        None,
        ok,
    )
    .await;
    // A proxy on a closed port: every check fails, and says so.
    assert_eq!(v["data"]["status"], "failed", "{v}");
    for check in ["connectivity", "exit_ip", "dns_leak"] {
        assert_eq!(v["data"]["checks"][check]["passed"], false, "{check}: {v}");
    }

    // Hosts.
    let v = step(
        &s,
        "create host",
        Method::POST,
        "/v1/admin/hosts",
        t,
        Some(&format!(r#"{{"user_id": "{uid}"}}"#)),
        None,
    )
    .await;
    let host_id = v["data"]["id"].as_str().unwrap().to_string();
    let short = v["data"]["short_id"].as_str().unwrap().to_string();
    let host_pw = v["data"]["ssh_password"].as_str().unwrap().to_string();
    s.wait_task(&token, v["data"]["task_id"].as_str().unwrap())
        .await;
    step(
        &s,
        "list hosts",
        Method::GET,
        "/v1/admin/hosts",
        t,
        None,
        ok,
    )
    .await;
    let host_path = format!("/v1/admin/hosts/{host_id}");
    let v = step(&s, "get host", Method::GET, &host_path, t, None, ok).await;
    assert!(
        v["data"]["access"]["entry_command"]
            .as_str()
            .unwrap()
            .contains(&short),
        "{v}"
    );
    for action in ["stop", "start", "rebuild"] {
        let v = step(
            &s,
            action,
            Method::POST,
            &format!("{host_path}/{action}"),
            t,
            None,
            None,
        )
        .await;
        let task = s
            .wait_task(&token, v["data"]["task_id"].as_str().unwrap())
            .await;
        assert_eq!(task["status"], "succeeded", "{action}: {task}");
    }
    let v = step(
        &s,
        "rotate SSH password",
        Method::POST,
        &format!("{host_path}/rotate-ssh-password"),
        t,
        None,
        ok,
    )
    .await;
    let host_pw = v["data"]["ssh_password"]
        .as_str()
        .map(str::to_string)
        .unwrap_or(host_pw);

    // Bindings. (The one egress this test may dial.)
    let binding = format!(r#"{{"host_id":"{host_id}","egress_ip_id":"{socks_id}"}}"#);
    let v = step(
        &s,
        "bind",
        Method::POST,
        "/v1/admin/bindings",
        t,
        Some(&binding),
        None,
    )
    .await;
    let binding_id = v["data"]["id"]
        .as_str()
        .or(v["data"]["binding_id"].as_str())
        .unwrap()
        .to_string();
    step(
        &s,
        "delete a bound egress",
        Method::DELETE,
        &format!("/v1/admin/egress-ips/{socks_id}"),
        t,
        None,
        Some(StatusCode::CONFLICT),
    )
    .await;
    step(
        &s,
        "unbind",
        Method::DELETE,
        &format!("/v1/admin/bindings/{binding_id}"),
        t,
        None,
        None,
    )
    .await;

    // The user portal.
    step(&s, "own hosts", Method::GET, "/v1/user/hosts", u, None, ok).await;
    step(
        &s,
        "own host",
        Method::GET,
        &format!("/v1/user/hosts/{host_id}"),
        u,
        None,
        ok,
    )
    .await;
    let v = step(
        &s,
        "rebuild own host",
        Method::POST,
        &format!("/v1/user/hosts/{host_id}/rebuild"),
        u,
        None,
        None,
    )
    .await;
    s.wait_task(&token, v["data"]["task_id"].as_str().unwrap())
        .await;
    let change = format!(r#"{{"old_password":"{user_pw}","new_password":"a-new-password"}}"#);
    step(
        &s,
        "change password",
        Method::POST,
        "/v1/user/change-password",
        u,
        Some(&change),
        None,
    )
    .await;

    // Bootstrap.
    let v = step(
        &s,
        "bootstrap script",
        Method::GET,
        "/v1/bootstrap/script",
        None,
        None,
        ok,
    )
    .await;
    assert!(v.as_str().unwrap().starts_with("#!/usr/bin/env bash"));
    let v = step(
        &s,
        "bootstrap session",
        Method::POST,
        "/v1/bootstrap/sessions",
        None,
        Some(r#"{"username":"newuser","password":"a-new-password"}"#),
        None,
    )
    .await;
    let task = v["task_id"].as_str().unwrap().to_string();
    assert!(v["status_url"].is_string(), "{v}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = step(
            &s,
            "bootstrap task",
            Method::GET,
            &format!("/v1/bootstrap/tasks/{task}"),
            None,
            None,
            ok,
        )
        .await;
        if v["status"] == "ready" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = step(
        &s,
        "handoff",
        Method::GET,
        &format!("/v1/bootstrap/tasks/{task}/handoff"),
        None,
        None,
        ok,
    )
    .await;
    for field in ["host", "port", "user"] {
        assert!(!v[field].is_null(), "{field}: {v}");
    }

    // Short links.
    step(
        &s,
        "entry script",
        Method::GET,
        &format!("/entry/{short}"),
        None,
        None,
        ok,
    )
    .await;
    let v = step(
        &s,
        "entry auth",
        Method::POST,
        &format!("/v1/entry/{short}/auth"),
        None,
        Some(&format!(r#"{{"password":"{host_pw}"}}"#)),
        ok,
    )
    .await;
    for field in ["ssh_user", "ssh_pass", "ssh_host", "ssh_port"] {
        assert!(!v[field].is_null(), "{field}: {v}");
    }

    // Tasks, events, dashboard.
    step(&s, "tasks", Method::GET, "/v1/admin/tasks", t, None, ok).await;
    step(
        &s,
        "recent events",
        Method::GET,
        "/v1/admin/events?limit=50",
        t,
        None,
        ok,
    )
    .await;
    step(
        &s,
        "events by user",
        Method::GET,
        &format!("/v1/admin/events?user_id={uid}"),
        t,
        None,
        ok,
    )
    .await;
    step(
        &s,
        "events by host",
        Method::GET,
        &format!("/v1/admin/events?host_id={host_id}"),
        t,
        None,
        ok,
    )
    .await;
    step(
        &s,
        "events in a range",
        Method::GET,
        "/v1/admin/events?since=2026-03-01T00:00:00Z&until=2026-03-31T23:59:59Z",
        t,
        None,
        ok,
    )
    .await;
    step(
        &s,
        "dashboard",
        Method::GET,
        "/v1/admin/dashboard/stats",
        t,
        None,
        ok,
    )
    .await;

    // Deleting: the host, then the user (204; their hosts go in the background).
    let v = step(&s, "delete host", Method::DELETE, &host_path, t, None, None).await;
    if let Some(task) = v["data"]["task_id"].as_str() {
        s.wait_task(&token, task).await;
    }
    step(
        &s,
        "delete user",
        Method::DELETE,
        &user_path,
        t,
        None,
        Some(StatusCode::NO_CONTENT),
    )
    .await;
    step(
        &s,
        "user gone",
        Method::GET,
        &user_path,
        t,
        None,
        Some(StatusCode::NOT_FOUND),
    )
    .await;
}
