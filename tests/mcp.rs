//! MCP at /mcp, judged by the official MCP Python SDK (`mcp` from PyPI) as the client over
//! Streamable HTTP, against a real server on the real Docker engine: initialize, list tools,
//! create a user and a host and poll its task to `running`; the gate (401 without a credential,
//! 403 without `mcp:access`); a tool beyond the token's abilities is neither listed nor
//! callable; every call is an audit event naming the token.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::docker::{Cleanup, ensure_image};
use common::{Backend, RecordingRuntime, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice::runtime::HostRuntime;
use sluice::runtime::docker::DockerRuntime;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client.py");
const PYTHON: &str = "/opt/sluice-judges/bin/python";

/// Runs the SDK client; answers what it printed.
async fn client(url: &str, token: &str, scenario: &str, arg: &str) -> Value {
    let args = [CLIENT, url, token, scenario, arg].map(String::from);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(PYTHON)
            .args(&args)
            .output()
            .expect("the MCP SDK is installed (scripts/install-deps.sh)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "client {scenario} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

async fn token(s: &Server, admin: &str, name: &str, abilities: &[&str]) -> String {
    let (st, v) = s
        .post(
            "/v1/admin/tokens",
            admin,
            json!({"name": name, "abilities": abilities}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["data"]["token"].as_str().unwrap().to_string()
}

/// An MCP `initialize` as raw HTTP, for the gate's statuses.
async fn initialize_status(url: &str, bearer: Option<&str>) -> StatusCode {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}}),
        );
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_creates_a_host_through_mcp_within_its_token_and_every_call_is_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(Backend::Sqlite, tmp.path()).await;
    let settings = common::settings(tmp.path(), url);
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
    let admin = s.admin().await;
    let mcp = format!("{}/mcp", s.base);

    // The gate: no credential is 401; a token without mcp:access, or a user, is 403.
    assert_eq!(
        initialize_status(&mcp, None).await,
        StatusCode::UNAUTHORIZED
    );
    let no_mcp = token(&s, &admin, "no-mcp", &["host:read", "host:write"]).await;
    assert_eq!(
        initialize_status(&mcp, Some(&no_mcp)).await,
        StatusCode::FORBIDDEN
    );
    let (_, user_login) = s.user(&admin, "portaluser").await;
    assert_eq!(
        initialize_status(&mcp, Some(&user_login)).await,
        StatusCode::FORBIDDEN
    );
    // A host other than the allowed ones is refused (DNS rebinding).
    let rebound = reqwest::Client::new()
        .post(&mcp)
        .header("host", "evil.example")
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(&admin)
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}}),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert!(rebound.is_client_error(), "{rebound}");

    // An agent's token: MCP, hosts, users, tasks; no egress, no events.
    let agent = token(
        &s,
        &admin,
        "agent",
        &[
            "mcp:access",
            "host:read",
            "host:write",
            "user:write",
            "task:read",
        ],
    )
    .await;
    let seen = client(&mcp, &agent, "create-host", "mcpuser").await;
    assert_eq!(seen["server"], "sluice", "{seen}");
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "hosts_list",
        "host_create",
        "host_delete",
        "task_get",
        "user_create",
    ] {
        assert!(tools.contains(&want), "{want} not in {tools:?}");
    }
    // A desktop host is asked for as in the API.
    for (tool, field) in [("host_create", "desktop"), ("host_rebuild", "desktop")] {
        let inputs = &seen["inputs"][tool];
        assert!(
            inputs.as_array().unwrap().contains(&json!(field)),
            "{tool} takes {field}: {inputs}"
        );
    }
    for beyond in ["egress_list", "egress_test", "events_list", "users_list"] {
        assert!(!tools.contains(&beyond), "{beyond} listed: {tools:?}");
    }
    let destructive: Vec<&str> = seen["destructive"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(destructive.contains(&"host_delete"), "{destructive:?}");
    assert!(!destructive.contains(&"hosts_list"), "{destructive:?}");
    assert_eq!(seen["user_error"], false, "{seen}");
    assert_eq!(seen["host_error"], false, "{seen}");
    assert_eq!(seen["has_ssh_password"], true, "{seen}");
    assert_eq!(seen["task_status"], "succeeded", "{seen}");
    assert_eq!(seen["host_status"], "running", "{seen}");
    assert_eq!(seen["unknown_host_error"], true, "{seen}");
    assert!(seen["invalid_fields"]["user_id"].is_array(), "{seen}");
    assert!(seen["invalid_fields"]["cpus"].is_array(), "{seen}");

    // The host is real, and the REST API sees what MCP made.
    let host_id = seen["host_id"].as_str().unwrap();
    let (st, v) = s.get(&format!("/v1/admin/hosts/{host_id}"), &admin).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"]["status"], "running");
    assert_eq!(v["data"]["user_id"], seen["user_id"]);

    // Audit: the domain events name the token, and every tool call is recorded.
    let (_, ev) = s.get("/v1/admin/events?limit=1000", &admin).await;
    let events = ev["data"].as_array().unwrap();
    let by = |action: &str| {
        events
            .iter()
            .filter(|e| e["action"] == action)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(by("host.created")[0]["actor"], "token:agent");
    assert_eq!(by("user.created")[0]["actor"], "token:agent");
    let calls = by("mcp.tool_called");
    assert!(calls.len() >= 5, "{calls:?}");
    assert!(calls.iter().all(|e| e["actor"] == "token:agent"));
    assert!(
        calls
            .iter()
            .any(|e| e["details"]["tool"] == "host_get" && e["details"]["ok"] == false)
    );

    // A narrower token: the write tool is not listed, and a call to it is refused.
    let reader = token(&s, &admin, "reader", &["mcp:access", "host:read"]).await;
    let user_id = seen["user_id"].as_str().unwrap();
    let narrow = client(&mcp, &reader, "beyond-abilities", user_id).await;
    let tools: Vec<&str> = narrow["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tools.contains(&"hosts_list"), "{tools:?}");
    assert!(!tools.contains(&"host_create"), "{tools:?}");
    assert_eq!(narrow["host_create"], "refused", "{narrow}");
    assert!(
        narrow["host_create_error"]
            .as_str()
            .unwrap()
            .contains("host:write"),
        "{narrow}"
    );
    assert_eq!(narrow["hosts_listed"], 1, "{narrow}");
    let (_, v) = s
        .get(&format!("/v1/admin/hosts?user_id={user_id}"), &admin)
        .await;
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        1,
        "no second host: {v}"
    );

    // An operator's token: the rest of a host's and an account's life, through the SDK.
    for label in ["mcp-out", "twin", "twin"] {
        let (st, v) = s
            .post(
                "/v1/admin/egress-ips",
                &admin,
                json!({"label": label, "ip_address": "203.0.113.20", "tunnel_type": "proxy",
                    "proxy_config": {"type": "shadowsocks", "server": "192.0.2.1",
                        "server_port": 8388, "method": "aes-256-gcm",
                        "password": "ss-password-secret"}}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let operator = token(
        &s,
        &admin,
        "operator",
        &[
            "mcp:access",
            "host:read",
            "host:write",
            "user:read",
            "user:write",
            "task:read",
            "session:read",
            "egress:read",
        ],
    )
    .await;
    let short = seen["short_id"].as_str().unwrap();
    let op = client(&mcp, &operator, "operate", &format!("{short},mcpuser")).await;
    assert_eq!(op["docker_reachable"], true, "{op}");
    assert!(op["log_lines"].as_u64().unwrap() >= 1, "{op}");
    assert_eq!(op["suspend_task"], "succeeded", "{op}");
    assert_eq!(op["suspended"], "suspended", "{op}");
    assert_eq!(op["start_refused"], true, "{op}");
    assert!(
        op["start_error"].as_str().unwrap().contains("suspended"),
        "{op}"
    );
    assert_eq!(op["unsuspended"], "stopped", "{op}");
    assert_eq!(op["stopped_hosts"], json!([short]), "{op}");
    let kinds = op["task_kinds"].as_array().unwrap();
    assert!(
        kinds.contains(&json!("suspend")) && kinds.contains(&json!("create")),
        "{op}"
    );
    assert!(op["bad_status_fields"]["status"].is_array(), "{op}");
    assert_eq!(op["user_name"], "mcpuser", "{op}");
    assert_eq!(op["expires_at"], "2031-05-01T08:00:00Z", "{op}");
    assert_eq!(op["expires_never"], Value::Null, "{op}");
    assert_eq!(op["recordings"], 0, "{op}");
    // Egresses by label, secrets masked; a label two share is refused, naming both.
    assert_eq!(op["egress_label"], "mcp-out", "{op}");
    assert_eq!(op["egress_secret_shown"], false, "{op}");
    assert_eq!(op["twin_refused"], true, "{op}");
    assert!(
        op["twin_error"]
            .as_str()
            .unwrap()
            .contains("2 egresses are labelled `twin`"),
        "{op}"
    );
    assert_eq!(op["delete_task"], "succeeded", "{op}");
    let (st, _) = s.get(&format!("/v1/admin/hosts/{host_id}"), &admin).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "the account's host went with it");
    let (_, ev) = s
        .get("/v1/admin/events?action=user.expiry_set", &admin)
        .await;
    assert_eq!(ev["data"][0]["actor"], "token:operator", "{ev}");
}
