//! Hosts on the real Docker engine: the managed image, container shape, lifecycle, the
//! reconciler, and recovery after `kill -9`. Needs a Docker engine and the base image
//! debian:bookworm-slim (scripts/test.sh makes both); never skipped.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::docker::{Cleanup, docker, ensure_image, spawn_serve};
use common::{Backend, RecordingRuntime, Server};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice::runtime::HostRuntime;
use sluice::runtime::docker::{DockerRuntime, container_name, volume_name};

struct Lab {
    server: Server,
    runtime: Arc<DockerRuntime>,
    admin: String,
    _cleanup: Cleanup,
}

async fn lab(backend: Backend) -> Lab {
    lab_with(backend, |_| {}).await
}

async fn lab_with(backend: Backend, tweak: impl FnOnce(&mut sluice::config::ServeSettings)) -> Lab {
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(backend, tmp.path()).await;
    let mut settings = common::settings(tmp.path(), url);
    tweak(&mut settings);
    let runtime = Arc::new(DockerRuntime::new(tmp.path()).unwrap());
    ensure_image(&runtime).await;
    let cleanup = Cleanup(runtime.instance().to_string());
    let dir = tmp.path().to_path_buf();
    let dynamic: Arc<dyn HostRuntime> = runtime.clone();
    let server = Server::start_on(
        settings,
        dynamic,
        RecordingRuntime::default(),
        dir,
        Some(tmp),
    )
    .await;
    let admin = server.admin().await;
    Lab {
        server,
        runtime,
        admin,
        _cleanup: cleanup,
    }
}

fn inspect(name: &str) -> Option<Value> {
    let (ok, out) = docker(&["inspect", name]);
    ok.then(|| serde_json::from_str::<Value>(&out).unwrap()[0].clone())
}

fn volume_exists(name: &str) -> bool {
    docker(&["volume", "inspect", name]).0
}

