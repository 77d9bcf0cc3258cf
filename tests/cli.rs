//! The `sluice` binary as an operator meets it: help, settings and their errors, first start,
//! the token and admin commands, and logs that never carry a secret.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn sluice(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SLUICE_DATA_DIR", dir)
        // Each test's server gets its own SSH proxy port on loopback.
        .env("SSH_PROXY_ADDR", "127.0.0.1")
        .env("SSH_PROXY_PORT", "0")
        .current_dir(dir);
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `sluice serve` child process with its output going to files.
struct Serve {
    child: Child,
    base: String,
    out: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl Serve {
    fn start(dir: &Path, env: &[(&str, &str)]) -> Serve {
        let port = free_port();
        let out = dir.join(format!("stdout-{port}"));
        let err = dir.join(format!("stderr-{port}"));
        let mut c = sluice(dir);
        c.arg("serve")
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().expect("sluice starts");
        let s = Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
            out,
            err,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http("GET", &format!("{}/healthz", s.base), None, None).is_some() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "sluice serve did not come up: {}",
            std::fs::read_to_string(&s.err).unwrap_or_default()
        );
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn stop(mut self) -> (String, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        (self.stdout(), self.stderr())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking HTTP/1.1 client (status, JSON body), so these tests need no runtime.
fn http(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> Option<(u16, Value)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let mut s = std::net::TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let (head, payload) = resp.split_once("\r\n\r\n")?;
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    Some((
        status,
        serde_json::from_str(&payload).unwrap_or(Value::Null),
    ))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn login(base: &str, user: &str, pw: &str) -> Option<String> {
    let (st, v) = http(
        "POST",
        &format!("{base}/v1/auth/login"),
        None,
        Some(json!({"username": user, "password": pw})),
    )?;
    (st == 200).then(|| v["token"].as_str().unwrap().to_string())
}

#[test]
fn help_lists_commands_and_every_setting_with_its_variable() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in ["serve", "token", "admin"] {
        assert!(text.contains(cmd), "{cmd} in {text}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    // Secrets are listed too, but have no flag: a flag would show in `ps`.
    for var in ["DATABASE_URL", "ADMIN_PASSWORD", "ADMIN_JWT_SECRET"] {
        assert!(
            text.contains(&format!("env: {var}")),
            "{var} missing in serve --help:\n{text}"
        );
    }
    for flag in ["--database-url", "--admin-password", "--admin-jwt-secret"] {
        assert!(!text.contains(flag), "{flag} is a flag:\n{text}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--admin-password", "visible-in-ps"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    for var in [
        "HTTP_ADDR",
        "SLUICE_DATA_DIR",
        "ADMIN_USERNAME",
        "SSH_PROXY_PORT",
        "SLUICE_PUBLIC_HOST",
        "LOG_FORMAT",
        "LOG_LEVEL",
    ] {
        assert!(
            text.contains(&format!("env: {var}")),
            "{var} missing in serve --help:\n{text}"
        );
    }
    for default in ["0.0.0.0:8080", "./data", "2222", "admin", "text", "info"] {
        assert!(
            text.contains(&format!("default: {default}")),
            "default {default} missing"
        );
    }
}

#[test]
fn a_second_serve_on_the_same_data_dir_refuses_to_start_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    let first = Serve::start(dir.path(), &env);
    let out = sluice(dir.path())
        .arg("serve")
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SLUICE_DATA_DIR") && err.contains("in use"),
        "{err}"
    );
    drop(first);
    // A data dir that cannot be made is named too.
    let out = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SLUICE_DATA_DIR", "/proc/sluice-cannot-be-here")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SLUICE_DATA_DIR") && err.contains("/proc/sluice-cannot-be-here"),
        "{err}"
    );
}

#[test]
fn wrong_settings_name_the_variable_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("HTTP_ADDR", "not-an-address"),
        ("SSH_PROXY_PORT", "99999"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "loud[["),
        ("ADMIN_USERNAME", "Bad Name"),
        ("ADMIN_PASSWORD", "short"),
        ("ADMIN_JWT_SECRET", "too-short"),
        ("SLUICE_PUBLIC_HOST", "http://x/"),
        ("DATABASE_URL", "mysql://db/sluice"),
    ] {
        let out = sluice(dir.path())
            .arg("serve")
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(var),
            "{var}={value}: error does not name it: {err}"
        );
    }
    // The config file: unknown keys are named, and its values are checked like the variables.
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(&cfg, "htp_addr = \"127.0.0.1:1\"\n").unwrap();
    let out = sluice(dir.path())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("htp_addr") && err.contains("http_addr"),
        "{err}"
    );
    std::fs::write(&cfg, "ssh_proxy_port = 70000\n").unwrap();
    let out = sluice(dir.path())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SSH_PROXY_PORT"));
}

