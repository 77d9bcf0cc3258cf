//! WireGuard egress from inside real containers, through a lab of network namespaces with
//! wireguard-go as the server (tests/lab). Needs Docker, the base image, wireguard-go, wg,
//! iptables and iproute2 (scripts/test.sh installs them); never skipped.

mod common;
mod lab;
mod rig;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use common::docker::{Cleanup, docker, spawn_serve};
use lab::Lab;
use reqwest::{Method, StatusCode};
use rig::{
    Capture, Rig, exec, lab_egress, only_wireguard_leaves, rig, start_server, start_server_probing,
    wait_output, ways_around,
};
use serde_json::{Value, json};
use sluice::runtime::docker::container_name;

#[test]
fn new_wireguard_keys_move_a_live_host_without_restarting_it() {
    on_a_runtime_ended_within_seconds(
        new_wireguard_keys_move_a_live_host_without_restarting_it_run(),
    );
}

/// The provider issues new keys: the egress is changed through the API, and the live host
/// moves onto them (a new handshake with the new key, which the server now requires) with its
/// container and processes untouched.
async fn new_wireguard_keys_move_a_live_host_without_restarting_it_run() {
    let r = rig("rekeyd", 512).await;
    let curl = format!("curl -s --max-time 5 http://{}/", r.lab.echo());
    wait_output(&r.host, &curl, lab::EXIT_WG0, Duration::from_secs(60));
    let (_, v) =
        r.s.get(&format!("/v1/admin/egress-ips/{}", r.egress), &r.admin)
            .await;
    let old_public = v["data"]["wg_client_public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let container = container_name(r.host["short_id"].as_str().unwrap());
    let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &container]).1;
    let (ok, pid) = exec(&r.host, "sleep 600 >/dev/null 2>&1 & echo $!");
    assert!(ok, "{pid}");

    let new_private = sluice::egress::settings::generate_private_key();
    let new_public = sluice::egress::settings::public_key_of(&new_private).unwrap();
    r.lab.replace_wireguard_peer(0, &old_public, &new_public);
    let (st, v) =
        r.s.call(
            Method::PUT,
            &format!("/v1/admin/egress-ips/{}", r.egress),
            Some(&r.admin),
            Some(json!({"wg_private_key": new_private})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["wg_client_public_key"], new_public.as_str());
    assert_eq!(v["data"]["wg_private_key"], "********");

    // Traffic flows again through a handshake with the new key.
    let deadline = Instant::now() + Duration::from_secs(60);
    while r.lab.wireguard_handshake(0, &new_public) == 0 {
        assert!(Instant::now() < deadline, "no handshake with the new key");
        let _ = exec(&r.host, &curl);
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_output(&r.host, &curl, lab::EXIT_WG0, Duration::from_secs(30));
    // The same container and the same processes: nothing restarted.
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.StartedAt}}", &container]).1,
        started
    );
    let (alive, out) = exec(&r.host, &format!("kill -0 {}", pid.trim()));
    assert!(alive, "the host's process is gone: {out}");
    let (_, v) =
        r.s.get(
            &format!(
                "/v1/admin/tasks?kind=bind_egress&host_id={}",
                r.host["id"].as_str().unwrap()
            ),
            &r.admin,
        )
        .await;
    assert_eq!(
        v["data"][0]["status"], "succeeded",
        "the move is a task of its own: {v}"
    );
}

#[test]
fn a_host_leaves_only_through_its_wireguard_egress_and_fails_closed_without_it() {
    on_a_runtime_ended_within_seconds(
        a_host_leaves_only_through_its_wireguard_egress_and_fails_closed_without_it_run(),
    );
}