/// Runs a command in the host as its user, through the host's sshd: entering the container's
/// network namespace and logging in with the internal key, as the SSH proxy will.
fn ssh(lab: &Lab, host: &Value, command: &str) -> (bool, String) {
    let name = container_name(host["short_id"].as_str().unwrap());
    let pid = inspect(&name).unwrap()["State"]["Pid"]
        .as_i64()
        .unwrap()
        .to_string();
    let key = lab
        .server
        .dir
        .join("hosts")
        .join(host["id"].as_str().unwrap())
        .join("internal_key");
    let known = lab.server.dir.join(format!(
        "known_hosts_{}",
        host["short_id"].as_str().unwrap()
    ));
    let pinned = std::fs::read_to_string(
        lab.server
            .dir
            .join("hosts")
            .join(host["id"].as_str().unwrap())
            .join("etc/ssh_host_ed25519_key.pub"),
    )
    .unwrap();
    std::fs::write(&known, format!("127.0.0.1 {pinned}")).unwrap();
    let out = Command::new("nsenter")
        .args([
            "-t",
            &pid,
            "-n",
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .arg("-i")
        .arg(&key)
        .arg(format!("{}@127.0.0.1", host["username"].as_str().unwrap()))
        .arg(command)
        .output()
        .expect("nsenter and ssh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn step(lab: &Lab, host: &Value, path: &str, body: Value) -> Value {
    let id = host["id"].as_str().unwrap();
    let (st, v) = lab
        .server
        .post(&format!("/v1/admin/hosts/{id}/{path}"), &lab.admin, body)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{path}: {v}");
    let task = lab
        .server
        .wait_task(&lab.admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "succeeded", "{path}: {task}");
    task
}

async fn host_status(lab: &Lab, host: &Value) -> Value {
    lab.server
        .get(
            &format!("/v1/admin/hosts/{}", host["id"].as_str().unwrap()),
            &lab.admin,
        )
        .await
        .1["data"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_is_a_locked_down_container_reachable_only_inside_its_namespace() {
    let lab = lab(Backend::Sqlite).await;
    let (uid, _) = lab.server.user(&lab.admin, "alice").await;
    let (line, _) = keygen();
    let (st, _) = lab
        .server
        .post(
            &format!("/v1/admin/users/{uid}/ssh-keys"),
            &lab.admin,
            json!({"public_key": line}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let host = lab
        .server
        .host(
            &lab.admin,
            &uid,
            json!({"memory_mb": 256, "cpus": 0.5, "pids_limit": 128}),
        )
        .await;
    let h = host_status(&lab, &host).await;
    assert_eq!(h["status"], "running", "{h}");
    assert_eq!(h["image_outdated"], false);
    assert_eq!(
        h["image"],
        sluice::runtime::image::tag(sluice::runtime::image::Kind::User).as_str()
    );

    let short = host["short_id"].as_str().unwrap();
    let c = inspect(&container_name(short)).expect("the container exists");
    let hc = &c["HostConfig"];
    assert_eq!(hc["NetworkMode"], "none");
    assert_eq!(hc["CapDrop"], json!(["ALL"]));
    let caps: Vec<&str> = hc["CapAdd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for forbidden in ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"] {
        assert!(
            !caps.iter().any(|c| c.contains(forbidden)),
            "{forbidden} in {caps:?}"
        );
    }
    assert_eq!(hc["Memory"], 256 * 1024 * 1024);
    assert_eq!(hc["PidsLimit"], 128);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["Init"], true);
    assert!(hc["SecurityOpt"].to_string().contains("no-new-privileges"));
    assert_eq!(hc["Sysctls"]["net.ipv6.conf.all.disable_ipv6"], "1");
    assert_eq!(c["Config"]["Labels"]["sluice.host_id"], host["id"]);
    assert_eq!(c["Config"]["Hostname"], short);
    let mounts = c["Mounts"].as_array().unwrap();
    let home = mounts
        .iter()
        .find(|m| m["Destination"] == "/home/alice")
        .expect("home mount");
    assert_eq!(home["Type"], "volume");
    assert_eq!(
        home["Name"],
        volume_name(host["id"].as_str().unwrap().parse().unwrap()).as_str()
    );
    let resolv = mounts
        .iter()
        .find(|m| m["Destination"] == "/etc/resolv.conf")
        .expect("resolv.conf mount");
    assert_eq!(
        (resolv["Type"].as_str(), resolv["RW"].as_bool()),
        (Some("bind"), Some(false))
    );
    // The container has only loopback.
    let (_, links) = docker(&["exec", &container_name(short), "cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = links
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim())
        .collect();
    assert_eq!(ifaces, ["lo"], "{links}");

    // Inside: no network or admin capability, even for root; resolv.conf is read-only.
    let (ok, status) = docker(&["exec", &container_name(short), "cat", "/proc/1/status"]);
    assert!(ok, "{status}");
    let cap_eff = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    let cap_eff = u64::from_str_radix(cap_eff, 16).unwrap();
    for (bit, name) in [(12, "NET_ADMIN"), (13, "NET_RAW"), (21, "SYS_ADMIN")] {
        assert_eq!(
            cap_eff & (1 << bit),
            0,
            "{name} effective in pid 1: {cap_eff:x}"
        );
    }
    let (ok, out) = docker(&[
        "exec",
        &container_name(short),
        "sh",
        "-c",
        "echo nameserver 8.8.8.8 > /etc/resolv.conf",
    ]);
    assert!(!ok, "resolv.conf was writable: {out}");

    // sshd answers on 127.0.0.1:22 inside the namespace, with the pinned host key, for the
    // internal key, as the owner.
    let pid = c["State"]["Pid"].as_i64().unwrap();
    assert!(sluice::runtime::docker::sshd_answers(pid).await);
    let (ok, out) = ssh(
        &lab,
        &host,
        "id -un; stat -c %U ~; cat ~/.ssh/authorized_keys 2>/dev/null | wc -l; grep -c . /etc/sluice/authorized_keys",
    );
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["alice", "alice"], "{out}");
    assert_eq!(lines[3], "2", "internal key and the owner's key: {out}");

    // Logs and status.
    let id = host["id"].as_str().unwrap();
    let (st, v) = lab
        .server
        .get(&format!("/v1/admin/hosts/{id}/logs?tail=50"), &lab.admin)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        v["data"]["lines"]
            .to_string()
            .contains("Server listening on 127.0.0.1 port 22"),
        "{v}"
    );
    for bad in ["tail=0", "tail=1001", "tail=x"] {
        let (st, _) = lab
            .server
            .get(&format!("/v1/admin/hosts/{id}/logs?{bad}"), &lab.admin)
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let (st, v) = lab.server.get("/v1/admin/status", &lab.admin).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"]["docker"]["reachable"], true);
    assert_eq!(v["data"]["docker"]["image_present"], true);
    assert_eq!(v["data"]["hosts"]["by_status"]["running"], 1);
    let (_, health) = lab.server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health["checks"]["docker"], "ok");
}

fn keygen() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&path)
            .status()
            .unwrap()
            .success()
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (public.trim().to_string(), String::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_survives_stop_start_and_rebuild_and_a_wipe_clears_it() {
    let lab = lab(Backend::Postgres).await;
    let (uid, _) = lab.server.user(&lab.admin, "bob").await;
    let host = lab
        .server
        .host(&lab.admin, &uid, json!({"memory_mb": 256}))
        .await;
    let (ok, out) = ssh(&lab, &host, "echo kept > ~/notes.txt");
    assert!(ok, "{out}");
    let host_key = |lab: &Lab| {
        let pid =
            inspect(&container_name(host["short_id"].as_str().unwrap())).unwrap()["State"]["Pid"]
                .as_i64()
                .unwrap();
        let out = Command::new("nsenter")
            .args([
                "-t",
                &pid.to_string(),
                "-n",
                "ssh-keyscan",
                "-t",
                "ed25519",
                "127.0.0.1",
            ])
            .output()
            .unwrap();
        let _ = lab;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    };
    let key_before = host_key(&lab);
    assert!(!key_before.is_empty());

    step(&lab, &host, "stop", json!({})).await;
    assert_eq!(host_status(&lab, &host).await["status"], "stopped");
    let c = inspect(&container_name(host["short_id"].as_str().unwrap())).unwrap();
    assert_eq!(c["State"]["Running"], false);
    step(&lab, &host, "start", json!({})).await;
    assert_eq!(ssh(&lab, &host, "cat ~/notes.txt").1.trim(), "kept");

    step(&lab, &host, "rebuild", json!({})).await;
    assert_eq!(ssh(&lab, &host, "cat ~/notes.txt").1.trim(), "kept");
    assert_eq!(
        host_key(&lab),
        key_before,
        "a rebuild keeps the pinned host key"
    );

    step(&lab, &host, "rebuild", json!({"wipe_home": true})).await;
    let (ok, out) = ssh(
        &lab,
        &host,
        "test -e ~/notes.txt && echo present || echo gone; stat -c %U ~/.bashrc",
    );
    assert!(ok, "{out}");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["gone", "bob"]);

    // Suspend stops the container and refuses a start until unsuspended.
    step(&lab, &host, "suspend", json!({})).await;
    assert_eq!(host_status(&lab, &host).await["status"], "suspended");
    assert_eq!(
        inspect(&container_name(host["short_id"].as_str().unwrap())).unwrap()["State"]["Running"],
        false
    );
    let id = host["id"].as_str().unwrap();
    let (st, _) = lab
        .server
        .post(
            &format!("/v1/admin/hosts/{id}/start"),
            &lab.admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, v) = lab
        .server
        .post(
            &format!("/v1/admin/hosts/{id}/unsuspend"),
            &lab.admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["status"], "stopped");
    step(&lab, &host, "start", json!({})).await;
    assert_eq!(host_status(&lab, &host).await["status"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_leaves_nothing_and_a_failed_create_leaves_no_container() {
    let lab = lab(Backend::Sqlite).await;
    let (uid, _) = lab.server.user(&lab.admin, "carol").await;
    let host = lab
        .server
        .host(&lab.admin, &uid, json!({"memory_mb": 128}))
        .await;
    let id = host["id"].as_str().unwrap().to_string();
    let name = container_name(host["short_id"].as_str().unwrap());
    let files = lab.server.dir.join("hosts").join(&id);
    assert!(inspect(&name).is_some() && files.exists());
    let (st, v) = lab
        .server
        .call(
            Method::DELETE,
            &format!("/v1/admin/hosts/{id}"),
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let task = lab
        .server
        .wait_task(&lab.admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert!(inspect(&name).is_none(), "container left behind");
    assert!(
        !volume_exists(&volume_name(id.parse().unwrap())),
        "volume left behind"
    );
    assert!(!files.exists(), "files left behind");

    // More CPUs than the machine has: Docker refuses the container.
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        cores < 64,
        "this check needs a machine with fewer than 64 cores"
    );
    let (st, v) = lab
        .server
        .post(
            "/v1/admin/hosts",
            &lab.admin,
            json!({"user_id": uid, "cpus": 64}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let task = lab
        .server
        .wait_task(&lab.admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "failed");
    let h = host_status(&lab, &v["data"]).await;
    assert_eq!(h["status"], "error");
    assert!(
        h["status_reason"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("cpu"),
        "{h}"
    );
    assert!(
        inspect(&container_name(v["data"]["short_id"].as_str().unwrap())).is_none(),
        "no orphan container"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_restores_hosts_removes_orphans_and_stops_disabled_users() {
    let lab = lab(Backend::Sqlite).await;
    let (uid, _) = lab.server.user(&lab.admin, "dora").await;
    let a = lab
        .server
        .host(&lab.admin, &uid, json!({"memory_mb": 128}))
        .await;
    let (uid2, _) = lab.server.user(&lab.admin, "emil").await;
    let b = lab
        .server
        .host(&lab.admin, &uid2, json!({"memory_mb": 128}))
        .await;

    // A container killed behind Sluice's back, and one removed outright.
    let (ok, out) = docker(&["kill", &container_name(a["short_id"].as_str().unwrap())]);
    assert!(ok, "{out}");
    // An orphan: a container of this install for a host that does not exist.
    let ghost = uuid::Uuid::now_v7();
    let (ok, out) = docker(&[
        "create",
        "--network",
        "none",
        "--label",
        &format!("sluice.instance={}", lab.runtime.instance()),
        "--label",
        &format!("sluice.host_id={ghost}"),
        "--name",
        &format!("sluice-ghost-{}", &ghost.simple().to_string()[..8]),
        &sluice::runtime::image::tag(sluice::runtime::image::Kind::User),
    ]);
    assert!(ok, "{out}");
    // A container of another install is left alone.
    let (ok, out) = docker(&[
        "create",
        "--network",
        "none",
        "--label",
        "sluice.instance=someone-else",
        "--label",
        &format!("sluice.host_id={ghost}"),
        "--name",
        &format!("other-{}", &ghost.simple().to_string()[..8]),
        &sluice::runtime::image::tag(sluice::runtime::image::Kind::User),
    ]);
    assert!(ok, "{out}");
    let other = format!("other-{}", &ghost.simple().to_string()[..8]);
    // Disable emil: his running host must stop.
    let (st, _) = lab
        .server
        .call(
            Method::PATCH,
            &format!("/v1/admin/users/{uid2}"),
            Some(&lab.admin),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    let store = lab.server.running.as_ref().unwrap().store.clone();
    let report = sluice::tasks::reconcile::once(
        &store,
        lab.runtime.as_ref(),
        &sluice::tasks::Queue::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.orphans_removed, 1, "{report:?}");
    assert_eq!(report.restarts_queued, 1, "{report:?}");
    assert_eq!(report.stops_queued, 1, "{report:?}");
    assert!(
        inspect(&format!(
            "sluice-ghost-{}",
            &ghost.simple().to_string()[..8]
        ))
        .is_none()
    );
    assert!(
        inspect(&other).is_some(),
        "another install's container was touched"
    );
    docker(&["rm", "-f", &other]);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ha = host_status(&lab, &a).await;
        let hb = host_status(&lab, &b).await;
        let a_up = inspect(&container_name(a["short_id"].as_str().unwrap())).unwrap()["State"]["Running"]
            == true;
        if ha["status"] == "running" && a_up && hb["status"] == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "not reconciled: {ha} {hb}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        inspect(&container_name(b["short_id"].as_str().unwrap())).unwrap()["State"]["Running"],
        false
    );
    let actions = lab.server.actions(&lab.admin).await;
    assert!(actions.contains(&"host.orphan_removed".to_string()));
    // A second pass has nothing to do.
    let report = sluice::tasks::reconcile::once(
        &store,
        lab.runtime.as_ref(),
        &sluice::tasks::Queue::default(),
    )
    .await
    .unwrap();
    assert_eq!(report, Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_hosts_created_at_once_all_run() {
    let lab = lab(Backend::Sqlite).await;
    let (uid, _) = lab.server.user(&lab.admin, "fred").await;
    let mut tasks = vec![];
    for _ in 0..20 {
        let (st, v) = lab
            .server
            .post(
                "/v1/admin/hosts",
                &lab.admin,
                json!({"user_id": uid, "memory_mb": 64, "cpus": 0.1}),
            )
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        tasks.push(v["data"]["task_id"].as_str().unwrap().to_string());
    }
    for t in &tasks {
        let task = lab
            .server
            .wait_task_for(&lab.admin, t, Duration::from_secs(300))
            .await;
        assert_eq!(task["status"], "succeeded", "{task}");
    }
    let (_, v) = lab
        .server
        .get("/v1/admin/hosts?per_page=100", &lab.admin)
        .await;
    let hosts = v["data"].as_array().unwrap();
    assert_eq!(hosts.len(), 20);
    assert!(hosts.iter().all(|h| h["status"] == "running"));
    let observed = lab.runtime.observe().await.unwrap();
    assert_eq!(observed.iter().filter(|o| o.running).count(), 20);
}

async fn wait_up(http: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sluice serve did not come up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_creation_sluice_converges_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let runtime = DockerRuntime::new(dir).unwrap();
    ensure_image(&runtime).await;
    let _cleanup = Cleanup(runtime.instance().to_string());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut serve = spawn_serve(dir, None, port);
    wait_up(&http, &base).await;

    let login = || async {
        let v: Value = http
            .post(format!("{base}/v1/auth/login"))
            .json(&json!({"username": "admin", "password": common::ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["token"].as_str().unwrap().to_string()
    };
    let admin = login().await;
    let v: Value = http
        .post(format!("{base}/v1/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "gus"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uid = v["data"]["id"].as_str().unwrap().to_string();
    let mut hosts = vec![];
    for _ in 0..5 {
        let v: Value = http
            .post(format!("{base}/v1/admin/hosts"))
            .bearer_auth(&admin)
            .json(&json!({"user_id": uid, "memory_mb": 64}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        hosts.push(v["data"]["id"].as_str().unwrap().to_string());
    }
    // Kill it while tasks are in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = http
            .get(format!("{base}/v1/admin/tasks?status=running"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["meta"]["total"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no task ever ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unsafe { libc::kill(serve.0.id() as i32, libc::SIGKILL) };
    let _ = serve.0.wait();
    drop(serve);

    let _serve = spawn_serve(dir, None, port);
    wait_up(&http, &base).await;
    let admin = login().await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let v: Value = http
            .get(format!("{base}/v1/admin/hosts?per_page=100"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let statuses: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["status"].as_str().unwrap().to_string())
            .collect();
        if statuses.len() == 5 && statuses.iter().all(|s| s == "running") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hosts did not converge: {statuses:?}\n{}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for status in ["running", "queued"] {
        let v: Value = http
            .get(format!("{base}/v1/admin/tasks?status={status}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["meta"]["total"], 0, "{status} tasks left: {v}");
    }
    // At least one create was cut off and run again.
    let v: Value = http
        .get(format!("{base}/v1/admin/tasks?kind=create"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["attempts"].as_i64() >= Some(2)),
        "no task was interrupted: {v}"
    );
    // Exactly one running container per host, and nothing else of this install.
    let observed = runtime.observe().await.unwrap();
    let mut ids: Vec<String> = observed
        .iter()
        .filter(|o| o.running)
        .map(|o| o.host_id.to_string())
        .collect();
    ids.sort();
    hosts.sort();
    assert_eq!(ids, hosts);
    assert_eq!(observed.len(), 5, "orphan containers: {observed:?}");
}

/// Settings the API would refuse can still reach the engine from a database edited by hand or
/// written by another release: the host must then fail closed, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_bound_to_an_unusable_proxy_egress_fails_closed_with_the_reason() {
    let lab = lab(Backend::Sqlite).await;
    let (uid, _) = lab.server.user(&lab.admin, "pia").await;
    let (st, e) = lab
        .server
        .post(
            "/v1/admin/egress-ips",
            &lab.admin,
            json!({"label": "ss", "ip_address": "203.0.113.20", "tunnel_type": "proxy",
                "proxy_config": {"type": "shadowsocks", "server": "192.0.2.1", "server_port": 8388,
                    "method": "aes-256-gcm", "password": "pw"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{e}");
    // The stored settings changed behind Sluice's back (sealed again with the install's key,
    // as an older version or a hand edit could leave them).
    let store = lab.server.running.as_ref().unwrap().store.clone();
    let id = uuid::Uuid::parse_str(e["data"]["id"].as_str().unwrap()).unwrap();
    let mut db = store.acquire().await.unwrap();
    let mut row = sluice::store::egress::get(db.conn(), store.keys(), id)
        .await
        .unwrap()
        .unwrap();
    let edited = serde_json::to_string(&row.settings.0)
        .unwrap()
        .replace("aes-256-gcm", "rc4-md5");
    row.settings.0 = serde_json::from_str(&edited).unwrap();
    sluice::store::egress::update(db.conn(), store.keys(), &row)
        .await
        .unwrap();
    drop(db);
    let (st, v) = lab
        .server
        .post(
            "/v1/admin/hosts",
            &lab.admin,
            json!({"user_id": uid, "egress_ip_id": e["data"]["id"], "memory_mb": 128}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let task = lab
        .server
        .wait_task(&lab.admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "failed", "{task}");
    let h = host_status(&lab, &v["data"]).await;
    assert_eq!(h["status"], "error");
    assert!(
        h["status_reason"]
            .as_str()
            .unwrap()
            .contains("the proxy egress cannot be used: unknown shadowsocks method rc4-md5"),
        "{h}"
    );
    // The container is there, with nothing but loopback: no way out at all.
    let name = container_name(v["data"]["short_id"].as_str().unwrap());
    let (_, links) = docker(&["exec", &name, "cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = links
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim())
        .collect();
    assert_eq!(ifaces, ["lo"], "{links}");
}

/// Runs a shell command in a host's container as root (docker exec), for what only root sees.
fn as_root(host: &Value, command: &str) -> String {
    let (ok, out) = docker(&[
        "exec",
        &container_name(host["short_id"].as_str().unwrap()),
        "sh",
        "-c",
        command,
    ]);
    assert!(ok, "{command}: {out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_has_its_own_uid_and_its_own_kernel_budgets() {
    // A range of this test's own, so that exhausting a uid's budget here touches no other
    // test's hosts on this machine.
    let range: sluice::hosts::account::UidRange = "61000-61009".parse().unwrap();
    let lab = lab_with(Backend::Sqlite, |s| s.store.host_uids = range).await;
    let (alice, _) = lab.server.user(&lab.admin, "alice").await;
    let (carol, _) = lab.server.user(&lab.admin, "carol").await;
    let a = lab
        .server
        .host(&lab.admin, &alice, json!({"memory_mb": 256}))
        .await;
    let b = lab
        .server
        .host(&lab.admin, &carol, json!({"memory_mb": 256}))
        .await;
    assert_eq!(host_status(&lab, &a).await["account_uid"], 61000);
    assert_eq!(host_status(&lab, &b).await["account_uid"], 61001);
    let (ok, out) = ssh(&lab, &a, "id -u; id -g; stat -c %u ~ ~/.profile");
    assert!(ok, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["61000", "61000", "61000", "61000"]
    );
    let (ok, out) = ssh(&lab, &b, "id -u");
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "61001");

    // Alice uses up every inotify instance her uid may have (128 here): her own next
    // `tail -f` falls back to polling, which shows the budget really is exhausted...
    let (ok, out) = ssh(
        &lab,
        &a,
        "touch ~/f; for i in $(seq 140); do setsid nohup tail -f ~/f </dev/null >/dev/null 2>&1 & done; \
         sleep 3; timeout 2 tail -f ~/f 2>&1 >/dev/null; true",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("inotify cannot be used"),
        "alice's budget was not exhausted: {out}"
    );
    let count = |uid: &str| {
        let out = Command::new("pgrep")
            .args(["-c", "-x", "-u", uid, "tail"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
    };
    assert!(
        count("61000") >= 128,
        "alice's tails run as her own uid on the machine"
    );
    // ...and Carol, on the same machine, is untouched.
    let (ok, out) = ssh(
        &lab,
        &b,
        "touch ~/f; timeout 2 tail -f ~/f 2>&1 >/dev/null; true",
    );
    assert!(ok, "{out}");
    assert!(
        !out.contains("inotify"),
        "carol shares alice's budget: {out}"
    );
    assert_eq!(count("61001"), 0);

    // A home made under another uid (every host was uid 1000 before each had its own) moves to
    // the host's uid at its next start; a link the owner planted is changed itself, never what
    // it points to.
    let store = lab.server.running.as_ref().unwrap().store.clone();
    let b_id: uuid::Uuid = b["id"].as_str().unwrap().parse().unwrap();
    let (ok, out) = ssh(
        &lab,
        &b,
        "echo kept > ~/notes.txt; ln -s /etc/hostname ~/link; ln -s /etc/passwd ~/.cache-link",
    );
    assert!(ok, "{out}");
    {
        let mut db = store.acquire().await.unwrap();
        sluice::store::hosts::set_account_uid(db.conn(), b_id, Some(61005))
            .await
            .unwrap();
    }
    step(&lab, &b, "stop", json!({})).await;
    step(&lab, &b, "start", json!({})).await;
    let (ok, out) = ssh(
        &lab,
        &b,
        "id -u; stat -c %u ~ ~/notes.txt ~/.profile; stat -L -c %u ~/link ~/.cache-link; cat ~/notes.txt",
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["61005", "61005", "61005", "61005", "0", "0", "kept"]
    );
    assert_eq!(
        as_root(&b, "stat -c %u:%g /etc/hostname /etc/passwd")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0:0", "0:0"]
    );

    // A host with no uid (made before this version) is given the first free one at startup.
    {
        let mut db = store.acquire().await.unwrap();
        sluice::store::hosts::set_account_uid(db.conn(), b_id, None)
            .await
            .unwrap();
    }
    assert_eq!(
        sluice::ops::hosts::assign_account_uids(&store, range)
            .await
            .unwrap(),
        1
    );
    assert_eq!(host_status(&lab, &b).await["account_uid"], 61001);
    step(&lab, &b, "stop", json!({})).await;
    step(&lab, &b, "start", json!({})).await;
    let (ok, out) = ssh(&lab, &b, "id -u; stat -c %u ~/notes.txt");
    assert!(ok, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["61001", "61001"]
    );
    assert!(
        lab.server
            .actions(&lab.admin)
            .await
            .contains(&"host.account_uid_assigned".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_a_tenant_plants_give_root_nothing_across_restart_and_rebuild() {
    let lab = lab(Backend::Postgres).await;
    let (uid, _) = lab.server.user(&lab.admin, "mallory").await;
    let host = lab
        .server
        .host(&lab.admin, &uid, json!({"memory_mb": 256}))
        .await;
    // What the entrypoint (root) touches at every start, replaced by links to files only
    // root may change: the skeleton's targets in the home, /tmp and /run.
    let plant = "set -x; cd ~ && rm -f .profile .bashrc .bash_logout \
        && ln -s /etc/ld.so.preload .profile && ln -s /etc/shadow .bashrc \
        && ln -s /etc/passwd .bash_logout \
        && ln -s /etc /tmp/.X11-unix && ln -s /etc/ld.so.preload /tmp/passwd; \
        ln -s /etc/ld.so.preload /run/sshd/x 2>&1; ln /etc/shadow ~/hard 2>&1; \
        ln /etc/shadow /var/tmp/hard 2>&1; true";
    let (ok, out) = ssh(&lab, &host, plant);
    assert!(ok, "{out}");
    assert!(
        out.contains("Permission denied")
            || out.contains("Invalid cross-device link")
            || out.contains("Operation not permitted"),
        "the hard links are refused by the kernel: {out}"
    );
    let root_state = |h: &Value| {
        as_root(
            h,
            "test -e /etc/ld.so.preload && echo PRELOAD; \
             stat -c '%n %u:%g %a' /etc /etc/shadow /etc/passwd /etc/group /etc/skel /etc/skel/.bashrc /run /tmp /run/sshd; \
             sha256sum /etc/skel/.bashrc /etc/ssh/sshd_config | cut -c1-16",
        )
    };
    let before = root_state(&host);
    assert!(!before.contains("PRELOAD"), "{before}");
    for (path, body) in [
        ("stop", json!({})),
        ("start", json!({})),
        ("rebuild", json!({})),
    ] {
        step(&lab, &host, path, body).await;
        if path == "stop" {
            continue;
        }
        let after = root_state(&host);
        assert_eq!(after, before, "after {path}, root's files changed");
        // The links are still the owner's own, pointing where they did; sshd still lets
        // the owner in.
        let (ok, out) = ssh(
            &lab,
            &host,
            "stat -c '%U %N' ~/.profile ~/.bashrc; find ~ -xdev ! -user mallory | wc -l; ls -A /tmp | wc -l",
        );
        assert!(ok, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0], "mallory '/home/mallory/.profile' -> '/etc/ld.so.preload'",
            "{out}"
        );
        assert_eq!(
            lines[1], "mallory '/home/mallory/.bashrc' -> '/etc/shadow'",
            "{out}"
        );
        assert_eq!(lines[2], "0", "only the owner's files in the home: {out}");
        assert_eq!(lines[3], "0", "/tmp is fresh at every start: {out}");
    }
}

/// A second Docker engine this test starts itself, with `--userns-remap=default`, on its own
/// socket, data and exec roots, with the machine's engine's storage driver (vfs would give
/// containers a root directory of mode 0700, which no account may cross), and a bridge of its
/// own that carries nothing (hosts have no network but what Sluice gives them; iptables left
/// alone). Not `--bridge=none`: with it, dockerd deletes the machine's `docker0`, which the
/// machine's own engine builds images on. Stopped, its bridge and data removed, when dropped.
struct RemapEngine {
    dir: tempfile::TempDir,
    child: std::process::Child,
    bridge: String,
}

impl RemapEngine {
    fn start() -> RemapEngine {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        let (ok, driver) = docker(&["info", "--format", "{{.Driver}}"]);
        assert!(ok, "{driver}");
        // Its own bridge, on an address of the benchmarking range no lab uses (198.18.255.0/24).
        let bridge = format!("slrm{}", std::process::id() % 100_000);
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec!["addr", "add", "198.18.255.1/24", "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            let out = Command::new("ip").args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--userns-remap=default")
            .arg(format!("--bridge={bridge}"))
            .arg(format!("--storage-driver={}", driver.trim()))
            .args(["--iptables=false", "--ip6tables=false"])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        let engine = RemapEngine { dir, child, bridge };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !Command::new("docker")
            .args(["-H", &engine.host(), "info"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                Instant::now() < deadline,
                "the remapping engine did not start: {}",
                std::fs::read_to_string(engine.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        engine
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }
}

impl Drop for RemapEngine {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_path_runs_under_a_userns_remap_engine() {
    // The managed image comes from the machine's engine (the remapping one has no network to
    // build it with), with the base image under it.
    let probe = tempfile::tempdir().unwrap();
    ensure_image(&DockerRuntime::new(probe.path()).unwrap()).await;
    let docker0 = || {
        Command::new("ip")
            .args(["link", "show", "docker0"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let had_docker0 = docker0();
    let engine = RemapEngine::start();
    let user_image = sluice::runtime::image::tag(sluice::runtime::image::Kind::User);
    let moved = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "docker save {} {user_image} | docker -H {} load",
            sluice::runtime::image::BASE_IMAGE,
            engine.host()
        ))
        .output()
        .unwrap();
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    // From here on, this test process and the docker CLI it runs talk to that engine.
    unsafe { std::env::set_var("DOCKER_HOST", engine.host()) };
    let (ok, info) = docker(&["info", "--format", "{{json .SecurityOptions}}"]);
    assert!(ok && info.contains("name=userns"), "{info}");

    let lab = lab(Backend::Sqlite).await;
    let remap = lab
        .runtime
        .remap()
        .await
        .unwrap()
        .expect("the engine remaps");
    let (uid, _) = lab.server.user(&lab.admin, "rhea").await;
    let host = lab
        .server
        .host(&lab.admin, &uid, json!({"memory_mb": 256}))
        .await;
    let h = host_status(&lab, &host).await;
    assert_eq!(h["status"], "running", "{h}");
    let account_uid = h["account_uid"].as_u64().unwrap();

    // The container's root is an unprivileged id of the machine.
    let short = host["short_id"].as_str().unwrap();
    let pid = inspect(&container_name(short)).unwrap()["State"]["Pid"]
        .as_i64()
        .unwrap();
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", &remap.uid_base.to_string(), &remap.size.to_string()]
    );
    // The read-only /etc/sluice files serve sshd (its host key is the container root's), the
    // namespace entry carries the login, the account has its uid, the home is the account's.
    let key = lab
        .server
        .dir
        .join("hosts")
        .join(host["id"].as_str().unwrap())
        .join("etc/ssh_host_ed25519_key");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&key).unwrap().uid(), remap.uid_base);
    let (ok, out) = ssh(
        &lab,
        &host,
        "id -u; stat -c %u ~; echo kept > ~/notes && cat ~/notes; cat /proc/self/uid_map | tr -s ' '",
    );
    assert!(ok, "{out}\n{}", docker(&["logs", &container_name(short)]).1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], account_uid.to_string(), "{out}");
    assert_eq!(lines[1], account_uid.to_string(), "{out}");
    assert_eq!(lines[2], "kept", "{out}");
    // On the machine, the account's processes run as base + uid: no account of the machine.
    assert!(lines[3].contains(&remap.uid_base.to_string()), "{out}");

    // An egress: the TUN and the nat rule go into the remapped container's namespace; the
    // proxy is unreachable, so nothing gets out (closed, not leaking).
    let (st, e) = lab
        .server
        .post(
            "/v1/admin/egress-ips",
            &lab.admin,
            json!({"label": "nowhere", "ip_address": "203.0.113.9", "tunnel_type": "proxy",
                "proxy_config": {"type": "socks", "server": "192.0.2.1", "server_port": 1080}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{e}");
    let (st, b) = lab
        .server
        .post(
            "/v1/admin/bindings",
            &lab.admin,
            json!({"host_id": host["id"], "egress_ip_id": e["data"]["id"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let task = lab
        .server
        .wait_task(&lab.admin, b["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let (ok, out) = ssh(
        &lab,
        &host,
        "grep -c sluice0 /proc/net/dev; curl -s --max-time 3 http://192.0.2.80/ && echo LEAKED; true",
    );
    assert!(ok, "{out}");
    assert_eq!(out.lines().next(), Some("1"), "the TUN is there: {out}");
    assert!(!out.contains("LEAKED"), "{out}");

    // sluice doctor says the engine remaps, and what that means.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("doctor")
        .env("SLUICE_DATA_DIR", &lab.server.dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("remapped (userns-remap=default)")
            && said.contains(&format!("machine's {} + N", remap.uid_base)),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Stop and start: the host comes back the same.
    step(&lab, &host, "stop", json!({})).await;
    step(&lab, &host, "start", json!({})).await;
    let (ok, out) = ssh(&lab, &host, "cat ~/notes; id -u");
    assert!(ok, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["kept", &account_uid.to_string()]
    );
    drop(lab);
    drop(engine);
    // The machine's own engine keeps its bridge (it builds images on it).
    assert_eq!(
        docker0(),
        had_docker0,
        "the second engine took docker0 away"
    );
}
