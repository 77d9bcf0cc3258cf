//! Sluice as README.md tells a newcomer to run it: the real binary, started from an empty
//! working directory with no data-dir, database or admin-password setting at all (only its
//! ports are moved off the defaults, so tests can run side by side). The admin's generated
//! password is read where a non-terminal start leaves it; a user's host goes to `running` on
//! the real Docker engine; the user lands in it through the short link, `curl | bash`, in a
//! pseudo-terminal, as README.md shows; and the operator's `sluice session list`, run in the
//! same directory on the same defaults, shows that session.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::{Cleanup, ensure_image};
use common::pty::Pty;
use serde_json::{Value, json};
use sluice::runtime::docker::DockerRuntime;

/// Sends `body` to `path` as the admin `token` (or none) and answers the JSON reply.
async fn call(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let mut req = match body {
        Some(b) => http.post(url).body(b.to_string()),
        None => http.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().json().await.unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_on_its_defaults_runs_a_host_a_user_logs_into() {
    let cwd = tempfile::tempdir().unwrap();
    // The image is shared by every test on this engine; build it once, under the tests' lock,
    // before the binary looks for it (it would build it itself otherwise, with the same tag).
    let probe = tempfile::tempdir().unwrap();
    ensure_image(&DockerRuntime::new(probe.path()).unwrap()).await;

    let (http_port, ssh_port) = (free_port(), free_port());
    let log = std::fs::File::create(cwd.path().join("serve.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("SSH_PROXY_ADDR", "127.0.0.1")
        .env("SSH_PROXY_PORT", ssh_port.to_string())
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("sluice serve starts");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let serve_log = || std::fs::read_to_string(cwd.path().join("serve.log")).unwrap_or_default();

    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "no answer: {}", serve_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The default data dir is ./data, made absolute: everything landed under the cwd.
    let data = cwd.path().join("data");
    assert!(data.join("sluice.db").exists(), "{}", serve_log());
    let instance = std::fs::read_to_string(data.join("instance_id")).unwrap();
    let _cleanup = Cleanup(instance.trim().to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !data.join("admin-password").exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin_pw = std::fs::read_to_string(data.join("admin-password"))
        .unwrap_or_else(|e| panic!("no admin-password file ({e}): {}", serve_log()));

    // README's own requests.
    let v = call(
        &http,
        format!("{base}/v1/auth/login"),
        None,
        Some(json!({"username": "admin", "password": admin_pw.trim()})),
    )
    .await;
    let token = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let v = call(
        &http,
        format!("{base}/v1/admin/users"),
        Some(&token),
        Some(json!({"username": "alice"})),
    )
    .await;
    let alice = v["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let v = call(
        &http,
        format!("{base}/v1/admin/hosts"),
        Some(&token),
        Some(json!({"user_id": alice})),
    )
    .await;
    let host_id = v["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let short = v["data"]["short_id"].as_str().unwrap().to_string();
    let password = v["data"]["ssh_password"].as_str().unwrap().to_string();
    let entry_command = v["data"]["access"]["entry_command"]
        .as_str()
        .unwrap()
        .to_string();

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let v = call(
            &http,
            format!("{base}/v1/admin/hosts/{host_id}"),
            Some(&token),
            None,
        )
        .await;
        match v["data"]["status"].as_str() {
            Some("running") => break,
            Some("error") => panic!("the host failed: {v}\n{}", serve_log()),
            _ => {}
        }
        assert!(Instant::now() < deadline, "not running: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The access command as the API shows it, run as a user would.
    assert!(
        entry_command.starts_with(&format!("curl -sSf {base}/entry/{short}")),
        "{entry_command}"
    );
    let home = tempfile::tempdir().unwrap();
    let mut term = Pty::spawn(
        Command::new("bash")
            .arg("-c")
            .arg(&entry_command)
            .env_remove("SSH_AUTH_SOCK")
            .env("HOME", home.path()),
    );
    term.expect(&format!("Password for {short}: "), Duration::from_secs(20));
    term.send(&format!("{password}\r"));
    term.expect("alice@", Duration::from_secs(60));
    // The operator, in the same directory and on the same defaults, sees the session live.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["session", "list", "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(listed["data"][0]["short_id"], short.as_str(), "{listed}");
    assert_eq!(listed["data"][0]["username"], "alice", "{listed}");
    term.send("echo landed-$((6 * 7)) in $PWD; exit 4\r");
    term.expect("landed-42 in /home/alice", Duration::from_secs(10));
    assert_eq!(
        term.wait(Duration::from_secs(20)),
        Some(4),
        "{}",
        term.output()
    );
}