async fn a_host_leaves_only_through_its_wireguard_egress_and_fails_closed_without_it_run() {
    let Rig {
        mut lab,
        tmp,
        url,
        mut s,
        runtime,
        _cleanup,
        admin,
        egress: _egress0,
        host,
    } = rig("wendy", 256).await;
    let (_, h) = s
        .get(
            &format!("/v1/admin/hosts/{}", host["id"].as_str().unwrap()),
            &admin,
        )
        .await;
    assert_eq!(h["data"]["status"], "running", "{h}");

    // HTTP and DNS from inside the container leave through the tunnel's exit.
    let curl = format!("curl -s --max-time 5 http://{}/", lab.echo());
    wait_output(&host, &curl, lab::EXIT_WG0, Duration::from_secs(20));
    let (ok, out) = exec(&host, "dig +short +time=3 +tries=1 whoami.lab.test A");
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        lab::EXIT_WG0,
        "the resolver saw the egress side"
    );
    assert!(
        lab.resolvers_for("whoami.lab.test")
            .iter()
            .all(|ip| ip.to_string() == lab::EXIT_WG0)
    );
    let (_, resolv) = exec(&host, "cat /etc/resolv.conf");
    assert!(
        resolv.contains(&format!("nameserver {}", lab.dns())),
        "{resolv}"
    );

    // Bulk both ways through the batched data plane (TUN offloads, UDP GSO and GRO): 50 MiB
    // arrive intact, and iperf3 moves data up and down (a packet split or coalesced with a
    // wrong checksum would be dropped by the receiving kernel and stall the transfer).
    let n = 50 * 1024 * 1024;
    let (ok, sum) = exec(
        &host,
        &format!(
            "curl -s --max-time 120 http://{}/bytes/{n} | sha256sum",
            lab.echo()
        ),
    );
    assert!(ok, "{sum}");
    assert_eq!(
        sum.split_whitespace().next(),
        Some(sha256_hex(&lab::bulk(0, n)).as_str()),
        "50 MiB through WireGuard"
    );
    lab.start_iperf3();
    let pid = common::docker::container_pid(host["short_id"].as_str().unwrap());
    for reverse in [false, true] {
        let mut iperf = Command::new("nsenter");
        iperf
            .args(["-t", pid.as_str(), "-n", "iperf3", "-c", &lab.echo()])
            .args(["-t", "2", "-J", "--connect-timeout", "5000"]);
        if reverse {
            iperf.arg("-R");
        }
        let out = iperf.output().unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let bytes = report["end"]["sum_received"]["bytes"]
            .as_f64()
            .unwrap_or(0.0);
        assert!(
            bytes >= 1024.0 * 1024.0,
            "iperf3 {} through WireGuard moved {bytes} bytes: {}",
            if reverse { "down" } else { "up" },
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // Hot swap to a second egress: a new exit address, the same container.
    let started = docker(&[
        "inspect",
        "-f",
        "{{.State.StartedAt}}",
        &container_name(host["short_id"].as_str().unwrap()),
    ])
    .1;
    let egress1 = lab_egress(&s, &admin, &mut lab, 1).await;
    let binding = h["data"]["binding_id"].as_str().unwrap().to_string();
    let (st, v) = s
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/admin/bindings/{binding}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    s.wait_task(&admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    // Unbound: no route at all, so nothing gets out.
    let (ok, out) = exec(&host, &curl);
    assert!(!ok, "traffic left without an egress: {out}");
    let (st, v) = s
        .post(
            "/v1/admin/bindings",
            &admin,
            json!({"host_id": host["id"], "egress_ip_id": egress1}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let task = s
        .wait_task(&admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "succeeded", "{task}");
    wait_output(&host, &curl, lab::EXIT_WG1, Duration::from_secs(20));
    let started_after = docker(&[
        "inspect",
        "-f",
        "{{.State.StartedAt}}",
        &container_name(host["short_id"].as_str().unwrap()),
    ])
    .1;
    assert_eq!(started, started_after, "the container was restarted");

    // Kill switch: Sluice goes away, the TUN with it; nothing gets out. After a restart the
    // reconciler attaches the host again with no human action.
    s.stop().await;
    drop(runtime);
    let (ok, out) = exec(&host, &curl);
    assert!(!ok, "traffic left while Sluice was down: {out}");
    let (s2, runtime2) = start_server(tmp.path(), &url, &lab).await;
    let _cleanup2 = Cleanup(runtime2.instance().to_string());
    wait_output(&host, &curl, lab::EXIT_WG1, Duration::from_secs(60));
    let admin = s2.admin().await;
    assert!(
        s2.actions(&admin)
            .await
            .contains(&"host.bind_requested".to_string())
    );

    // The WireGuard server dies: traffic fails (it does not fall back to anything).
    lab.stop_wireguard();
    let (ok, out) = exec(&host, &curl);
    assert!(!ok, "traffic left with the WireGuard server down: {out}");
}

#[test]
fn the_egress_test_proves_exit_ip_and_dns_and_catches_a_wrong_address_and_a_leak() {
    on_a_runtime_ended_within_seconds(
        the_egress_test_proves_exit_ip_and_dns_and_catches_a_wrong_address_and_a_leak_run(),
    );
}

async fn the_egress_test_proves_exit_ip_and_dns_and_catches_a_wrong_address_and_a_leak_run() {
    let mut lab = Lab::new();
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(common::Backend::Sqlite, tmp.path()).await;
    let (s, runtime) = start_server(tmp.path(), &url, &lab).await;
    let _cleanup = Cleanup(runtime.instance().to_string());
    let admin = s.admin().await;
    let egress = lab_egress(&s, &admin, &mut lab, 0).await;

    // Unbound: through a throwaway namespace of its own.
    let (st, v) = s
        .post(
            &format!("/v1/admin/egress-ips/{egress}/test"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = &v["data"];
    assert_eq!(r["status"], "passed", "{r}");
    assert_eq!(r["checks"]["exit_ip"]["observed"], lab::EXIT_WG0);
    assert_eq!(r["checks"]["exit_ip"]["expected"], lab::EXIT_WG0);
    assert_eq!(r["checks"]["dns_leak"]["resolvers"], json!([lab::EXIT_WG0]));
    assert_eq!(r["checks"]["dns_leak"]["direct_address"], lab::EXIT_DIRECT);
    assert!(r["checks"]["connectivity"]["latency_ms"].as_u64().is_some());
    // Kept as the egress's last result, with an event.
    let (_, e) = s
        .get(&format!("/v1/admin/egress-ips/{egress}"), &admin)
        .await;
    assert_eq!(e["data"]["last_test"]["status"], "passed");
    assert!(
        s.actions(&admin)
            .await
            .contains(&"egress.tested".to_string())
    );
    // The queries reached the whoami server from the egress side only.
    let seen = lab.resolvers_for("whoami.lab.test");
    assert!(
        !seen.is_empty() && seen.iter().all(|ip| ip.to_string() == lab::EXIT_WG0),
        "{seen:?}"
    );

    // Two tests of one egress at once take turns, and both pass.
    let path = format!("/v1/admin/egress-ips/{egress}/test");
    let (a, b) = tokio::join!(
        s.post(&path, &admin, json!({})),
        s.post(&path, &admin, json!({}))
    );
    assert_eq!(
        (
            a.1["data"]["status"].as_str(),
            b.1["data"]["status"].as_str()
        ),
        (Some("passed"), Some("passed")),
        "{a:?} {b:?}"
    );

    // The same from the command line, with its exit code.
    let cli = |lab: &Lab| {
        // Bounded: a hang fails the test (exit 124) instead of stalling the suite.
        Command::new("timeout")
            .args(["180", env!("CARGO_BIN_EXE_sluice")])
            .args(["egress", "test", "--json", &egress])
            .env("SLUICE_DATA_DIR", tmp.path())
            .env("DATABASE_URL", &url)
            .env("SLUICE_PROBE_URL", format!("http://{}/", lab.echo()))
            .env("SLUICE_PROBE_IP_URLS", format!("http://{}/", lab.echo()))
            .env("SLUICE_PROBE_DNS_NAME", "*.whoami.lab.test")
            .output()
            .unwrap()
    };
    let out = cli(&lab);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "passed");
    assert_eq!(report["checks"]["exit_ip"]["observed"], lab::EXIT_WG0);

    // A wrong declared address fails the exit-IP check, and is not rewritten.
    let (st, _) = s
        .call(
            reqwest::Method::PUT,
            &format!("/v1/admin/egress-ips/{egress}"),
            Some(&admin),
            Some(json!({"ip_address": "203.0.113.99"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, v) = s
        .post(
            &format!("/v1/admin/egress-ips/{egress}/test"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(v["data"]["status"], "failed", "{v}");
    assert_eq!(v["data"]["checks"]["exit_ip"]["passed"], false);
    assert_eq!(v["data"]["checks"]["exit_ip"]["observed"], lab::EXIT_WG0);
    assert_eq!(v["data"]["checks"]["exit_ip"]["expected"], "203.0.113.99");
    let (_, e) = s
        .get(&format!("/v1/admin/egress-ips/{egress}"), &admin)
        .await;
    assert_eq!(e["data"]["ip_address"], "203.0.113.99");
    let out = cli(&lab);
    assert_eq!(out.status.code(), Some(7), "a failed check exits 7");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checks"]["exit_ip"]["passed"], false, "{report}");
    let (st, _) = s
        .call(
            reqwest::Method::PUT,
            &format!("/v1/admin/egress-ips/{egress}"),
            Some(&admin),
            Some(json!({"ip_address": lab::EXIT_WG0})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    // Bound to a running host: the same checks from inside its container, on its real path.
    let (uid, _) = s.user(&admin, "xena").await;
    let host = s
        .host(
            &admin,
            &uid,
            json!({"egress_ip_id": egress, "memory_mb": 128}),
        )
        .await;
    let hid = host["id"].as_str().unwrap();
    let (st, v) = s
        .post(
            &format!("/v1/admin/hosts/{hid}/egress-check"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["status"], "passed", "{v}");
    let (st, v) = s
        .post(
            &format!("/v1/admin/egress-ips/{egress}/test"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v["data"]["status"], "passed",
        "through the host's own session: {v}"
    );
    // The same two from the command line: the running server holds the host's session, so
    // the CLI asks it through the control socket (a second peer with the egress's keys would
    // cut the host off).
    let out = cli(&lab);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checks"]["exit_ip"]["observed"], lab::EXIT_WG0);
    let short = host["short_id"].as_str().unwrap();
    let out = Command::new("timeout")
        .args(["180", env!("CARGO_BIN_EXE_sluice")])
        .args(["host", "egress-check", short])
        .env("SLUICE_DATA_DIR", tmp.path())
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains(lab::EXIT_WG0), "{table}");
    let (_, ev) = s
        .get(
            &format!("/v1/admin/events?action=host.egress_checked&host_id={hid}"),
            &admin,
        )
        .await;
    assert!(
        ev["data"][0]["actor"].as_str().unwrap().starts_with("cli:"),
        "{ev}"
    );
    // The host still gets out after the tests (its session was used, not stolen).
    let (_, out) = exec(
        &host,
        &format!("curl -s --max-time 5 http://{}/", lab.echo()),
    );
    assert_eq!(out.trim(), lab::EXIT_WG0);

    // Test the test: DNS pointed around the tunnel (queried from Sluice's own path) is a leak.
    let targets = sluice::probe::Targets {
        url: format!("http://{}/", lab.echo()),
        ip_urls: vec![format!("http://{}/", lab.echo())],
        dns_name: "*.whoami.lab.test".into(),
    };
    let around = sluice::probe::Path {
        ns: None,
        dns: Some(lab.dns().parse().unwrap()),
        names_at_egress: false,
    };
    let report = sluice::probe::run(
        &targets,
        &around,
        &sluice::probe::Path::direct(),
        lab::EXIT_WG0,
    )
    .await;
    assert_eq!(report.status, "failed");
    assert!(!report.checks.dns_leak.passed);
    assert_eq!(
        report.checks.dns_leak.leaked,
        vec![lab::EXIT_DIRECT.to_string()]
    );
    assert!(
        !report.checks.exit_ip.passed,
        "the direct path exits from the host's own address"
    );

    // A host without an egress has nothing to check.
    let (uid2, _) = s.user(&admin, "yuri").await;
    let bare = s.host(&admin, &uid2, json!({"memory_mb": 128})).await;
    let (st, v) = s
        .post(
            &format!(
                "/v1/admin/hosts/{}/egress-check",
                bare["id"].as_str().unwrap()
            ),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
}

#[test]
fn nothing_leaves_a_host_but_wireguard_to_its_endpoint() {
    on_a_runtime_ended_within_seconds(nothing_leaves_a_host_but_wireguard_to_its_endpoint_run());
}

async fn nothing_leaves_a_host_but_wireguard_to_its_endpoint_run() {
    let Rig {
        lab,
        tmp,
        host,
        _cleanup,
        s: _s,
        runtime: _runtime,
        admin: _admin,
        egress: _egress,
        url: _url,
    } = rig("zoe", 128).await;
    only_wireguard_leaves(&host, &lab, tmp.path(), || {});
}

#[test]
fn a_tunnel_keeps_working_across_a_rekey() {
    on_a_runtime_ended_within_seconds(a_tunnel_keeps_working_across_a_rekey_run());
}

async fn a_tunnel_keeps_working_across_a_rekey_run() {
    let Rig {
        lab,
        tmp: _tmp,
        url: _url,
        s: _s,
        runtime: _runtime,
        _cleanup,
        admin: _admin,
        egress: _egress,
        host,
    } = rig("rex", 128).await;
    let curl = format!("curl -s --max-time 5 http://{}/", lab.echo());
    wait_output(&host, &curl, lab::EXIT_WG0, Duration::from_secs(20));
    let handshake = || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.exit_ns(),
                "wg",
                "show",
                &format!("{}w0", lab.prefix),
                "latest-handshakes",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse::<u64>()
            .unwrap_or(0)
    };
    let first = handshake();
    assert!(first > 0);
    // WireGuard rekeys a session after 120 s; keep traffic flowing across that.
    let started = Instant::now();
    let mut failures = 0;
    while started.elapsed() < Duration::from_secs(150) {
        let (_, out) = exec(&host, &curl);
        if out.trim() != lab::EXIT_WG0 {
            failures += 1;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert_eq!(failures, 0, "requests failed across the rekey");
    let last = handshake();
    assert!(
        last > first,
        "no new handshake after 150 s ({first} -> {last})"
    );
    wait_output(&host, &curl, lab::EXIT_WG0, Duration::from_secs(10));
}

#[test]
fn after_a_kill_9_or_a_lost_tun_traffic_stops_then_resumes_on_its_own() {
    on_a_runtime_ended_within_seconds(
        after_a_kill_9_or_a_lost_tun_traffic_stops_then_resumes_on_its_own_run(),
    );
}

async fn after_a_kill_9_or_a_lost_tun_traffic_stops_then_resumes_on_its_own_run() {
    // Set up through an in-process server, then hand the data over to the real binary.
    let Rig {
        lab,
        tmp,
        url,
        mut s,
        runtime,
        _cleanup,
        admin: _admin,
        egress: _egress,
        host,
    } = rig("kay", 128).await;
    let dir = tmp.path();
    s.stop().await;
    drop(runtime);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let curl = format!("curl -s --max-time 4 http://{}/", lab.echo());
    let serve = spawn_serve(dir, Some(&url), port);
    // Started, the reconciler attaches the running host.
    wait_output(&host, &curl, lab::EXIT_WG0, Duration::from_secs(90));

    // kill -9: the TUN dies with the process; nothing gets out.
    unsafe { libc::kill(serve.0.id() as i32, libc::SIGKILL) };
    drop(serve);
    let capture = Capture::start(&lab.host_link(), dir);
    for _ in 0..3 {
        let (ok, out) = exec(&host, &curl);
        assert!(!ok, "traffic left while Sluice was dead: {out}");
    }
    let (ok, _) = exec(
        &host,
        "dig +time=2 +tries=1 whoami.lab.test A | grep -q 'ANSWER SECTION'",
    );
    assert!(!ok, "DNS answered while Sluice was dead");
    // The WireGuard server may still retransmit to the dead tunnel's port for a moment, and the
    // host's kernel answers that the port is gone: neither carries anything of the container.
    let endpoint = lab.endpoint(0).replace(':', ".");
    let k = lab.k;
    let packets: Vec<String> = capture
        .stop()
        .into_iter()
        .filter(|p| {
            let from_server = p.contains(&format!(" {endpoint} > 198.18.{k}.1."));
            let port_gone = p.contains(&format!(" 198.18.{k}.1 > 198.18.{k}.2: ICMP "))
                && p.contains("udp port")
                && p.contains("unreachable");
            !(from_server || port_gone)
        })
        .collect();
    assert!(
        packets.is_empty(),
        "packets left the host while Sluice was dead: {packets:#?}"
    );
    let (_, links) = exec(&host, "cat /proc/net/dev");
    assert!(
        !links.contains("sluice0"),
        "the TUN outlived the process: {links}"
    );

    // Back up: no human action needed.
    let _serve = spawn_serve(dir, Some(&url), port);
    wait_output(&host, &curl, lab::EXIT_WG0, Duration::from_secs(90));

    // The TUN deleted from under the engine: traffic stops, then the reconciler brings the
    // data plane back.
    let pid = common::docker::container_pid(host["short_id"].as_str().unwrap());
    let out = Command::new("nsenter")
        .args(["-t", pid.as_str(), "-n", "ip", "link", "del", "sluice0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, _) = exec(&host, &curl);
    assert!(!ok, "traffic left without a TUN");
    wait_output(&host, &curl, lab::EXIT_WG0, Duration::from_secs(90));
}

/// The user id the lab's v2ray knows.
const LAB_UUID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";

/// The sing-box outbound for the lab's proxy server of `kind` at `server`. The lab's TLS
/// servers have a self-signed certificate, hence `insecure`; the name still goes as SNI.
fn lab_outbound(kind: &str, server: &(String, u16)) -> Value {
    let tls = |name: &str| json!({"enabled": true, "server_name": name, "insecure": true});
    let vmess = |security: &str| {
        json!({"type": "vmess", "server": server.0, "server_port": server.1,
            "uuid": LAB_UUID, "security": security, "alter_id": 0})
    };
    match kind {
        "shadowsocks" => json!({"type": "shadowsocks", "server": server.0, "server_port": server.1,
            "method": "chacha20-ietf-poly1305", "password": "lab-pass"}),
        "trojan" => json!({"type": "trojan", "server": server.0, "server_port": server.1,
            "password": "lab-pass", "tls": tls("trojan.lab.test")}),
        "https" => json!({"type": "http", "server": server.0, "server_port": server.1,
            "username": "labuser", "password": "lab-pass", "tls": tls("https-proxy.lab.test")}),
        "vmess" => vmess("chacha20-poly1305"),
        "vmess-tls" => {
            let mut v = vmess("auto");
            v["tls"] = tls("vmess.lab.test");
            v
        }
        "vmess-none" => vmess("none"),
        "vmess-zero" => vmess("zero"),
        "socks-udp" => json!({"type": "socks", "server": server.0, "server_port": server.1}),
        "http-443" => json!({"type": "http", "server": server.0, "server_port": server.1,
            "username": "labuser", "password": "lab-pass"}),
        _ => json!({"type": kind, "server": server.0, "server_port": server.1,
            "username": "labuser", "password": "lab-pass"}),
    }
}

/// Starts every proxy server of the lab, and returns each kind with the server it dials.
fn start_lab_proxies(lab: &mut Lab) -> Vec<(&'static str, (String, u16))> {
    let socks = lab.start_socks(Some(("labuser", "lab-pass")));
    let http = lab.start_http_proxy(Some(("labuser", "lab-pass")));
    let https = lab.start_https_front();
    let ss = lab.start_shadowsocks("chacha20-ietf-poly1305", "lab-pass");
    let trojan = lab.start_trojan("lab-pass");
    let (ip, vmess, vmess_tls, socks_udp) = lab.start_v2ray(LAB_UUID);
    vec![
        ("socks", socks),
        ("http", http),
        ("https", https),
        ("shadowsocks", ss),
        ("trojan", trojan),
        ("vmess", (ip.clone(), vmess)),
        ("vmess-tls", (ip.clone(), vmess_tls)),
        ("vmess-none", (ip.clone(), vmess)),
        ("vmess-zero", (ip.clone(), vmess)),
        // v2ray's SOCKS5 server, which (unlike microsocks) has UDP ASSOCIATE.
        ("socks-udp", (ip, socks_udp)),
    ]
}

/// Creates a proxy egress of `kind` for the lab's server at `server`, declared with `exit`;
/// its DNS server is the lab's whoami server.
async fn proxy_egress(
    s: &Server,
    admin: &str,
    lab: &Lab,
    kind: &str,
    server: (String, u16),
    exit: &str,
) -> String {
    let (st, v) = s
        .post(
            "/v1/admin/egress-ips",
            admin,
            json!({
                "label": format!("lab-{kind}"),
                "ip_address": exit,
                "tunnel_type": "proxy",
                "proxy_dns_server": lab.dns(),
                "proxy_config": lab_outbound(kind, &server),
            }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // The secret (a password, or VMess's uuid) is masked and appears nowhere in the answer.
    let secret = if kind.starts_with("vmess") {
        "uuid"
    } else {
        "password"
    };
    assert_eq!(v["data"]["proxy_config"][secret], "********", "{v}");
    assert!(!v.to_string().contains("lab-pass") && !v.to_string().contains(LAB_UUID));
    assert_eq!(v["data"]["proxy_dns_server"], lab.dns());
    v["data"]["id"].as_str().unwrap().to_string()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Runs `cmd` in the namespace of a throwaway session of `outbound` (Sluice's data plane with
/// no container) and answers its output.
async fn through_throwaway(lab: &Lab, outbound: &Value, cmd: &str) -> String {
    let config = serde_json::from_value(outbound.clone()).unwrap();
    let settings = sluice::egress::EgressSettings::Proxy {
        proxy_config: config,
        dns_server: lab.dns(),
        allowed_ranges: vec![],
    };
    let engine = sluice::egress::engine::Engine::new();
    let session = engine.throwaway(&settings).await.expect("session");
    sh_in(session.ns.path(), cmd.to_string()).await
}

/// Runs `cmd` with `sh -c` in the network namespace at `ns_path` and answers its output.
async fn sh_in(ns_path: String, cmd: String) -> String {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("nsenter")
            .arg(format!("--net={ns_path}"))
            .args(["sh", "-c", &cmd])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every outbound and option against its real server, straight through the data plane (no
/// container): each VMess security, and each protocol with a wrong secret, which must get
/// nothing through.
#[test]
fn every_outbound_speaks_to_its_real_server_and_a_wrong_secret_gets_nothing_through() {
    on_a_runtime_ended_within_seconds(
        every_outbound_speaks_to_its_real_server_and_a_wrong_secret_gets_nothing_through_run(),
    );
}

async fn every_outbound_speaks_to_its_real_server_and_a_wrong_secret_gets_nothing_through_run() {
    let mut lab = Lab::new();
    let servers = start_lab_proxies(&mut lab);
    let echo = lab.echo();
    let n = 5 * 1024 * 1024;
    // By address, by name (the name travels to the proxy, which resolves it), and in bulk.
    let want = format!(
        "{0}\n{0}\n{1}",
        lab::EXIT_PROXY,
        sha256_hex(&lab::bulk(0, n))
    );
    let name = lab::ECHO_NAME;
    let cmd = format!(
        "curl -s --max-time 10 http://{echo}/; echo; curl -s --max-time 10 http://{name}/; echo; curl -s --max-time 30 http://{echo}/bytes/{n} | sha256sum | cut -d' ' -f1"
    );
    let (banner_ip, banner_port) = lab.start_banner();
    let banner =
        format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{banner_ip}/{banner_port}; head -1 <&3'");
    for (kind, server) in &servers {
        let outbound = lab_outbound(kind, server);
        let before = lab.resolvers_for(name).len();
        let out = through_throwaway(&lab, &outbound, &cmd).await;
        assert_eq!(out.trim(), want, "{kind}");
        // The name was looked up by the proxy server (from its side of the lab), not by Sluice.
        let seen = lab.resolvers_for(name);
        assert!(
            seen.len() > before,
            "{kind}: the proxy did not resolve {name}"
        );
        assert!(
            seen.iter().all(|ip| ip.to_string() == lab::EXIT_PROXY),
            "{kind}: {name} was resolved from {seen:?}"
        );
        // A destination that speaks first is heard without the container writing anything.
        let out = through_throwaway(&lab, &outbound, &banner).await;
        assert_eq!(out.trim(), "sluice-lab-banner", "{kind}");

        if *kind == "socks-udp" {
            continue; // a server without logins: no secret to get wrong
        }
        let mut wrong = outbound.clone();
        if kind.starts_with("vmess") {
            wrong["uuid"] = json!("0e0b0f4e-5a6d-4c43-9c2a-3f1a7a9f6b21");
        } else {
            wrong["password"] = json!("not-the-pass");
        }
        let out = through_throwaway(
            &lab,
            &wrong,
            &format!("curl -s --max-time 5 http://{echo}/"),
        )
        .await;
        assert!(
            !out.contains(lab::EXIT_PROXY),
            "{kind} with a wrong secret got through: {out}"
        );
    }
}

/// UDP leaves through the proxies whose protocol carries it (SOCKS5 with UDP ASSOCIATE,
/// Shadowsocks, Trojan, VMess), and goes nowhere with the rest (microsocks has no UDP
/// ASSOCIATE; HTTP and VMess "zero" carry none).
#[test]
fn udp_goes_through_the_proxies_that_carry_it_and_nowhere_with_the_rest() {
    on_a_runtime_ended_within_seconds(
        udp_goes_through_the_proxies_that_carry_it_and_nowhere_with_the_rest_run(),
    );
}

async fn udp_goes_through_the_proxies_that_carry_it_and_nowhere_with_the_rest_run() {
    let mut lab = Lab::new();
    let servers = start_lab_proxies(&mut lab);
    let dns = lab.dns();
    for (kind, server) in &servers {
        let carries = [
            "shadowsocks",
            "trojan",
            "vmess",
            "vmess-tls",
            "vmess-none",
            "socks-udp",
        ]
        .contains(kind);
        let name = format!("udp-{kind}.whoami.lab.test");
        // Twenty queries, each from its own source port: twenty associations (two where
        // nothing can come back: each waits out its timeouts). UDP may lose a datagram on a
        // loaded machine, so each query is tried twice, as resolvers do.
        let count = if carries { 20 } else { 2 };
        let cmd = format!(
            "for i in $(seq {count}); do dig +short +time=2 +tries=2 @{dns} $i.{name} A; done"
        );
        let out = through_throwaway(&lab, &lab_outbound(kind, server), &cmd).await;
        let answers: Vec<&str> = out.lines().filter(|l| !l.starts_with(';')).collect();
        let seen = lab.resolvers_for(&name);
        if carries {
            assert_eq!(answers, vec![lab::EXIT_PROXY; 20], "{kind}: {out}");
            // A retried query may reach the server twice.
            assert!((20..=40).contains(&seen.len()), "{kind}: {seen:?}");
            assert!(
                seen.iter().all(|ip| ip.to_string() == lab::EXIT_PROXY),
                "{kind}: {seen:?}"
            );
        } else {
            assert!(answers.is_empty(), "{kind} carried UDP: {out}");
            assert!(
                seen.is_empty(),
                "{kind}: the DNS server was reached from {seen:?}"
            );
        }
    }
}

#[test]
fn hosts_leave_only_through_their_socks5_http_https_shadowsocks_trojan_or_vmess_proxy_and_fail_closed_without_it()
 {
    on_a_runtime_ended_within_seconds(proxy_hosts_leave_only_through_their_proxy());
}

async fn proxy_hosts_leave_only_through_their_proxy() {
    let mut lab = Lab::new();
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(common::Backend::Sqlite, tmp.path()).await;
    let (s, runtime) = start_server(tmp.path(), &url, &lab).await;
    let _cleanup = Cleanup(runtime.instance().to_string());
    let admin = s.admin().await;
    let servers = start_lab_proxies(&mut lab);
    let socks = servers[0].1.clone();
    let mut hosts = vec![];
    // VMess's other securities and the SOCKS5 server with UDP are covered without containers.
    for (kind, server) in servers
        .clone()
        .into_iter()
        .filter(|(k, _)| !["vmess-none", "vmess-zero", "socks-udp"].contains(k))
    {
        let egress = proxy_egress(&s, &admin, &lab, kind, server, lab::EXIT_PROXY).await;
        let (uid, _) = s
            .user(&admin, &format!("{kind}user").replace('-', ""))
            .await;
        let host = s
            .host(
                &admin,
                &uid,
                json!({"egress_ip_id": egress, "memory_mb": 256}),
            )
            .await;
        assert_eq!(host_status(&s, &admin, &host).await, "running", "{kind}");
        hosts.push((kind, egress, host));
    }
    let echo = lab.echo();
    let curl = format!("curl -s --max-time 10 http://{echo}/");
    for (kind, egress, host) in &hosts {
        // The exit address and DNS are the proxy's.
        wait_output(host, &curl, lab::EXIT_PROXY, Duration::from_secs(20));
        let (_, resolv) = exec(host, "cat /etc/resolv.conf");
        assert!(
            resolv.contains(&sluice::egress::proxy::RESOLVER.to_string()),
            "{kind}: {resolv}"
        );
        // A names answer a synthetic address, asked of nobody; a connection to it reaches
        // the name the proxy resolved; other types are asked through the proxy.
        let (ok, a) = exec(
            host,
            &format!("dig +short +time=5 +tries=1 {kind}.whoami.lab.test A"),
        );
        assert!(ok, "{kind}: {a}");
        let synthetic: std::net::Ipv4Addr = a.trim().parse().expect("one address");
        assert!(
            sluice::egress::proxy::names::in_pool(synthetic),
            "{kind}: {synthetic}"
        );
        let (ok, by_name) = exec(
            host,
            &format!("curl -s --max-time 10 http://{}/", lab::ECHO_NAME),
        );
        assert!(ok, "{kind}: {by_name}");
        assert_eq!(by_name.trim(), lab::EXIT_PROXY, "{kind}");
        let (ok, txt) = exec(
            host,
            &format!("dig +short +time=5 +tries=1 {kind}.whoami.lab.test TXT"),
        );
        assert!(ok, "{kind}: {txt}");
        assert_eq!(
            txt.trim().trim_matches('"'),
            lab::EXIT_PROXY,
            "{kind}: DNS went around the proxy"
        );
        for name in [
            format!("{kind}.whoami.lab.test"),
            lab::ECHO_NAME.to_string(),
        ] {
            let seen = lab.resolvers_for(&name);
            assert!(
                !seen.is_empty() && seen.iter().all(|ip| ip.to_string() == lab::EXIT_PROXY),
                "{kind}: {name} was resolved from {seen:?}"
            );
        }
        // UDP elsewhere goes through the proxies that carry it, and nowhere with the rest.
        let udp_name = format!("udp.{kind}.whoami.lab.test");
        let (_, a) = exec(
            host,
            &format!("dig +short +time=2 +tries=1 @{} {udp_name} A", lab.dns()),
        );
        let seen = lab.resolvers_for(&udp_name);
        if ["shadowsocks", "trojan", "vmess", "vmess-tls"].contains(kind) {
            assert_eq!(a.trim(), lab::EXIT_PROXY, "{kind}: UDP through the proxy");
            assert!(
                seen.iter().all(|ip| ip.to_string() == lab::EXIT_PROXY),
                "{seen:?}"
            );
        } else {
            assert!(seen.is_empty(), "{kind} carried UDP: {a} {seen:?}");
        }
        // 50 MiB arrive intact; 100 connections at once all get through.
        let n = 50 * 1024 * 1024;
        let (ok, sum) = exec(
            host,
            &format!("curl -s --max-time 120 http://{echo}/bytes/{n} | sha256sum"),
        );
        assert!(ok, "{kind}: {sum}");
        assert_eq!(
            sum.split_whitespace().next(),
            Some(sha256_hex(&lab::bulk(0, n)).as_str()),
            "{kind}"
        );
        let (_, many) = exec(
            host,
            // One write per curl ("200\n"), so parallel output cannot interleave.
            &format!(
                "seq 100 | xargs -P 100 -I{{}} curl -s --max-time 30 -o /dev/null -w '%{{http_code}}\\n' http://{echo}/ | grep -c '^200$'"
            ),
        );
        assert_eq!(many.trim(), "100", "{kind}: parallel connections");
        // The egress test passes through the host's own session...
        let (st, v) = s
            .post(
                &format!("/v1/admin/egress-ips/{egress}/test"),
                &admin,
                json!({}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["data"]["status"], "passed", "{kind}: {v}");
        assert_eq!(
            v["data"]["checks"]["dns_leak"]["resolvers"],
            json!([lab::EXIT_PROXY])
        );
        assert_eq!(
            v["data"]["checks"]["dns_leak"]["resolved_at_egress"], true,
            "{v}"
        );
        // ...and so does the per-host check, from inside the container's own namespace.
        let (st, v) = s
            .post(
                &format!(
                    "/v1/admin/hosts/{}/egress-check",
                    host["id"].as_str().unwrap()
                ),
                &admin,
                json!({}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["data"]["status"], "passed", "{kind}: {v}");
    }

    // A wrong declared address fails the test, through a throwaway namespace (unbound egress).
    let wrong = proxy_egress(&s, &admin, &lab, "socks", socks.clone(), "203.0.113.99").await;
    let (_, v) = s
        .post(
            &format!("/v1/admin/egress-ips/{wrong}/test"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(v["data"]["status"], "failed", "{v}");
    assert_eq!(
        v["data"]["checks"]["exit_ip"]["observed"],
        lab::EXIT_PROXY,
        "{v}"
    );

    // Nothing else leaves: while each host tries every way around the proxy, the lab link
    // carries only traffic between the host and the proxy servers (UDP too, for the proxies
    // that carry it).
    let capture = Capture::start(&lab.host_link(), tmp.path());
    // (TCP anywhere is the proxy's business: it goes through the proxy or nowhere.)
    let must_fail = ways_around();
    for (_, _, host) in &hosts {
        for (what, cmd) in &must_fail {
            let (ok, out) = exec(host, cmd);
            assert!(!ok, "{what} did not fail: {out}");
        }
        wait_output(host, &curl, lab::EXIT_PROXY, Duration::from_secs(10));
    }
    let packets = capture.stop();
    assert!(!packets.is_empty(), "the capture saw nothing");
    let k = lab.k;
    for p in &packets {
        let to_proxy = p.contains(" IP ")
            && servers.iter().any(|(_, (_, port))| {
                p.contains(&format!("198.18.{k}.1."))
                    && p.contains(&format!("> 198.18.{k}.2.{port}:"))
                    || p.contains(&format!("198.18.{k}.2.{port} > 198.18.{k}.1."))
            });
        assert!(
            to_proxy,
            "a packet not to or from a proxy server left the host: {p}\nall: {packets:#?}"
        );
    }

    // The proxy servers die: traffic fails (and nothing else leaves); they return: it flows.
    lab.stop_proxies();
    for (kind, _, host) in &hosts {
        let (_, out) = exec(host, &curl);
        assert_ne!(
            out.trim(),
            lab::EXIT_PROXY,
            "{kind} still reached the echo server"
        );
    }
    start_lab_proxies(&mut lab);
    for (_, _, host) in &hosts {
        wait_output(host, &curl, lab::EXIT_PROXY, Duration::from_secs(20));
    }
}

async fn host_status(s: &Server, admin: &str, host: &Value) -> String {
    s.get(
        &format!("/v1/admin/hosts/{}", host["id"].as_str().unwrap()),
        admin,
    )
    .await
    .1["data"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// This process's resident memory (KiB) and open descriptors: the in-process Sluice's.
fn footprint() -> (u64, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (rss, std::fs::read_dir("/proc/self/fd").unwrap().count())
}

/// Samples [`footprint`] while `work` runs (answering the peak), then until the descriptors
/// are back near `before` or a minute has passed (answering where they ended).
async fn footprint_around<T>(
    before: (u64, usize),
    work: std::thread::JoinHandle<T>,
) -> (T, (u64, usize), (u64, usize)) {
    let mut peak = before;
    while !work.is_finished() {
        let now = footprint();
        peak = (peak.0.max(now.0), peak.1.max(now.1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = work.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let now = footprint();
        if now.1 <= before.1 + 4 || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    (out, peak, after)
}

/// Runs an egress test on a runtime of its own, then ends that runtime with a deadline, as
/// `sluice serve` ends its own (main.rs): an ipstack TCP stream still being dropped waits on
/// its own task, which does not run again once the runtime is going (issue 16), and must not
/// hold a test after its checks have passed.
fn on_a_runtime_ended_within_seconds(test: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A failed check unwinds through here: the runtime still ends with the deadline (a plain
    // drop would wait on those streams forever and hide the failure), then the panic goes on.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(test)));
    rt.shutdown_timeout(Duration::from_secs(5));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A running host bound to a SOCKS5 egress in a lab of its own. Dropped in field order: the
/// containers go first, then the server, its data, and the lab last.
struct SocksHost {
    host: Value,
    _cleanup: Cleanup,
    _server: Server,
    _tmp: tempfile::TempDir,
    lab: Lab,
}

async fn socks_host(username: &str) -> SocksHost {
    let mut lab = Lab::new();
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(common::Backend::Sqlite, tmp.path()).await;
    let (s, runtime) = start_server(tmp.path(), &url, &lab).await;
    let cleanup = Cleanup(runtime.instance().to_string());
    let admin = s.admin().await;
    let socks = lab.start_socks(Some(("labuser", "lab-pass")));
    let egress = proxy_egress(&s, &admin, &lab, "socks", socks, lab::EXIT_PROXY).await;
    let (uid, _) = s.user(&admin, username).await;
    let host = s
        .host(
            &admin,
            &uid,
            json!({"egress_ip_id": egress, "memory_mb": 256, "pids_limit": 512}),
        )
        .await;
    let curl = format!("curl -s --max-time 10 http://{}/", lab.echo());
    wait_output(&host, &curl, lab::EXIT_PROXY, Duration::from_secs(20));
    SocksHost {
        host,
        _cleanup: cleanup,
        _server: s,
        _tmp: tmp,
        lab,
    }
}

#[test]
fn a_proxy_egress_stays_bounded_under_iperf3_reverse_with_ten_streams() {
    on_a_runtime_ended_within_seconds(
        a_proxy_egress_stays_bounded_under_iperf3_reverse_with_ten_streams_run(),
    );
}

async fn a_proxy_egress_stays_bounded_under_iperf3_reverse_with_ten_streams_run() {
    // Bound in this order so that they drop in the struct's order (locals drop in reverse).
    let SocksHost {
        mut lab,
        _tmp,
        mut _server,
        _cleanup,
        host,
    } = socks_host("iris").await;
    lab.start_iperf3();
    let pid = common::docker::container_pid(host["short_id"].as_str().unwrap());
    std::thread::sleep(Duration::from_millis(500));

    let before = footprint();
    // The client runs in the container's namespace: its traffic takes the host's path.
    let echo = lab.echo();
    let client = std::thread::spawn(move || {
        Command::new("nsenter")
            .args([
                "-t",
                pid.as_str(),
                "-n",
                "iperf3",
                "-c",
                &echo,
                "-p",
                "5201",
            ])
            .args([
                "-P",
                "10",
                "-R",
                "-t",
                "8",
                "-J",
                "--connect-timeout",
                "5000",
            ])
            .output()
            .unwrap()
    });
    // Flows the proxy left half-open close after 30 s of silence.
    let (out, peak, after) = footprint_around(before, client).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        bps > 0.0,
        "iperf3 moved nothing: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!(
        "iperf3 -P 10 -R through SOCKS5: {:.0} Mbit/s; RSS {} -> peak {} -> {} KiB; fds {} -> peak {} -> {}",
        bps / 1e6,
        before.0,
        peak.0,
        after.0,
        before.1,
        peak.1,
        after.1
    );
    // Ten streams need ten upstream sockets (plus iperf3's control connection), not more.
    assert!(
        peak.1 <= before.1 + 24,
        "descriptors grew: {before:?} -> {peak:?}"
    );
    assert!(
        after.1 <= before.1 + 4,
        "descriptors left behind: {before:?} -> {after:?}"
    );
    // Memory stays within a bounded budget while data streams through.
    assert!(
        peak.0 <= before.0 + 256 * 1024,
        "memory grew: {before:?} -> {peak:?}"
    );
    // Stopped while the runtime runs: flows (ipstack streams, whose drop waits on their
    // own task) end here, not while the test's runtime is being torn down.
    _server.stop().await;
}

/// A container opens 3000 TCP connections at once and floods its resolver with 20000 queries
/// on one socket and single datagrams from 500 more: Sluice's descriptors stay within the
/// flow caps and its memory within a budget while it lasts, and both come back afterwards.
#[test]
fn a_flow_and_resolver_flood_leaves_sluice_bounded() {
    on_a_runtime_ended_within_seconds(a_flow_and_resolver_flood_leaves_sluice_bounded_run());
}

async fn a_flow_and_resolver_flood_leaves_sluice_bounded_run() {
    // Bound in this order so that they drop in the struct's order (locals drop in reverse).
    let SocksHost {
        lab,
        _tmp,
        mut _server,
        _cleanup,
        host,
    } = socks_host("fiona").await;
    let curl = format!("curl -s --max-time 10 http://{}/", lab.echo());
    std::thread::sleep(Duration::from_millis(500));
    let before = footprint();

    // A DNS query for a.test, type A, as bytes for printf.
    let query =
        r"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x04test\x00\x00\x01\x00\x01";
    let echo = lab.echo();
    let flood = format!(
        "ulimit -n 8192; \
         for i in $(seq 3000); do exec {{fd}}<>/dev/tcp/{echo}/80 2>/dev/null; done; \
         exec 3>/dev/udp/{resolver}/53; \
         for i in $(seq 20000); do printf '{query}' >&3; done; \
         for i in $(seq 500); do printf '{query}' > /dev/udp/{resolver}/53; done; \
         sleep 3; echo flooded",
        resolver = sluice::egress::proxy::RESOLVER,
    );
    let h = host.clone();
    let flooder = std::thread::spawn(move || exec(&h, &format!("bash -c '{flood}'")));
    let ((_, out), peak, after) = footprint_around(before, flooder).await;
    assert!(out.contains("flooded"), "{out}");
    eprintln!(
        "flood: RSS {} -> peak {} -> {} KiB; fds {} -> peak {} -> {}",
        before.0, peak.0, after.0, before.1, peak.1, after.1
    );
    // Within the host's TCP cap (three times: each flow is the container's connection, taken
    // on the kernel's stack, and the one to the proxy, and the lab's echo server runs in this
    // process and holds the far end), the DNS queries in flight everywhere, its UDP cap, and
    // some slack; far below the 3000 connections and 20500 queries asked for.
    let cap = 3 * sluice::egress::proxy::MAX_TCP_FLOWS
        + sluice::egress::proxy::dns::in_flight_budget()
        + sluice::egress::proxy::MAX_UDP_FLOWS
        + 64;
    assert!(
        peak.1 <= before.1 + cap,
        "descriptors grew: {before:?} -> {peak:?}"
    );
    assert!(
        after.1 <= before.1 + 4,
        "descriptors left behind: {before:?} -> {after:?}"
    );
    assert!(
        peak.0 <= before.0 + 256 * 1024,
        "memory grew: {before:?} -> {peak:?}"
    );
    // And the host still resolves and connects afterwards.
    wait_output(&host, &curl, lab::EXIT_PROXY, Duration::from_secs(20));
    // Stopped while the runtime runs: flows (ipstack streams, whose drop waits on their
    // own task) end here, not while the test's runtime is being torn down.
    _server.stop().await;
}

/// An egress re-pointed at another server with its masked secret echoed back is refused, and
/// the new server never hears the old secret: a listener standing in for it records every
/// byte it is sent, through the refused edit and the egress tests after it. Given again, the
/// new secret (and only it) reaches the new server.
#[test]
fn a_re_pointed_egress_never_sends_its_old_secret_to_the_new_server() {
    on_a_runtime_ended_within_seconds(
        a_re_pointed_egress_never_sends_its_old_secret_to_the_new_server_run(),
    );
}

async fn a_re_pointed_egress_never_sends_its_old_secret_to_the_new_server_run() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lab = Lab::new();
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(common::Backend::Sqlite, tmp.path()).await;
    let (s, runtime) = start_server(tmp.path(), &url, &lab).await;
    let _cleanup = Cleanup(runtime.instance().to_string());
    let admin = s.admin().await;

    // The new server: answers SOCKS5 greetings asking for user/password, records all it gets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let new_port = listener.local_addr().unwrap().port();
    let heard = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let recorder = {
        let heard = heard.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = listener.accept().await else {
                    return;
                };
                let heard = heard.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let mut greeted = false;
                    while let Ok(n @ 1..) = c.read(&mut buf).await {
                        heard.lock().unwrap().extend_from_slice(&buf[..n]);
                        if !greeted {
                            greeted = true;
                            let _ = c.write_all(&[5, 2]).await;
                        } else {
                            let _ = c.write_all(&[1, 1]).await; // auth refused
                        }
                    }
                });
            }
        })
    };

    let (st, v) = s
        .post(
            "/v1/admin/egress-ips",
            &admin,
            json!({
                "label": "moving",
                "ip_address": lab::EXIT_PROXY,
                "tunnel_type": "proxy",
                "proxy_config": {"type": "socks", "server": "127.0.0.1", "server_port": 9,
                                 "username": "user", "password": "the-old-secret"},
            }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/admin/egress-ips/{id}");
    let mut cfg = v["data"]["proxy_config"].clone();
    assert_eq!(cfg["password"], "********");
    cfg["server_port"] = json!(new_port);
    let (st, v) = s
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"proxy_config": cfg})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["errors"]["proxy_config.password"].is_array(), "{v}");
    // The egress still points where it did: testing it dials the old (closed) port only.
    let (st, v) = s.post(&format!("{path}/test"), &admin, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        heard.lock().unwrap().is_empty(),
        "the new server heard something"
    );

    // With the secret given again, the new server hears the new one, never the old.
    cfg["password"] = json!("the-new-secret");
    let (st, v) = s
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"proxy_config": cfg})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = s.post(&format!("{path}/test"), &admin, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let heard = String::from_utf8_lossy(&heard.lock().unwrap()).to_string();
    assert!(heard.contains("the-new-secret"), "{heard:?}");
    assert!(!heard.contains("the-old-secret"), "{heard:?}");
    recorder.abort();
}

/// A container uploading as fast as it can to a destination that reads nothing: what its
/// proxy cannot take must wait in the container (TCP backpressure), not pile up in Sluice.
#[test]
fn an_upload_faster_than_its_proxy_waits_in_the_container_not_in_sluice() {
    on_a_runtime_ended_within_seconds(
        an_upload_faster_than_its_proxy_waits_in_the_container_not_in_sluice_run(),
    );
}

async fn an_upload_faster_than_its_proxy_waits_in_the_container_not_in_sluice_run() {
    // Bound in this order so that they drop in the struct's order (locals drop in reverse).
    let SocksHost {
        mut lab,
        _tmp,
        mut _server,
        _cleanup,
        host,
    } = socks_host("uma").await;
    let (sink, port) = lab.start_sink(9999, 60);
    std::thread::sleep(Duration::from_millis(500));
    let before = footprint();
    let h = host.clone();
    let upload = std::thread::spawn(move || {
        exec(
            &h,
            &format!(
                "timeout 10 bash -c 'head -c 400000000 /dev/zero > /dev/tcp/{sink}/{port}'; echo done"
            ),
        )
    });
    let ((_, out), peak, after) = footprint_around(before, upload).await;
    assert!(out.contains("done"), "{out}");
    eprintln!(
        "stalled upload: RSS {} -> peak {} -> {} KiB; fds {} -> peak {} -> {}",
        before.0, peak.0, after.0, before.1, peak.1, after.1
    );
    // The proxy's and the sink's socket buffers hold a few MiB; Sluice holds at most a
    // bounded window per flow on top, not the 400 MB the container tried to send.
    assert!(
        peak.0 <= before.0 + 64 * 1024,
        "Sluice buffered the upload: {before:?} -> {peak:?}"
    );
    // Stopped while the runtime runs: flows (ipstack streams, whose drop waits on their
    // own task) end here, not while the test's runtime is being torn down.
    _server.stop().await;
}

/// `sluice egress test` on a proxy egress runs the same three checks as the API, DNS
/// included (names asked through the proxy, answered from the proxy's side).
#[test]
fn the_cli_tests_a_proxy_egress_dns_included() {
    on_a_runtime_ended_within_seconds(the_cli_tests_a_proxy_egress_dns_included_run());
}

async fn the_cli_tests_a_proxy_egress_dns_included_run() {
    let mut lab = Lab::new();
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(common::Backend::Sqlite, tmp.path()).await;
    let (s, runtime) = start_server(tmp.path(), &url, &lab).await;
    let _cleanup = Cleanup(runtime.instance().to_string());
    let admin = s.admin().await;
    let socks = lab.start_socks(Some(("labuser", "lab-pass")));
    let egress = proxy_egress(&s, &admin, &lab, "socks", socks, lab::EXIT_PROXY).await;
    let echo = lab.echo();
    let (dir, url2) = (tmp.path().to_path_buf(), url.clone());
    let out = tokio::task::spawn_blocking(move || {
        // Bounded: a hang fails the test (exit 124) instead of stalling the suite.
        Command::new("timeout")
            .args(["180", env!("CARGO_BIN_EXE_sluice")])
            .args(["egress", "test", "--json", &egress])
            .env("SLUICE_DATA_DIR", dir)
            .env("DATABASE_URL", url2)
            .env("SLUICE_PROBE_URL", format!("http://{echo}/"))
            .env("SLUICE_PROBE_IP_URLS", format!("http://{echo}/"))
            .env("SLUICE_PROBE_DNS_NAME", "*.whoami.lab.test")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["checks"]["dns_leak"]["passed"], true, "{report}");
    assert_eq!(report["checks"]["exit_ip"]["passed"], true, "{report}");
}

/// An HTTP proxy that allows `CONNECT` only to port 443 (as Squid's and tinyproxy's example
/// configurations do) refuses DNS over TCP to port 53. A host behind it still resolves names,
/// because the proxy resolves them (`CONNECT name:443`), and its egress test passes; nothing
/// but the host's connections to the proxy leaves the host.
#[test]
fn a_host_behind_an_http_proxy_that_connects_only_to_443_resolves_names_at_the_proxy() {
    on_a_runtime_ended_within_seconds(
        a_host_behind_an_http_proxy_that_connects_only_to_443_resolves_names_at_the_proxy_run(),
    );
}

async fn a_host_behind_an_http_proxy_that_connects_only_to_443_resolves_names_at_the_proxy_run() {
    let mut lab = Lab::new();
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(common::Backend::Sqlite, tmp.path()).await;
    let name = lab::ECHO_NAME;
    let probe = format!("http://{name}:443/");
    let (s, runtime) = start_server_probing(tmp.path(), &url, &probe).await;
    let _cleanup = Cleanup(runtime.instance().to_string());
    let admin = s.admin().await;
    let proxy = lab.start_http_proxy_443_only(Some(("labuser", "lab-pass")));
    let proxy_port = proxy.1;
    let egress = proxy_egress(&s, &admin, &lab, "http-443", proxy, lab::EXIT_PROXY).await;
    let (uid, _) = s.user(&admin, "port443").await;
    let host = s
        .host(
            &admin,
            &uid,
            json!({"egress_ip_id": egress, "memory_mb": 256}),
        )
        .await;
    assert_eq!(host_status(&s, &admin, &host).await, "running");

    // The proxy really refuses anything but 443: DNS over TCP through it fails at once.
    let (ok, txt) = exec(&host, "dig +time=5 +tries=1 refused.whoami.lab.test TXT");
    assert!(txt.contains("SERVFAIL"), "{ok} {txt}");
    assert!(lab.resolvers_for("refused.whoami.lab.test").is_empty());
    // A name resolves to a synthetic address at once, and reaches the echo server by name.
    let (ok, hosts) = exec(&host, &format!("getent ahostsv4 {name} | head -1"));
    assert!(ok, "{hosts}");
    let synthetic: std::net::Ipv4Addr = hosts.split_whitespace().next().unwrap().parse().unwrap();
    assert!(sluice::egress::proxy::names::in_pool(synthetic), "{hosts}");
    let curl = format!("curl -s --max-time 10 http://{name}:443/");
    wait_output(&host, &curl, lab::EXIT_PROXY, Duration::from_secs(20));
    let seen = lab.resolvers_for(name);
    assert!(
        !seen.is_empty() && seen.iter().all(|ip| ip.to_string() == lab::EXIT_PROXY),
        "{name} was resolved from {seen:?}"
    );
    // Port 80 is the proxy's to refuse, and it does: nothing reaches the echo server.
    let (_, refused) = exec(&host, &format!("curl -s --max-time 5 http://{name}/"));
    assert_ne!(refused.trim(), lab::EXIT_PROXY);

    // The egress test passes: names are resolved at the egress, the exit address is the proxy's.
    let (st, v) = s
        .post(
            &format!("/v1/admin/egress-ips/{egress}/test"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["status"], "passed", "{v}");
    let dns = &v["data"]["checks"]["dns_leak"];
    assert_eq!(dns["resolved_at_egress"], true, "{v}");
    assert!(
        sluice::egress::proxy::names::in_pool(
            dns["synthetic_address"].as_str().unwrap().parse().unwrap()
        ),
        "{v}"
    );
    assert!(
        dns["detail"].as_str().unwrap().contains("Server Failure"),
        "{v}"
    );
    // The proof is the probe URL's host, reached by name through the proxy.
    assert!(
        dns["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("{name} was reached by name")),
        "{v}"
    );
    assert_eq!(v["data"]["checks"]["exit_ip"]["observed"], lab::EXIT_PROXY);
    let (st, v) = s
        .post(
            &format!(
                "/v1/admin/hosts/{}/egress-check",
                host["id"].as_str().unwrap()
            ),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["status"], "passed", "{v}");

    // The leak matrix: every way around fails, and the lab link carries only the host's
    // connections to the proxy while names keep resolving.
    let capture = Capture::start(&lab.host_link(), tmp.path());
    for (what, cmd) in &ways_around() {
        let (ok, out) = exec(&host, cmd);
        assert!(!ok, "{what} did not fail: {out}");
    }
    wait_output(&host, &curl, lab::EXIT_PROXY, Duration::from_secs(10));
    let packets = capture.stop();
    let log = std::fs::read_to_string(tmp.path().join(format!("{}.tcpdump.log", lab.host_link())));
    assert!(!packets.is_empty(), "the capture saw nothing: {log:?}");
    let k = lab.k;
    for p in &packets {
        let to_proxy = p.contains(" IP ")
            && (p.contains(&format!("198.18.{k}.1."))
                && p.contains(&format!("> 198.18.{k}.2.{proxy_port}:"))
                || p.contains(&format!("198.18.{k}.2.{proxy_port} > 198.18.{k}.1.")));
        assert!(
            to_proxy,
            "a packet not to or from the proxy left the host: {p}\nall: {packets:#?}"
        );
    }
}

/// Without iptables, a proxy egress's TCP stays on the TUN's userspace stack (ipstack). This
/// machine has iptables, so the data plane is run here the way the engine runs it then: no
/// redirect listener. A name still resolves at the proxy, and 20 MiB arrive intact.
#[test]
fn without_iptables_tcp_takes_the_userspace_stack_and_arrives_intact() {
    on_a_runtime_ended_within_seconds(
        without_iptables_tcp_takes_the_userspace_stack_and_arrives_intact_run(),
    );
}

async fn without_iptables_tcp_takes_the_userspace_stack_and_arrives_intact_run() {
    use sluice::egress::proxy;
    let mut lab = Lab::new();
    let socks = lab.start_socks(None);
    let config: sluice::egress::ProxyConfig = serde_json::from_value(json!({
        "type": "socks", "server": socks.0, "server_port": socks.1
    }))
    .unwrap();
    let ns = sluice::netns::NetNs::create().await.unwrap();
    let device = sluice::egress::tun::open(&ns, proxy::TUN_ADDRESS.parse().unwrap())
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let counters = Arc::new(sluice::egress::wireguard::Counters::default());
    let plane = tokio::spawn(proxy::run(
        Arc::new(device),
        None,
        proxy::Outbound::from_config(&config).unwrap(),
        Default::default(),
        lab.dns().parse().unwrap(),
        counters.clone(),
        stop.clone(),
    ));
    let n = 20 * 1024 * 1024;
    let path = ns.path();
    let resolver = proxy::RESOLVER;
    // By name (its synthetic address from the resolver, dialled by name), then 20 MiB down.
    let cmd = format!(
        "a=$(dig +short +time=2 +tries=2 @{resolver} echo.lab.test A); echo \"$a\"; \
         curl -s --max-time 10 --resolve echo.lab.test:80:$a http://echo.lab.test/; echo; \
         curl -s --max-time 60 http://{}/bytes/{n} | sha256sum",
        lab.echo()
    );
    let out = sh_in(path, cmd).await;
    let lines: Vec<&str> = out.lines().collect();
    let synthetic: std::net::Ipv4Addr = lines[0]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no synthetic answer: {out}"));
    assert!(proxy::names::in_pool(synthetic), "{out}");
    assert_eq!(
        lines.get(1).map(|l| l.trim()),
        Some(lab::EXIT_PROXY),
        "{out}"
    );
    assert_eq!(
        lines.last().and_then(|l| l.split_whitespace().next()),
        Some(sha256_hex(&lab::bulk(0, n)).as_str()),
        "20 MiB over the userspace stack: {out}"
    );
    assert!(
        counters.rx_bytes.load(std::sync::atomic::Ordering::Relaxed) >= n as u64,
        "the host's counters saw the download"
    );
    stop.cancel();
    let _ = plane.await;
}

#[test]
fn a_proxy_egress_refuses_internal_addresses_unless_the_egress_allows_them() {
    on_a_runtime_ended_within_seconds(
        a_proxy_egress_refuses_internal_addresses_unless_the_egress_allows_them_run(),
    );
}

/// A tenant behind a proxy that runs beside other machines asks it for the cloud's metadata
/// service and for a private address next to it: Sluice refuses both before the proxy is
/// asked, counts the refusals, and admits exactly the ranges the egress allows.
async fn a_proxy_egress_refuses_internal_addresses_unless_the_egress_allows_them_run() {
    let mut h = socks_host("insider").await;
    let (private, metadata) = h.lab.start_internal_listeners();
    // Connects to `ip:port` from the host and prints what the far end says.
    let dial = |addr: &str| {
        let (ip, port) = addr.split_once(':').unwrap();
        format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{ip}/{port}; cat <&3' 2>&1; true")
    };
    let reach = |addr: &str| exec(&h.host, &dial(addr)).1;
    let curl = format!("curl -s --max-time 10 http://{}/", h.lab.echo());
    // The internet (the lab's echo server) is reachable; the internal addresses are not.
    assert!(exec(&h.host, &curl).1.contains(lab::EXIT_PROXY));
    assert!(
        !reach(&private).contains("private"),
        "the private listener was reached"
    );
    assert!(
        !reach(&metadata).contains("metadata"),
        "the metadata service was reached"
    );
    let (_, loopback) = exec(
        &h.host,
        "curl -s --max-time 3 http://127.0.0.1:8099/ 2>&1; echo rc=$?",
    );
    assert!(
        loopback.contains("rc=7"),
        "the host's own loopback is its own: {loopback}"
    );

    // The refusals show in the host's egress check and in the metrics.
    let s = &h._server;
    let admin = s.admin().await;
    let id = h.host["id"].as_str().unwrap();
    let (st, v) = s
        .post(
            &format!("/v1/admin/hosts/{id}/egress-check"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        v["data"]["refused_destinations"].as_u64().unwrap() >= 2,
        "{v}"
    );
    let (_, list) = s.get("/v1/admin/egress-ips", &admin).await;
    let egress = list["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(list["data"][0]["proxy_allowed_ranges"], json!([]));

    // A bad range is refused naming the field; nothing changes.
    let path = format!("/v1/admin/egress-ips/{egress}");
    let (st, v) = s
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"proxy_allowed_ranges": ["10.99.0.0/33"]})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v.to_string().contains("proxy_allowed_ranges"), "{v}");

    // Allowed: the private range only. The live host moves onto the new settings.
    let allow = |ranges: Value| {
        let path = path.clone();
        let admin = admin.clone();
        async move {
            let (st, v) = s
                .call(
                    Method::PUT,
                    &path,
                    Some(&admin),
                    Some(json!({"proxy_allowed_ranges": ranges})),
                )
                .await;
            assert_eq!(st, StatusCode::OK, "{v}");
            v
        }
    };
    let v = allow(json!("10.99.0.0/30")).await;
    assert_eq!(v["data"]["proxy_allowed_ranges"], json!(["10.99.0.0/30"]));
    wait_output(&h.host, &dial(&private), "private", Duration::from_secs(30));
    assert!(
        !reach(&metadata).contains("metadata"),
        "the metadata service was reached"
    );

    // Allowed: the metadata address only (so it was the rule, not the lab, that kept it out).
    allow(json!(["169.254.169.254/32"])).await;
    wait_output(
        &h.host,
        &dial(&metadata),
        "metadata",
        Duration::from_secs(30),
    );
    assert!(
        !reach(&private).contains("private"),
        "the private listener was reached"
    );
}

#[test]
fn the_service_sandbox_carries_a_host_s_egress_ssh_and_a_new_host() {
    on_a_runtime_ended_within_seconds(
        the_service_sandbox_carries_a_host_s_egress_ssh_and_a_new_host_run(),
    );
}

/// The capabilities deploy/sluice.service bounds Sluice to, as setpriv takes them.
fn unit_capabilities() -> String {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sluice.service"),
    )
    .unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds its capabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    format!("-all,{}", caps.join(","))
}

/// The real binary under deploy/sluice.service's sandbox, as far as it can be had without
/// systemd: its capability bounding set, no new privileges, and the whole file system
/// read-only but the data directory (ProtectSystem=strict). Handed a running host bound to a
/// proxy egress, it re-attaches the egress (namespace entry, TUN, nat rule), lets the owner in
/// over SSH (the hop into the container's namespace), and makes a new host.
async fn the_service_sandbox_carries_a_host_s_egress_ssh_and_a_new_host_run() {
    let mut lab = Lab::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let url = common::database_url(common::Backend::Sqlite, &dir).await;
    let (mut s, runtime) = start_server(&dir, &url, &lab).await;
    let _cleanup = Cleanup(runtime.instance().to_string());
    let admin = s.admin().await;
    let socks = lab.start_socks(Some(("labuser", "lab-pass")));
    let egress = proxy_egress(&s, &admin, &lab, "socks", socks, lab::EXIT_PROXY).await;
    let (uid, _) = s.user(&admin, "sandy").await;
    let key = dir.join("id_ed25519");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let (st, v) = s
        .post(
            &format!("/v1/admin/users/{uid}/ssh-keys"),
            &admin,
            json!({"public_key": public}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let host = s
        .host(
            &admin,
            &uid,
            json!({"egress_ip_id": egress, "memory_mb": 256}),
        )
        .await;
    let curl = format!("curl -s --max-time 10 http://{}/", lab.echo());
    wait_output(&host, &curl, lab::EXIT_PROXY, Duration::from_secs(20));
    s.stop().await;
    drop(runtime);
    let (ok, out) = exec(&host, &curl);
    assert!(!ok, "traffic flowed with no Sluice: {out}");

    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (http_port, ssh_port) = (free(), free());
    let caps = unit_capabilities();
    let script = r#"set -e
mount --make-rprivate /
mount --bind "$SLUICE_DATA_DIR" "$SLUICE_DATA_DIR"
mount -o remount,bind,ro /
exec setpriv --bounding-set="$CAPS" --inh-caps=-all --no-new-privs -- "$SLUICE" serve"#;
    let log = std::fs::File::create(dir.join("sandboxed.log")).unwrap();
    let probe = format!("http://{}/", lab.echo());
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "bash",
            "-c",
            script,
        ])
        .env("CAPS", &caps)
        .env("SLUICE", env!("CARGO_BIN_EXE_sluice"))
        .env("SLUICE_DATA_DIR", &dir)
        .env("DATABASE_URL", &url)
        .env("XTABLES_LOCKFILE", dir.join("xtables.lock"))
        .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("SSH_PROXY_ADDR", "127.0.0.1")
        .env("SSH_PROXY_PORT", ssh_port.to_string())
        .env("SLUICE_PROBE_URL", &probe)
        .env("SLUICE_PROBE_IP_URLS", &probe)
        .env("SLUICE_PROBE_DNS_NAME", "*.whoami.lab.test")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let _serve = common::docker::ServeProcess(child);
    let log = || std::fs::read_to_string(dir.join("sandboxed.log")).unwrap_or_default();
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "no answer: {}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The process serving is the sandboxed one: the unit's capabilities and nothing more
    // (6 of them), no new privileges, a read-only root.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_string()
    };
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .starts_with("sluice")
    );
    let bounding = u64::from_str_radix(&field("CapBnd:"), 16).unwrap();
    assert_eq!(bounding.count_ones(), 6, "CapBnd {bounding:x}");
    assert_eq!(
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
        bounding
    );
    assert_eq!(field("NoNewPrivs:"), "1");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some("/") && l.contains(" ro,")),
        "{mounts}"
    );
    // The running host's egress is attached again, inside the sandbox.
    wait_output(&host, &curl, lab::EXIT_PROXY, Duration::from_secs(90));

    // The owner gets in over SSH through the sandboxed proxy.
    let out = Command::new("ssh")
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes", "-i"])
        .arg(&key)
        .args(["-p", &ssh_port.to_string()])
        .arg(format!("{}@127.0.0.1", host["short_id"].as_str().unwrap()))
        .arg("id -un; curl -s --max-time 10 http://".to_string() + &lab.echo() + "/")
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.starts_with("sandy\n") && said.contains(lab::EXIT_PROXY),
        "{said}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );

    // A new host is made and runs, and the egress test passes (a throwaway namespace, or the
    // host's own session).
    let login: Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"username": "admin", "password": common::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let made: Value = http
        .post(format!("{base}/v1/admin/hosts"))
        .bearer_auth(&token)
        .json(&json!({"user_id": uid, "memory_mb": 256}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{made}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value = http
            .get(format!("{base}/v1/admin/hosts/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match v["data"]["status"].as_str() {
            Some("running") => break,
            Some("error") => panic!("the new host failed in the sandbox: {v}\n{}", log()),
            _ => {}
        }
        assert!(Instant::now() < deadline, "not running: {v}\n{}", log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report: Value = http
        .post(format!("{base}/v1/admin/egress-ips/{egress}/test"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["data"]["status"], "passed", "{report}\n{}", log());
}
