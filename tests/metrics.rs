//! `/metrics` as Prometheus would scrape it, judged by the Prometheus client's strict
//! OpenMetrics parser (PyPI's `prometheus-client`), from a real host behind the lab's
//! WireGuard egress: the text parses, the egress's byte and packet counts move when the host
//! sends traffic, the handshake age and the host's status show, and requests, tasks and
//! password failures are counted. On the API's address it takes `metrics:read`; on
//! `SLUICE_METRICS_ADDR` it takes nothing.

mod common;
mod lab;
mod rig;

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use rig::{exec, rig, wait_output};
use serde_json::{Value, json};

const PYTHON: &str = "/opt/sluice-judges/bin/python";

/// Parses an exposition with the strict parser; answers its samples.
fn parse(text: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new(PYTHON)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/metrics/parse.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the PyPI judges are installed (scripts/install-deps.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The value of the sample named `name` whose labels include `labels`, if any.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

async fn scrape(s: &common::Server, token: &str) -> Vec<Value> {
    let resp = s
        .http
        .get(format!("{}/metrics", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    parse(&resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_a_hosts_traffic() {
    let r = rig("metra", 512).await;
    let (s, admin) = (&r.s, &r.admin);
    let echo = r.lab.echo();
    wait_output(
        &r.host,
        &format!("curl -s --max-time 5 -o /dev/null -w '%{{http_code}}' http://{echo}/"),
        "200",
        Duration::from_secs(60),
    );

    // Only credentials holding metrics:read.
    let (st, v) = s
        .post(
            "/v1/admin/tokens",
            admin,
            json!({"name": "prometheus", "abilities": ["metrics:read"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let token = v["data"]["token"].as_str().unwrap().to_string();
    let (_, v) = s
        .post(
            "/v1/admin/tokens",
            admin,
            json!({"name": "reader", "abilities": ["host:read"]}),
        )
        .await;
    let other = v["data"]["token"].as_str().unwrap().to_string();
    let anonymous = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.get("/metrics", &other).await.0, StatusCode::FORBIDDEN);

    let egress = r.egress.as_str();
    let before = scrape(s, &token).await;
    let out_before = value(
        &before,
        "sluice_egress_session_bytes",
        &[("egress", egress), ("direction", "out")],
    )
    .expect("the bound host's session is shown");
    let in_before = value(
        &before,
        "sluice_egress_session_bytes",
        &[("egress", egress), ("direction", "in")],
    )
    .unwrap();
    let packets_before = value(
        &before,
        "sluice_egress_session_packets",
        &[("egress", egress), ("direction", "out")],
    )
    .unwrap();

    // 1 MiB down through the tunnel.
    let (ok, out) = exec(
        &r.host,
        &format!(
            "curl -s --max-time 20 -o /dev/null -w '%{{size_download}}' http://{echo}/bytes/1048576"
        ),
    );
    assert_eq!(out.trim(), "1048576");
    assert!(ok, "{out}");
    // A wrong password at the API door.
    let resp = s
        .http
        .post(format!("{}/v1/auth/login", s.base))
        .json(&json!({"username": "metra", "password": "not-the-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let after = scrape(s, &token).await;
    let out_after = value(
        &after,
        "sluice_egress_session_bytes",
        &[("egress", egress), ("direction", "out")],
    )
    .unwrap();
    let in_after = value(
        &after,
        "sluice_egress_session_bytes",
        &[("egress", egress), ("direction", "in")],
    )
    .unwrap();
    assert!(
        in_after - in_before >= 1_048_576.0,
        "{in_before} -> {in_after}"
    );
    assert!(out_after > out_before, "{out_before} -> {out_after}");
    assert!(
        value(
            &after,
            "sluice_egress_session_packets",
            &[("egress", egress), ("direction", "out")]
        )
        .unwrap()
            > packets_before
    );
    assert_eq!(
        value(&after, "sluice_egress_sessions", &[("egress", egress)]),
        Some(1.0)
    );
    let age = value(
        &after,
        "sluice_wireguard_handshake_age_seconds",
        &[("egress", egress)],
    )
    .expect("a handshake happened");
    assert!((0.0..180.0).contains(&age), "{age}");
    assert_eq!(
        value(
            &after,
            "sluice_egress_info",
            &[("egress", egress), ("tunnel_type", "wireguard")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&after, "sluice_hosts", &[("status", "running")]),
        Some(1.0)
    );
    assert_eq!(
        value(&after, "sluice_hosts", &[("status", "error")]),
        Some(0.0)
    );
    assert_eq!(value(&after, "sluice_database_up", &[]), Some(1.0));
    assert!(
        value(
            &after,
            "sluice_tasks_total",
            &[("kind", "create"), ("outcome", "succeeded")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        value(
            &after,
            "sluice_password_failures_total",
            &[("target", "account")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        value(
            &after,
            "sluice_http_requests_total",
            &[
                ("route", "/v1/admin/tokens"),
                ("method", "POST"),
                ("code", "201")
            ]
        )
        .unwrap()
            >= 2.0
    );
    assert!(
        value(
            &after,
            "sluice_http_request_duration_seconds_count",
            &[("route", "/metrics")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(value(&after, "sluice_process_open_fds", &[]).unwrap() > 0.0);
    assert!(value(&after, "sluice_process_resident_memory_bytes", &[]).unwrap() > 1e6);
    // No label carries a user, a host or an address.
    for sample in &after {
        let labels = sample["labels"].to_string();
        for leak in ["metra", r.host["short_id"].as_str().unwrap(), "127.0.0.1"] {
            assert!(!labels.contains(leak), "{leak} in {sample}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_address_serves_without_credentials() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = common::Server::start_configured(common::Backend::Sqlite, |c| {
        c.metrics_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    })
    .await;
    let resp = s
        .http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let samples = parse(&resp.text().await.unwrap());
    assert_eq!(
        value(&samples, "sluice_hosts", &[("status", "running")]),
        Some(0.0)
    );
    // Only /metrics there: the API is not reachable through it.
    let resp = s
        .http
        .get(format!("http://127.0.0.1:{port}/v1/admin/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