#[test]
fn config_file_overlays_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!("http_addr = \"127.0.0.1:{port}\"\nadmin_password = \"from-the-file-1\"\nlog_format = \"json\"\n"),
    )
    .unwrap();
    let mut child = sluice(dir.path())
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("HTTP_ADDR", "127.0.0.1:1")
        .env("ADMIN_PASSWORD", "from-the-environment")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..300 {
        if http("GET", &format!("{base}/healthz"), None, None).is_some() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "serve did not listen on the file's address");
    assert!(login(&base, "admin", "from-the-file-1").is_some());
    assert!(login(&base, "admin", "from-the-environment").is_none());
    let _ = child.kill();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let first = err.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<Value>(first).is_ok(),
        "json logs expected: {first}"
    );
    let _ = child.wait();
}

#[test]
fn first_start_prints_the_admin_password_once_and_logs_carry_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("LOG_LEVEL", "debug"),
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
    ];
    let s = Serve::start(dir.path(), &env);
    // No terminal on stdout: the password goes to a 0600 file the log names, not to a log.
    let pw_file = dir.path().join("admin-password");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pw_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let admin_pw = std::fs::read_to_string(&pw_file)
        .expect("the generated admin password is in the data dir")
        .trim()
        .to_string();
    assert_eq!(admin_pw.len(), 20);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&pw_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        s.stderr().contains(&pw_file.display().to_string()),
        "the log names the file: {}",
        s.stderr()
    );
    assert!(!s.stdout().contains(&admin_pw) && !s.stderr().contains(&admin_pw));
    let secret_file = dir.path().join("jwt_secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&secret_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let jwt_secret = std::fs::read_to_string(&secret_file).unwrap();

    let (st, health) = http("GET", &format!("{}/healthz", s.base), None, None).unwrap();
    assert_eq!(st, 200);
    assert_eq!(health["checks"]["docker"], "unavailable", "{health}");

    // Make every kind of secret pass through the server.
    let admin = login(&s.base, "admin", &admin_pw).expect("admin login with the printed password");
    let b = &s.base;
    let (_, u) = http(
        "POST",
        &format!("{b}/v1/admin/users"),
        Some(&admin),
        Some(json!({"username": "alice"})),
    )
    .unwrap();
    let user_pw = u["data"]["password"].as_str().unwrap().to_string();
    let uid = u["data"]["id"].as_str().unwrap().to_string();
    let (_, k) = http(
        "POST",
        &format!("{b}/v1/admin/users/{uid}/ssh-keys/generate"),
        Some(&admin),
        Some(json!({})),
    )
    .unwrap();
    let private_key = k["data"]["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(2)
        .unwrap()
        .to_string();
    let (_, t) = http(
        "POST",
        &format!("{b}/v1/admin/tokens"),
        Some(&admin),
        Some(json!({"name": "ci", "abilities": ["*"]})),
    )
    .unwrap();
    let api_token = t["data"]["token"].as_str().unwrap().to_string();
    let wg_private = "4HV0OMx1ELdM1FkdrBFfK2b1KaQnOPBuYZt9HnmVYXY=";
    let (st, _) = http("POST", &format!("{b}/v1/admin/egress-ips"), Some(&api_token), Some(json!({
        "label": "wg", "ip_address": "203.0.113.10", "tunnel_type": "wireguard",
        "wg_endpoint": "198.51.100.2:51820", "wg_public_key": "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        "wg_dns_server": "10.64.0.1", "wg_peer_address": "10.64.0.2/32", "wg_private_key": wg_private,
    }))).unwrap();
    assert_eq!(st, 201);
    let (st, _) = http("POST", &format!("{b}/v1/admin/egress-ips"), Some(&admin), Some(json!({
        "label": "ss", "ip_address": "203.0.113.20", "tunnel_type": "proxy",
        "proxy_config": {"type": "shadowsocks", "server": "192.0.2.1", "server_port": 8388, "method": "aes-256-gcm", "password": "ss-password-secret"},
    }))).unwrap();
    assert_eq!(st, 201);
    let (_, h) = http(
        "POST",
        &format!("{b}/v1/admin/hosts"),
        Some(&admin),
        Some(json!({"user_id": uid})),
    )
    .unwrap();
    let ssh_pw = h["data"]["ssh_password"].as_str().unwrap().to_string();
    let user_token = login(b, "alice", &user_pw).unwrap();
    let (st, _) = http(
        "POST",
        &format!("{b}/v1/user/change-password"),
        Some(&user_token),
        Some(json!({"old_password": user_pw, "new_password": "alice-new-secret"})),
    )
    .unwrap();
    assert_eq!(st, 204);
    let (st, _) = http(
        "POST",
        &format!("{b}/v1/auth/login"),
        None,
        Some(json!({"username": "alice", "password": "wrong-guess-secret"})),
    )
    .unwrap();
    assert_eq!(st, 401);
    std::thread::sleep(Duration::from_millis(500));

    let (_, log) = s.stop();
    assert!(
        log.contains("Sluice API listening"),
        "the log is captured: {log}"
    );
    for secret in [
        admin_pw.as_str(),
        user_pw.as_str(),
        "alice-new-secret",
        "wrong-guess-secret",
        &private_key,
        &api_token,
        wg_private,
        "ss-password-secret",
        &ssh_pw,
        &admin,
        &user_token,
        jwt_secret.trim(),
    ] {
        assert!(!log.contains(secret), "secret `{secret}` found in the log");
    }

    // A second start prints no password and keeps the secret.
    let s = Serve::start(dir.path(), &env);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!s.stdout().contains("password"), "{}", s.stdout());
    assert!(
        login(&s.base, "admin", &admin_pw).is_some(),
        "tokens and passwords survive a restart"
    );
    let (st, _) = http(
        "GET",
        &format!("{}/v1/admin/users", s.base),
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(st, 200, "login tokens survive a restart (same JWT secret)");
    drop(s);
}

#[test]
fn token_and_admin_commands_work_on_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let s = Serve::start(dir.path(), &[("ADMIN_PASSWORD", "first-password")]);

    let out = sluice(dir.path())
        .args([
            "token",
            "create",
            "--name",
            "deploy",
            "--ability",
            "host:read",
            "--ability",
            "task:read",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("sl_"));
    let (st, _) = http(
        "GET",
        &format!("{}/v1/admin/hosts", s.base),
        Some(&token),
        None,
    )
    .unwrap();
    assert_eq!(st, 200);
    let (st, _) = http(
        "GET",
        &format!("{}/v1/admin/users", s.base),
        Some(&token),
        None,
    )
    .unwrap();
    assert_eq!(st, 403);

    let out = sluice(dir.path()).args(["token", "list"]).output().unwrap();
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(
        list.contains("deploy") && list.contains("host:read,task:read"),
        "{list}"
    );
    assert!(!list.contains(&token));
    let id = list
        .lines()
        .find(|l| l.contains("deploy"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    let out = sluice(dir.path())
        .args(["token", "create", "--name", "x", "--ability", "host:fly"])
        .output()
        .unwrap();
    // Bad input: exit 2, naming the field and the value.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("abilities") && err.contains("host:fly"),
        "{err}"
    );

    let out = sluice(dir.path())
        .args(["token", "revoke", &id])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (st, _) = http(
        "GET",
        &format!("{}/v1/admin/hosts", s.base),
        Some(&token),
        None,
    )
    .unwrap();
    assert_eq!(st, 401);

    // Reset from stdin, then generated.
    let old = login(&s.base, "admin", "first-password").unwrap();
    let mut child = sluice(dir.path())
        .args(["admin", "reset-password", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"second-password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(login(&s.base, "admin", "second-password").is_some());
    let (st, _) = http(
        "GET",
        &format!("{}/v1/admin/users", s.base),
        Some(&old),
        None,
    )
    .unwrap();
    assert_eq!(st, 401, "a reset revokes older login tokens");
    let out = sluice(dir.path())
        .args(["admin", "reset-password"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(login(&s.base, "admin", &generated).is_some());
    let out = sluice(dir.path())
        .args(["admin", "reset-password", "--username", "ghost"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));
}

/// The operator's commands on the database, without a server: tables by default, `--json` for
/// scripts, hosts by short id, and every refusal as its documented exit code with the reason.
#[test]
fn operator_commands_print_tables_or_json_and_refuse_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| sluice(dir.path()).args(args).output().unwrap();
    let json_of = |out: &std::process::Output| -> Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let u = json_of(&run(&["user", "create", "olga", "--json"]));
    let uid = u["id"].as_str().unwrap().to_string();
    assert_eq!(u["password"].as_str().unwrap().len(), 20, "{u}");
    let table = String::from_utf8(run(&["user", "list"]).stdout).unwrap();
    assert!(
        table.starts_with("ID ") && table.contains("olga"),
        "{table}"
    );

    // Bad input: exit 2, every bad field named.
    let out = run(&[
        "host",
        "create",
        "--user",
        &uid,
        "--cpus",
        "99",
        "--memory-mb",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cpus") && err.contains("memory_mb"), "{err}");
    let out = run(&["user", "add-key", &uid, "ssh-ed25519 not-a-key"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("public_key"));

    // An account is named by its id or its user name, as an operator types it.
    let by_name = json_of(&run(&["user", "show", "olga", "--json"]));
    assert_eq!(by_name["id"], uid.as_str());
    let out = run(&["user", "show", "nobody-here"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("user not found"));
    assert_eq!(
        run(&["host", "create", "--user", "nobody-here"])
            .status
            .code(),
        Some(3),
        "no host for an account that does not exist"
    );
    let h = json_of(&run(&["host", "create", "--user", "olga", "--json"]));
    assert_eq!(h["user_id"], uid.as_str());
    let short = h["short_id"].as_str().unwrap();
    let mine = json_of(&run(&["host", "list", "--user", "olga", "--json"]));
    assert_eq!(mine["total"], 1, "{mine}");
    let pending = json_of(&run(&["host", "list", "--status", "pending", "--json"]));
    assert_eq!(pending["total"], 1, "{pending}");
    let running = json_of(&run(&["host", "list", "--status", "running", "--json"]));
    assert_eq!(running["total"], 0, "{running}");
    let out = run(&["host", "list", "--status", "asleep"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("status: must be one of"));

    // Expiry: set, refused in the past (the field named), cleared.
    let out = run(&[
        "user",
        "set-expiry",
        "olga",
        "--expires-at",
        "2031-05-01T08:00:00Z",
        "--json",
    ]);
    assert_eq!(json_of(&out)["expires_at"], "2031-05-01T08:00:00Z");
    let out = run(&[
        "user",
        "set-expiry",
        "olga",
        "--expires-at",
        "2001-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expires_at: must be in the future"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        run(&["user", "set-expiry", "olga"]).status.code(),
        Some(2),
        "a time or --never"
    );
    let out = run(&["user", "set-expiry", "olga", "--never", "--json"]);
    assert_eq!(json_of(&out)["expires_at"], Value::Null);
    assert!(h["ssh_password"].as_str().is_some_and(|p| !p.is_empty()));
    let shown = json_of(&run(&["host", "show", short, "--json"]));
    assert_eq!(shown["id"], h["id"]);
    assert_eq!(shown["status"], "pending");
    assert!(
        shown.get("ssh_password").is_none(),
        "shown once only: {shown}"
    );
    // The queued task is the server's to run; the CLI sees it.
    let tasks = json_of(&run(&["task", "list", "--host", short, "--json"]));
    assert_eq!(tasks["data"][0]["kind"], "create");
    assert!(
        tasks["data"][0]["created_by"]
            .as_str()
            .unwrap()
            .starts_with("cli:")
    );

    // An egress is named by its id or its label; a label two egresses share names neither.
    let spec = dir.path().join("ss.json");
    std::fs::write(
        &spec,
        json!({"label": "ss-out", "ip_address": "203.0.113.20", "tunnel_type": "proxy",
            "proxy_config": {"type": "shadowsocks", "server": "192.0.2.1", "server_port": 8388,
                "method": "aes-256-gcm", "password": "ss-password-secret"}})
        .to_string(),
    )
    .unwrap();
    let first = json_of(&run(&["egress", "create", "--from", "ss.json", "--json"]));
    let shown = json_of(&run(&["egress", "show", "ss-out", "--json"]));
    assert_eq!(shown["id"], first["id"]);
    assert!(!shown.to_string().contains("ss-password-secret"), "{shown}");
    let bound = json_of(&run(&[
        "binding", "create", "--host", short, "--egress", "ss-out", "--json",
    ]));
    assert_eq!(bound["egress_ip_id"], first["id"], "{bound}");
    let second = json_of(&run(&["egress", "create", "--from", "ss.json", "--json"]));
    let out = run(&["egress", "show", "ss-out"]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 egresses are labelled `ss-out`")
            && err.contains(first["id"].as_str().unwrap())
            && err.contains(second["id"].as_str().unwrap()),
        "{err}"
    );
    assert_eq!(
        run(&["egress", "show", "no-such-label"]).status.code(),
        Some(3)
    );
    assert!(
        run(&["egress", "delete", second["id"].as_str().unwrap()])
            .status
            .success()
    );

    // Not found: exit 3. Refused by state: exit 4. Not possible here: exit 6.
    assert_eq!(run(&["host", "show", "zzzzzzzz"]).status.code(), Some(3));
    assert_eq!(
        run(&["host", "unsuspend", short]).status.code(),
        Some(4),
        "a pending host is not suspended"
    );
    // Live sessions are the running server's; none runs on this data directory.
    let out = run(&["session", "list"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no `sluice serve` answers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (pub_key, _) = {
        let k = tempfile::tempdir().unwrap();
        let path = k.path().join("k");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "laptop", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        (
            std::fs::read_to_string(path.with_extension("pub")).unwrap(),
            k,
        )
    };
    let key = json_of(&run(&["user", "add-key", &uid, pub_key.trim(), "--json"]));
    assert_eq!(key["name"], "laptop");
    let keys = String::from_utf8(run(&["user", "keys", &uid]).stdout).unwrap();
    assert!(keys.contains("SHA256:"), "{keys}");

    let status = json_of(&run(&["status", "--json"]));
    assert_eq!(status["server_running"], false, "{status}");
    assert_eq!(status["docker"]["reachable"], true, "{status}");
    assert_eq!(status["hosts"]["total"], 1, "{status}");
    let stats = json_of(&run(&["stats", "--json"]));
    assert_eq!(
        (stats["users"].as_i64(), stats["hosts"]["total"].as_i64()),
        (Some(1), Some(1))
    );
    let events = json_of(&run(&["event", "list", "--json"]));
    let actions: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "user.created",
        "host.created",
        "ssh_key.added",
        "user.expiry_set",
    ] {
        assert!(actions.contains(&want), "{want}: {actions:?}");
    }
    // In the wrong directory (no data directory here): said plainly, and nothing is made.
    let elsewhere = dir.path().join("not-an-install");
    for args in [&["user", "list"][..], &["token", "list"][..]] {
        let out = sluice(dir.path())
            .env("SLUICE_DATA_DIR", &elsewhere)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(
            err.contains(&format!(
                "no Sluice data directory at {}",
                elsewhere.display()
            )) && err.contains("--data-dir"),
            "{args:?}: {err}"
        );
    }
    assert!(!elsewhere.exists());
    let olga = json_of(&run(&["event", "list", "--user", "olga", "--json"]));
    assert!(
        olga["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user_id"] == uid.as_str()),
        "{olga}"
    );
    assert!(olga["total"].as_i64().unwrap() >= 3, "{olga}");
}

/// Runs `sluice doctor` in `dir` with `env`: (exit code, output).
fn doctor(dir: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut c = sluice(dir);
    c.arg("doctor");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn doctor_checks_the_machine_says_what_to_do_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let http_addr = format!("127.0.0.1:{port}");
    let env = [
        ("SLUICE_DATA_DIR", data.to_str().unwrap()),
        ("HTTP_ADDR", http_addr.as_str()),
    ];
    // A fresh machine with a Docker engine and the base image (the tests make it): no failure,
    // and nothing made: the first start makes the data directory, keys and database.
    let (code, out) = doctor(dir.path(), &env);
    assert_eq!(code, Some(0), "{out}");
    for check in [
        "data directory",
        "docker",
        "base image",
        "tun",
        "database",
        "http port",
        "ssh proxy port",
        "open files",
        "tls",
        "clock",
    ] {
        assert!(out.contains(check), "{check} not checked: {out}");
    }
    assert!(
        out.contains("warn  tls") && out.contains("SLUICE_TLS_CERT"),
        "{out}"
    );
    assert!(!data.exists(), "the doctor made {}", data.display());

    // After a start: the files are there and private; a key file others can read fails, and
    // the fix is named.
    let s = Serve::start(dir.path(), &[("SLUICE_DATA_DIR", data.to_str().unwrap())]);
    let serving = s.base.trim_start_matches("http://").to_string();
    let (code, out) = doctor(
        dir.path(),
        &[
            ("SLUICE_DATA_DIR", data.to_str().unwrap()),
            ("HTTP_ADDR", serving.as_str()),
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("held by the running sluice serve"), "{out}");
    assert!(out.contains("schema current"), "{out}");
    drop(s);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        data.join("sealing.keys"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (code, out) = doctor(dir.path(), &env);
    assert_eq!(code, Some(7), "{out}");
    assert!(
        out.contains("FAIL  sealing keys") && out.contains("chmod 600"),
        "{out}"
    );
    std::fs::set_permissions(
        data.join("sealing.keys"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    // The port taken by something else, and a TLS pair that does not load.
    let _squatter = TcpListener::bind(&http_addr).unwrap();
    let (code, out) = doctor(
        dir.path(),
        &[
            ("SLUICE_DATA_DIR", data.to_str().unwrap()),
            ("HTTP_ADDR", http_addr.as_str()),
            ("SLUICE_TLS_CERT", "/etc/hostname"),
            ("SLUICE_TLS_KEY", "/etc/hostname"),
        ],
    );
    assert_eq!(code, Some(7), "{out}");
    assert!(
        out.contains("FAIL  http port") && out.contains("ss -ltnp"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  tls") && out.contains("no PEM certificate"),
        "{out}"
    );
}

/// `sluice event follow` prints events as other processes write them, filtered, oldest first,
/// one JSON object per line; it needs no server (it reads the database as the server does).
#[test]
fn events_are_followed_as_other_processes_write_them() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = sluice(dir.path()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["user", "create", "first"]);
    let mut follower = sluice(dir.path())
        .args(["event", "follow", "--action", "user.created", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    let name = |v: &Value| {
        v["details"]["username"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // The follower starts from what is new once it runs: write until it hears one.
    let mut heard = None;
    for i in 0..40 {
        run(&["user", "create", &format!("warm{i}")]);
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(500)) {
            heard = Some(v);
            break;
        }
    }
    let heard = heard.expect("the follower printed nothing in 20 s");
    assert_eq!(heard["action"], "user.created", "{heard}");
    assert!(name(&heard).starts_with("warm"), "{heard}");
    assert!(heard["actor"].as_str().unwrap().starts_with("cli:"));

    // Then every matching event, in order; other actions are left out.
    run(&["user", "create", "second"]);
    run(&["user", "disable", "second"]);
    run(&["user", "create", "third"]);
    let mut names = vec![];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !names.contains(&"third".to_string()) && Instant::now() < deadline {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
            assert_eq!(v["action"], "user.created", "{v}");
            names.push(name(&v));
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let tail: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.starts_with("warm"))
        .collect();
    assert_eq!(tail, ["second", "third"], "{names:?}");
}

/// The service units in deploy/ are what systemd accepts: its own verifier, given the units
/// with their programs where this build has them, reports nothing (an unknown key, a bad
/// value, a missing program or an unknown dependency would each be a line).
#[test]
fn the_service_units_are_what_systemd_accepts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let unit = |name: &str, from: &str, to: &Path| {
        let text = std::fs::read_to_string(root.join("deploy").join(name)).unwrap();
        assert!(
            text.contains(from) || from.is_empty(),
            "{name} names {from}"
        );
        let text = if from.is_empty() {
            text
        } else {
            text.replace(from, to.to_str().unwrap())
        };
        std::fs::write(dir.path().join(name), text).unwrap();
    };
    unit("sluice.service", "/usr/local/bin/sluice", Path::new(BIN));
    unit(
        "sluice-backup.service",
        "/usr/local/lib/sluice/backup.sh",
        &root.join("deploy/scripts/backup.sh"),
    );
    unit("sluice-backup.timer", "", Path::new(""));
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args([
            "sluice.service",
            "sluice-backup.service",
            "sluice-backup.timer",
        ])
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (scripts/install-deps.sh installs it)");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    // Its sandbox, as systemd scores it (0 is tight, 10 is none): 9.6 before the sandbox
    // (root with every capability), 3.5 with it. tests/egress.rs runs the binary under it.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", "sluice.service"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let exposure: f64 = said
        .lines()
        .find_map(|l| l.split("Overall exposure level for sluice.service:").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{said}{}", String::from_utf8_lossy(&out.stderr)));
    eprintln!("systemd-analyze security sluice.service: exposure {exposure}");
    assert!(exposure <= 4.0, "exposure {exposure}:\n{said}");
}
