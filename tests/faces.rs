//! One core, three faces: the same scenario (create a user, create a host for them, stop it)
//! driven through the REST API, the CLI and MCP (the official Python SDK) writes the same rows,
//! the same tasks and the same events; only the actor differs, naming the face.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Backend, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Runs the CLI against the server's database; answers its JSON output.
fn cli(s: &Server, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--json")
        .env("SLUICE_DATA_DIR", &s.dir)
        .env(
            "DATABASE_URL",
            s.settings.store.database_url.as_deref().unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What a face left behind for one user: the host's status, the tasks' (kind, status, creator
/// face), and the events' actions about the user or the host, oldest first.
async fn trace(
    s: &Server,
    admin: &str,
    user_id: &str,
    host_id: &str,
) -> (Value, Vec<String>, Vec<String>, Vec<String>) {
    let (_, h) = s.get(&format!("/v1/admin/hosts/{host_id}"), admin).await;
    let (_, t) = s
        .get(&format!("/v1/admin/tasks?host_id={host_id}"), admin)
        .await;
    let mut tasks: Vec<String> = t["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{} {}", t["kind"], t["status"]))
        .collect();
    tasks.reverse();
    let mut actions = vec![];
    let mut actors = vec![];
    for q in [format!("user_id={user_id}"), format!("host_id={host_id}")] {
        let (_, e) = s
            .get(&format!("/v1/admin/events?limit=1000&{q}"), admin)
            .await;
        for ev in e["data"].as_array().unwrap().iter().rev() {
            let a = ev["action"].as_str().unwrap().to_string();
            if !actions.contains(&a) {
                actions.push(a);
                actors.push(ev["actor"].as_str().unwrap().to_string());
            }
        }
    }
    let row = json!({
        "status": h["data"]["status"], "memory_mb": h["data"]["memory_mb"],
        "cpus": h["data"]["cpus"], "pids_limit": h["data"]["pids_limit"],
        "egress": h["data"]["egress_ip_id"], "owned": h["data"]["user_id"] == json!(user_id),
    });
    (row, tasks, actions, actors)
}

async fn wait(s: &Server, admin: &str, task: &Value) {
    let t = s
        .wait_task_for(admin, task.as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(t["status"], "succeeded", "{t}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_cli_and_mcp_write_the_same_rows_tasks_and_events() {
    let s = Server::start(Backend::Sqlite).await;
    let admin = s.admin().await;

    // REST.
    let (st, u) = s
        .post("/v1/admin/users", &admin, json!({"username": "restuser"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{u}");
    let rest_user = u["data"]["id"].as_str().unwrap().to_string();
    let (_, h) = s
        .post("/v1/admin/hosts", &admin, json!({"user_id": rest_user}))
        .await;
    wait(&s, &admin, &h["data"]["task_id"]).await;
    let rest_host = h["data"]["id"].as_str().unwrap().to_string();
    let (_, stop) = s
        .post(
            &format!("/v1/admin/hosts/{rest_host}/stop"),
            &admin,
            json!({}),
        )
        .await;
    wait(&s, &admin, &stop["data"]["task_id"]).await;

    // CLI (the host named by its short id, as an operator would).
    let u = cli(&s, &["user", "create", "cliuser"]);
    let cli_user = u["id"].as_str().unwrap().to_string();
    let h = cli(&s, &["host", "create", "--user", &cli_user]);
    wait(&s, &admin, &h["task_id"]).await;
    let cli_host = h["id"].as_str().unwrap().to_string();
    let stop = cli(&s, &["host", "stop", h["short_id"].as_str().unwrap()]);
    wait(&s, &admin, &stop["task_id"]).await;

    // MCP, through the official SDK, with a token made for it.
    let (_, t) = s
        .post(
            "/v1/admin/tokens",
            &admin,
            json!({"name": "agent", "abilities": ["mcp:access", "user:write", "host:read", "host:write", "task:read"]}),
        )
        .await;
    let token = t["data"]["token"].as_str().unwrap().to_string();
    let url = format!("{}/mcp", s.base);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("/opt/sluice-judges/bin/python")
            .args([
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client.py"),
                &url,
                &token,
                "parity",
                "mcpuser",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mcp_user, mcp_host) = (
        m["user_id"].as_str().unwrap().to_string(),
        m["host_id"].as_str().unwrap().to_string(),
    );

    let rest = trace(&s, &admin, &rest_user, &rest_host).await;
    let cli = trace(&s, &admin, &cli_user, &cli_host).await;
    let mcp = trace(&s, &admin, &mcp_user, &mcp_host).await;
    assert_eq!(rest.0["status"], "stopped", "{:?}", rest.0);
    assert_eq!(rest.0, cli.0);
    assert_eq!(rest.0, mcp.0);
    assert_eq!(
        rest.1,
        vec!["\"create\" \"succeeded\"", "\"stop\" \"succeeded\""]
    );
    assert_eq!(rest.1, cli.1);
    assert_eq!(rest.1, mcp.1);
    assert_eq!(rest.2, cli.2, "REST {:?} CLI {:?}", rest.2, cli.2);
    assert_eq!(rest.2, mcp.2, "REST {:?} MCP {:?}", rest.2, mcp.2);
    for want in ["user.created", "host.created", "host.stop_requested"] {
        assert!(rest.2.iter().any(|a| a == want), "{want}: {:?}", rest.2);
    }
    // Who did it is named per face.
    let first = |t: &(Value, Vec<String>, Vec<String>, Vec<String>)| t.3[0].clone();
    assert_eq!(first(&rest), "admin:admin");
    assert!(first(&cli).starts_with("cli:"), "{:?}", cli.3);
    assert_eq!(first(&mcp), "token:agent");
}
