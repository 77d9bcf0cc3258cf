//! The SSH proxy with OpenSSH's own clients (ssh, sftp, scp, ssh-agent) against real hosts on
//! the Docker engine: logins and refusals, every channel kind, limits, live sessions, and no
//! leftovers when a client vanishes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::docker::{Cleanup, ensure_image};
use common::pty::Pty;
use common::{Backend, RecordingRuntime, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice::config::ServeSettings;
use sluice::runtime::HostRuntime;
use sluice::runtime::docker::DockerRuntime;

struct Lab {
    server: Server,
    admin: String,
    user_id: String,
    username: String,
    host: Value,
    /// The owner's private key (its public half is registered).
    key: PathBuf,
    dir: PathBuf,
    _cleanup: Cleanup,
}

enum Login<'a> {
    Password(&'a str),
    Key(&'a Path),
}

async fn lab(username: &str, tweak: impl FnOnce(&mut ServeSettings)) -> Lab {
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(Backend::Sqlite, tmp.path()).await;
    let mut settings = common::settings(tmp.path(), url);
    // Access commands name the address the client used (127.0.0.1), as on a real install.
    settings.public_host = None;
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
        dir.clone(),
        Some(tmp),
    )
    .await;
    let admin = server.admin().await;
    let (user_id, _) = server.user(&admin, username).await;
    let key = dir.join("id_ed25519");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "owner", "-f"])
        .arg(&key)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let (st, v) = server
        .post(
            &format!("/v1/admin/users/{user_id}/ssh-keys"),
            &admin,
            json!({"public_key": public}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let host = server.host(&admin, &user_id, json!({})).await;
    let known = format!(
        "{}\n",
        server
            .running
            .as_ref()
            .unwrap()
            .ssh
            .known_hosts_line("127.0.0.1", server.ssh_addr.port())
    );
    std::fs::write(dir.join("known_hosts"), known).unwrap();
    Lab {
        server,
        admin,
        user_id,
        username: username.to_string(),
        host,
        key,
        dir,
        _cleanup: cleanup,
    }
}

impl Lab {
    fn short(&self) -> &str {
        self.host["short_id"].as_str().unwrap()
    }
    fn password(&self) -> &str {
        self.host["ssh_password"].as_str().unwrap()
    }
    fn host_id(&self) -> &str {
        self.host["id"].as_str().unwrap()
    }

    /// Options every client here uses: this lab's pinned proxy key, no user config.
    fn common_opts(&self, cmd: &mut Command) {
        cmd.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.join("known_hosts").display()
            ))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=20",
            ]);
    }

    /// Sets up `cmd` (ssh, sftp or scp) to log in with `login`.
    fn authenticate(&self, cmd: &mut Command, login: &Login) {
        match login {
            Login::Password(pw) => {
                let n = rand_suffix();
                let secret = self.dir.join(format!("pass-{n}"));
                std::fs::write(&secret, format!("{pw}\n")).unwrap();
                let helper = self.dir.join(format!("askpass-{n}"));
                std::fs::write(&helper, format!("#!/bin/sh\ncat '{}'\n", secret.display()))
                    .unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o700)).unwrap();
                cmd.env("SSH_ASKPASS", helper)
                    .env("SSH_ASKPASS_REQUIRE", "force")
                    .args([
                        "-o",
                        "PubkeyAuthentication=no",
                        "-o",
                        "PreferredAuthentications=password",
                        "-o",
                        "NumberOfPasswordPrompts=1",
                    ]);
            }
            Login::Key(key) => {
                cmd.arg("-i").arg(key).args([
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "PreferredAuthentications=publickey",
                    "-o",
                    "BatchMode=yes",
                ]);
            }
        }
        cmd.env_remove("SSH_AUTH_SOCK").stdin(Stdio::null());
    }

    /// `ssh -p PORT user@127.0.0.1 [args...]`.
    fn ssh(&self, user: &str, login: &Login, args: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        self.common_opts(&mut cmd);
        self.authenticate(&mut cmd, login);
        cmd.args(["-p", &self.server.ssh_addr.port().to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .args(args);
        cmd
    }

    /// `ssh -b SOURCE ...`: from another loopback address, as another client machine.
    fn ssh_from(&self, source: &str, user: &str, login: &Login, args: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        self.common_opts(&mut cmd);
        self.authenticate(&mut cmd, login);
        cmd.args(["-b", source])
            .args(["-p", &self.server.ssh_addr.port().to_string()])
            .arg(format!("{user}@127.0.0.1"))
            .args(args);
        cmd
    }

    fn run(&self, user: &str, login: &Login, command: &str) -> Output {
        self.ssh(user, login, &[command]).output().unwrap()
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst).to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn password_and_key_logins_pass_output_and_exit_codes_through() {
    let lab = lab("alice", |_| {}).await;
    let short = lab.short().to_string();

    let out = lab.run(
        &short,
        &Login::Password(lab.password()),
        "echo to-stdout; echo to-stderr >&2; whoami; exit 3",
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "to-stdout\nalice\n");
    assert!(
        text(&out.stderr).contains("to-stderr"),
        "{}",
        text(&out.stderr)
    );

    // The owner's key, with the user name instead of the short id (one host).
    let out = lab.run(&lab.username, &Login::Key(&lab.key), "id -u; pwd");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The account runs as the host's own uid.
    let uid = lab.host["account_uid"].as_i64().unwrap();
    assert_eq!(text(&out.stdout), format!("{uid}\n/home/alice\n"));

    // env crosses (the host's sshd accepts LANG and LC_*).
    let out = lab
        .ssh(
            &short,
            &Login::Key(&lab.key),
            &["-o", "SetEnv=LC_SLUICE_TEST=hello", "echo $LC_SLUICE_TEST"],
        )
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "hello\n", "{}", text(&out.stderr));

    // A wrong password, and a key the user does not own, are refused.
    let out = lab.run(&short, &Login::Password("not-the-password"), "true");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    let stranger = lab.dir.join("stranger");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    let out = lab.run(&short, &Login::Key(&stranger), "true");
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));

    let actions = lab.server.actions(&lab.admin).await;
    assert!(
        actions
            .iter()
            .filter(|a| *a == "ssh.login_succeeded")
            .count()
            >= 3,
        "{actions:?}"
    );
    assert!(
        actions.contains(&"ssh.login_failed".to_string()),
        "{actions:?}"
    );
    let (_, ev) = lab
        .server
        .get("/v1/admin/events?action=ssh.login_failed", &lab.admin)
        .await;
    assert_eq!(ev["data"][0]["source_ip"], "127.0.0.1", "{ev}");
}

async fn wait_sessions(lab: &Lab, n: usize) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (st, v) = lab.server.get("/v1/admin/sessions", &lab.admin).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if v["data"].as_array().unwrap().len() == n {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} sessions: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sftp_and_scp_carry_10_mib_intact() {
    let lab = lab("bob", |_| {}).await;
    let port = lab.server.ssh_addr.port().to_string();
    let src = lab.dir.join("payload");
    let data: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let back = lab.dir.join("payload.back");
    let batch = lab.dir.join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} up.bin\nget up.bin {}\n",
            src.display(),
            back.display()
        ),
    )
    .unwrap();
    // An sftp-only session: the upstream starts on the subsystem request.
    // (`sftp -b` implies BatchMode, so it logs in with the key; scp below uses the password.)
    let mut cmd = Command::new("sftp");
    lab.common_opts(&mut cmd);
    lab.authenticate(&mut cmd, &Login::Key(&lab.key));
    let out = cmd
        .args(["-P", &port, "-b"])
        .arg(&batch)
        .arg(format!("{}@127.0.0.1", lab.short()))
        .output()
        .unwrap();
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    assert!(
        std::fs::read(&back).unwrap() == data,
        "sftp round trip differs"
    );
    let out = lab.run(lab.short(), &Login::Key(&lab.key), "sha256sum up.bin");
    let ours = Command::new("sha256sum").arg(&src).output().unwrap();
    assert_eq!(
        text(&out.stdout).split(' ').next(),
        text(&ours.stdout).split(' ').next()
    );

    let scp_back = lab.dir.join("payload.scp");
    let mut cmd = Command::new("scp");
    lab.common_opts(&mut cmd);
    lab.authenticate(&mut cmd, &Login::Password(lab.password()));
    let out = cmd
        .args(["-P", &port])
        .arg(format!("{}@127.0.0.1:up.bin", lab.short()))
        .arg(&scp_back)
        .output()
        .unwrap();
    assert!(out.status.success(), "scp: {}", text(&out.stderr));
    assert!(
        std::fs::read(&scp_back).unwrap() == data,
        "scp copy differs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn local_and_remote_forwards_reach_through_the_container() {
    let lab = lab("carol", |_| {}).await;
    // -L to the container's own sshd (a server that speaks first), dialled inside the container.
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = local.local_addr().unwrap().port();
    drop(local);
    let mut fwd = lab
        .ssh(
            lab.short(),
            &Login::Key(&lab.key),
            &[
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                &format!("127.0.0.1:{lport}:127.0.0.1:22"),
            ],
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let greeting = loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", lport)).await {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 64];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await
                && n > 0
            {
                break String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
        assert!(std::time::Instant::now() < deadline, "-L never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(greeting.starts_with("SSH-2.0-OpenSSH"), "{greeting}");
    let _ = fwd.kill();
    let _ = fwd.wait();
    // A port nothing listens on inside the container: the refusal reaches the client.
    let out = lab
        .ssh(lab.short(), &Login::Key(&lab.key), &["-W", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(
        err.contains("open failed") && err.contains("the host could not connect to 127.0.0.1:1"),
        "{err}"
    );

    // -R: a listener inside the container, reaching a server on the client's side.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sport = server.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = server.accept().await {
            let _ = s.write_all(b"hello-from-the-client-side\n").await;
        }
    });
    let out = lab
        .ssh(
            lab.short(),
            &Login::Key(&lab.key),
            &[
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                &format!("127.0.0.1:9100:127.0.0.1:{sport}"),
                "sleep 1; cat </dev/tcp/127.0.0.1/9100",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "hello-from-the-client-side\n",
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shell_in_a_terminal_follows_window_changes() {
    let lab = lab("dave", |_| {}).await;
    let mut cmd = lab.ssh(lab.short(), &Login::Key(&lab.key), &["-tt"]);
    cmd.stdin(Stdio::null());
    let mut term = Pty::spawn(&mut cmd);
    term.expect("dave@", Duration::from_secs(20));
    term.send("stty size\r");
    term.expect("24 80", Duration::from_secs(10));
    term.resize(40, 132);
    std::thread::sleep(Duration::from_millis(300));
    term.send("stty size; tty\r");
    term.expect("40 132", Duration::from_secs(10));
    term.expect("/dev/pts/", Duration::from_secs(10));
    term.send("exit 7\r");
    assert_eq!(
        term.wait(Duration::from_secs(20)),
        Some(7),
        "{}",
        term.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_terminal_session_plays_back_with_its_output_and_not_its_typing() {
    let lab = lab("rita", |s| s.ssh.record_sessions = true).await;
    let mut cmd = lab.ssh(lab.short(), &Login::Key(&lab.key), &["-tt"]);
    cmd.stdin(Stdio::null());
    let mut term = Pty::spawn(&mut cmd);
    term.expect("rita@", Duration::from_secs(20));
    term.send("echo recorded-$((6 * 7))\r");
    term.expect("recorded-42", Duration::from_secs(10));
    // Typed at a prompt that does not echo: not in the recording (input is off by default).
    term.send("read -s SECRET; echo read-done\r");
    std::thread::sleep(Duration::from_millis(300));
    term.send("hunter2-unseen\r");
    term.expect("read-done", Duration::from_secs(10));
    term.resize(40, 132);
    std::thread::sleep(Duration::from_millis(300));
    term.send("stty size\r");
    term.expect("40 132", Duration::from_secs(10));
    term.send("exit 3\r");
    assert_eq!(
        term.wait(Duration::from_secs(20)),
        Some(3),
        "{}",
        term.output()
    );
    // A command without a terminal (as scp or a script runs) is not a terminal session.
    assert!(
        lab.run(lab.short(), &Login::Key(&lab.key), "echo no-pty")
            .status
            .success()
    );

    let s = &lab.server;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let listed = loop {
        let (st, v) = s.get("/v1/admin/recordings", &lab.admin).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if v["data"][0]["status"] == "stored" {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "not stored: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed["meta"]["total"], 1, "{listed}");
    let rec = &listed["data"][0];
    assert_eq!(rec["kind"], "ssh");
    assert_eq!(rec["username"], "rita");
    assert_eq!(rec["short_id"], lab.short());
    assert_eq!(rec["with_input"], false);
    let id = rec["id"].as_str().unwrap();

    // Only with session:read.
    let (_, v) = s
        .post(
            "/v1/admin/tokens",
            &lab.admin,
            json!({"name": "auditor", "abilities": ["session:read"]}),
        )
        .await;
    let auditor = v["data"]["token"].as_str().unwrap().to_string();
    let (_, v) = s
        .post(
            "/v1/admin/tokens",
            &lab.admin,
            json!({"name": "reader", "abilities": ["host:read"]}),
        )
        .await;
    let reader = v["data"]["token"].as_str().unwrap().to_string();
    assert_eq!(
        s.get("/v1/admin/recordings", &reader).await.0,
        StatusCode::FORBIDDEN
    );
    let resp = s
        .http
        .get(format!("{}/v1/admin/recordings/{id}/cast", s.base))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cast = resp.text().await.unwrap();
    let header: Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            header["version"].as_u64(),
            header["width"].as_u64(),
            header["height"].as_u64()
        ),
        (Some(2), Some(80), Some(24)),
        "{header}"
    );
    assert!(cast.contains(r#""r","132x40""#), "no resize in {cast}");
    assert!(
        !cast.contains("hunter2-unseen"),
        "typing was recorded: {cast}"
    );
    assert!(!cast.contains("no-pty"), "{cast}");

    // The CLI on the server's machine lists the same recording and writes the same cast to a
    // file only the operator reads, and never over an existing file.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .current_dir(&lab.dir)
            .env("SLUICE_DATA_DIR", &s.dir)
            .env(
                "DATABASE_URL",
                s.settings.store.database_url.as_deref().unwrap(),
            )
            .output()
            .unwrap()
    };
    let out = cli(&["recording", "list", "--host", lab.short(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mine: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(mine["data"][0]["id"], id, "{mine}");
    let out = cli(&["recording", "cast", id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = lab.dir.join(format!("{id}.cast"));
    assert_eq!(std::fs::read_to_string(&written).unwrap(), cast);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&written).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = cli(&["recording", "cast", id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot write"),
        "{}",
        text(&out.stderr)
    );

    // asciinema plays it back with the session's output.
    let file = lab.dir.join("session.cast");
    std::fs::write(&file, &cast).unwrap();
    // (It reads its terminal, so it runs in one.)
    let mut player = Pty::spawn(Command::new("asciinema").arg("cat").arg(&file));
    assert_eq!(
        player.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        player.output()
    );
    let played = player.output();
    assert!(
        played.contains("recorded-42") && played.contains("read-done") && played.contains("40 132"),
        "{played}"
    );

    // A recording that cannot be written is an event; the session goes on.
    let dir = lab.dir.join("recordings");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let mut cmd = lab.ssh(lab.short(), &Login::Key(&lab.key), &["-tt"]);
    cmd.stdin(Stdio::null());
    let mut term = Pty::spawn(&mut cmd);
    term.expect("rita@", Duration::from_secs(20));
    term.send("echo still-works; exit 5\r");
    term.expect("still-works", Duration::from_secs(10));
    assert_eq!(
        term.wait(Duration::from_secs(20)),
        Some(5),
        "{}",
        term.output()
    );
    let (_, v) = s
        .get("/v1/admin/events?action=recording.failed", &lab.admin)
        .await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(
        v["data"][0]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot open"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_forwarding_follows_the_setting() {
    for enabled in [false, true] {
        let lab = lab("erin", |s| s.ssh.agent_forwarding = enabled).await;
        let sock = lab.dir.join("agent.sock");
        let mut agent = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..50 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let added = Command::new("ssh-add")
            .arg(&lab.key)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        assert!(added.status.success(), "{}", text(&added.stderr));
        let mut cmd = lab.ssh(lab.short(), &Login::Key(&lab.key), &["-A", "ssh-add -l"]);
        cmd.env("SSH_AUTH_SOCK", &sock);
        let out = cmd.output().unwrap();
        let _ = agent.kill();
        let _ = agent.wait();
        if enabled {
            assert!(out.status.success(), "{}", text(&out.stderr));
            assert!(
                text(&out.stdout).contains("owner (ED25519)"),
                "{}",
                text(&out.stdout)
            );
        } else {
            assert_eq!(
                out.status.code(),
                Some(2),
                "{} {}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_say_why_and_failed_logins_lock_the_source_out() {
    let lab = lab("frank", |_| {}).await;
    let short = lab.short().to_string();
    let id = lab.host_id().to_string();
    let (st, v) = lab
        .server
        .post(&format!("/v1/admin/hosts/{id}/stop"), &lab.admin, json!({}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    lab.server
        .wait_task(&lab.admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    let out = lab.run(&short, &Login::Key(&lab.key), "true");
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("host {short} is stopped: start it")),
        "{err}"
    );

    let (st, _) = lab
        .server
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/admin/users/{}", lab.user_id),
            Some(&lab.admin),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let out = lab.run(&short, &Login::Password(lab.password()), "true");
    let err = text(&out.stderr);
    assert!(err.contains("account frank is disabled"), "{err}");
    let actions = lab.server.actions(&lab.admin).await;
    assert!(
        actions.contains(&"ssh.login_refused".to_string()),
        "{actions:?}"
    );

    // Five wrong passwords lock 127.0.0.1 out; then even the right key is refused, and told why.
    for _ in 0..5 {
        let out = lab.run(&short, &Login::Password("wrong password"), "true");
        assert_eq!(out.status.code(), Some(255));
    }
    let out = lab.run(&short, &Login::Key(&lab.key), "true");
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(
        err.contains("Too many failed logins from 127.0.0.1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn live_sessions_are_listed_and_can_be_ended() {
    let lab = lab("grace", |_| {}).await;
    let child = lab
        .ssh(
            lab.short(),
            &Login::Key(&lab.key),
            &["echo started; sleep 60"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let v = wait_sessions(&lab, 1).await;
    let s = &v["data"][0];
    assert_eq!(s["username"], "grace");
    assert_eq!(s["short_id"], lab.short());
    assert_eq!(s["method"], "publickey");
    assert!(
        s["source"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{s}"
    );
    assert!(s["bytes_in"].as_u64().unwrap() > 0, "{s}");
    let sid = s["id"].as_str().unwrap();
    let (st, _) = lab
        .server
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/admin/sessions/{sid}"),
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("session ended by an administrator"),
        "{}",
        text(&out.stderr)
    );
    wait_sessions(&lab, 0).await;
    let (st, _) = lab
        .server
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/admin/sessions/{sid}"),
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// The CLI on the server's machine reaches the running server's live sessions through the
/// control socket in its data directory: it lists them and ends one, as the API does, and
/// the ending is audited as the operator's.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_lists_and_ends_live_sessions_of_the_running_server() {
    let lab = lab("hedda", |_| {}).await;
    let child = long_session(&lab, &Login::Key(&lab.key), 1).await;
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env("SLUICE_DATA_DIR", &lab.server.dir)
            .env(
                "DATABASE_URL",
                lab.server.settings.store.database_url.as_deref().unwrap(),
            )
            .env("USER", "opal")
            .env_remove("SUDO_USER")
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = cli(&["status", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["server_running"], true, "{status}");
    let (code, out, err) = cli(&["session", "list", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["data"][0]["username"], "hedda", "{listed}");
    assert_eq!(listed["data"][0]["short_id"], lab.short(), "{listed}");
    let sid = listed["data"][0]["id"].as_str().unwrap().to_string();
    let (code, table, _) = cli(&["session", "list"]);
    assert_eq!(code, Some(0));
    assert!(
        table.contains(&sid) && table.contains(lab.short()),
        "{table}"
    );

    let (code, out, err) = cli(&["session", "end", &sid]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&sid), "{out}");
    let stderr = ended(child).await;
    assert!(
        stderr.contains("session ended by an administrator"),
        "{stderr}"
    );
    wait_sessions(&lab, 0).await;
    // Gone: not found, exit 3, as for any other CLI command.
    let (code, _, err) = cli(&["session", "end", &sid]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("session not found"), "{err}");

    let (_, ev) = lab
        .server
        .get("/v1/admin/events?action=ssh.session_ended", &lab.admin)
        .await;
    let e = &ev["data"][0];
    assert_eq!(e["actor"], "cli:opal", "{ev}");
    assert_eq!(e["details"]["session_id"], sid.as_str(), "{ev}");

    // With no server on the data directory, the CLI says so instead of guessing.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["session", "list"])
        .env("SLUICE_DATA_DIR", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(
        text(&out.stderr).contains("no `sluice serve` answers on data directory"),
        "{}",
        text(&out.stderr)
    );
}

/// Starts `ssh ... sleep 60` and waits until the proxy lists it.
async fn long_session(lab: &Lab, login: &Login<'_>, n: usize) -> std::process::Child {
    let child = lab
        .ssh(lab.short(), login, &["echo started; sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_sessions(lab, n).await;
    child
}

/// Waits for `child` to end (within 20 s) and answers its stderr.
async fn ended(child: std::process::Child) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("the session ended in time")
    .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    text(&out.stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn live_sessions_end_when_what_they_logged_in_with_goes_away() {
    let lab = lab("hank", |_| {}).await;
    let host = lab.host_id().to_string();

    // The SSH password is rotated: a password session ends, a key session goes on.
    let by_password = long_session(&lab, &Login::Password(lab.password()), 1).await;
    let by_key = long_session(&lab, &Login::Key(&lab.key), 2).await;
    let (st, _) = lab
        .server
        .post(
            &format!("/v1/admin/hosts/{host}/rotate-ssh-password"),
            &lab.admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let why = ended(by_password).await;
    assert!(why.contains("SSH password of host"), "{why}");
    wait_sessions(&lab, 1).await;

    // The key it logged in with is removed: the key session ends.
    let (_, keys) = lab
        .server
        .get(
            &format!("/v1/admin/users/{}/ssh-keys", lab.user_id),
            &lab.admin,
        )
        .await;
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_string();
    let (st, _) = lab
        .server
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/admin/users/{}/ssh-keys/{key_id}", lab.user_id),
            Some(&lab.admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let why = ended(by_key).await;
    assert!(
        why.contains("key this session logged in with was removed"),
        "{why}"
    );
    wait_sessions(&lab, 0).await;

    // The account is disabled: a session with the new password ends, told why.
    let (_, v) = lab
        .server
        .get(&format!("/v1/admin/hosts/{host}"), &lab.admin)
        .await;
    assert_eq!(v["data"]["status"], "running");
    let (st, v) = lab
        .server
        .post(
            &format!("/v1/admin/hosts/{host}/rotate-ssh-password"),
            &lab.admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let password = v["data"]["ssh_password"].as_str().unwrap().to_string();
    let session = long_session(&lab, &Login::Password(&password), 1).await;
    let (st, _) = lab
        .server
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/admin/users/{}", lab.user_id),
            Some(&lab.admin),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let why = ended(session).await;
    assert!(why.contains("account hank is disabled"), "{why}");
    wait_sessions(&lab, 0).await;
}

/// This process's TCP sockets, in its own namespace and in the container's (where the proxy's
/// upstream connections live). Unix sockets (the Docker client's pool) are not counted.
fn tcp_fds(container_pid: &str) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in [
        "/proc/self/net/tcp".to_string(),
        "/proc/self/net/tcp6".to_string(),
        format!("/proc/{container_pid}/net/tcp"),
        format!("/proc/{container_pid}/net/tcp6"),
    ] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            if let Some(inode) = line.split_whitespace().nth(9) {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| inodes.contains(l.to_string_lossy().as_ref()))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_sessions_at_once_and_a_killed_client_leaves_nothing_behind() {
    let lab = lab("heidi", |_| {}).await;
    // Warm up (the first session makes the Docker client's connections).
    let out = lab.run(lab.short(), &Login::Key(&lab.key), "true");
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_sessions(&lab, 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let pid = common::docker::container_pid(lab.short());
    let (fds_before, tasks_before) = (tcp_fds(&pid), metrics.num_alive_tasks());

    // From five addresses: one address may open only so many connections at once (the
    // proxy throttles new connections per source).
    let children: Vec<_> = (0..50)
        .map(|i| {
            lab.ssh_from(
                &format!("127.0.0.{}", 10 + i % 5),
                lab.short(),
                &Login::Key(&lab.key),
                &[&format!("echo session-{i}; sleep 3")],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let outs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (i, out) in outs.iter().enumerate() {
        assert!(out.status.success(), "session {i}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("session-{i}\n"));
    }

    // A client killed in the middle of a large download.
    let mut child = lab
        .ssh(
            lab.short(),
            &Login::Key(&lab.key),
            &["head -c 500000000 /dev/zero"],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Read;
        let mut got = 0;
        let mut buf = vec![0u8; 65536];
        let mut stdout = child.stdout.take().unwrap();
        while got < 4 * 1024 * 1024 {
            got += stdout.read(&mut buf).unwrap();
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    wait_sessions(&lab, 0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (fds, tasks) = (tcp_fds(&pid), metrics.num_alive_tasks());
        if fds <= fds_before && tasks <= tasks_before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leftovers: fds {fds_before} -> {fds}, tasks {tasks_before} -> {tasks}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And nothing is left running for it in the container.
    let out = lab.run(lab.short(), &Login::Key(&lab.key), "pgrep -c head || true");
    assert_eq!(text(&out.stdout).trim(), "0", "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_short_link_lands_a_user_in_their_host() {
    let lab = lab("ivan", |_| {}).await;
    // Stop the host first: the link starts it, with visible progress.
    let id = lab.host_id().to_string();
    let (_, v) = lab
        .server
        .post(&format!("/v1/admin/hosts/{id}/stop"), &lab.admin, json!({}))
        .await;
    lab.server
        .wait_task(&lab.admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    let script = reqwest::get(format!("{}/entry/{}", lab.server.base, lab.short()))
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/x-shellscript")
    );
    let body = script.text().await.unwrap();
    assert!(!body.contains("StrictHostKeyChecking=no"));

    let user_shell = || {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!(
                "curl -sSf {}/entry/{} | bash",
                lab.server.base,
                lab.short()
            ))
            .env_remove("SSH_AUTH_SOCK")
            .env("HOME", &lab.dir);
        cmd
    };
    let mut term = Pty::spawn(&mut user_shell());
    term.expect(
        &format!("Password for {}: ", lab.short()),
        Duration::from_secs(20),
    );
    term.send(&format!("{}\r", lab.password()));
    term.expect("starting host", Duration::from_secs(20));
    term.expect("ivan@", Duration::from_secs(60));
    term.send("echo landed-$((6 * 7)); exit 5\r");
    term.expect("landed-42", Duration::from_secs(10));
    assert_eq!(
        term.wait(Duration::from_secs(20)),
        Some(5),
        "{}",
        term.output()
    );
    assert!(
        !term.output().contains(lab.password()),
        "the password was echoed"
    );

    // A wrong password: the script prints why and exits 3.
    let mut term = Pty::spawn(&mut user_shell());
    term.expect("Password for", Duration::from_secs(20));
    term.send("not it\r");
    assert_eq!(
        term.wait(Duration::from_secs(20)),
        Some(3),
        "{}",
        term.output()
    );
    assert!(
        term.output().contains("wrong password"),
        "{}",
        term.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bootstrap_script_works_with_a_password_full_of_quotes_and_spaces() {
    let lab = lab("judy", |_| {}).await;
    let pw = r#"it's a "quoted" \ pass"#;
    let token = lab.server.login("judy", "judy-password").await;
    let (st, v) = lab
        .server
        .post(
            "/v1/user/change-password",
            &token,
            json!({"old_password": "judy-password", "new_password": pw}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let user_shell = || {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!(
                "curl -sSf {}/v1/bootstrap/script | bash",
                lab.server.base
            ))
            .env_remove("SSH_AUTH_SOCK")
            .env("HOME", &lab.dir);
        cmd
    };
    let mut term = Pty::spawn(&mut user_shell());
    term.expect("Sluice user name: ", Duration::from_secs(20));
    term.send("judy\r");
    term.expect("Password for judy: ", Duration::from_secs(10));
    term.send(&format!("{pw}\r"));
    term.expect("judy@", Duration::from_secs(60));
    term.send("echo boot-$((6 * 7)); exit\r");
    term.expect("boot-42", Duration::from_secs(10));
    assert_eq!(
        term.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        term.output()
    );

    // Wrong password: exit code 3.
    let mut term = Pty::spawn(&mut user_shell());
    term.expect("Sluice user name: ", Duration::from_secs(20));
    term.send("judy\r");
    term.expect("Password for judy: ", Duration::from_secs(10));
    term.send("nope\r");
    assert_eq!(
        term.wait(Duration::from_secs(20)),
        Some(3),
        "{}",
        term.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_overlong_sessions_end_with_a_message_and_sources_are_capped() {
    let lab = lab("ken", |s| {
        s.ssh.idle_timeout_secs = 2;
        s.ssh.max_session_secs = 5;
        s.ssh.max_connections_per_source = 2;
    })
    .await;
    let started = std::time::Instant::now();
    let out = lab.run(lab.short(), &Login::Key(&lab.key), "sleep 30");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("session idle for 2 s"),
        "{}",
        text(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let out = lab.run(
        lab.short(),
        &Login::Key(&lab.key),
        "while true; do echo tick; sleep 0.5; done",
    );
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(
        err.contains("session reached its maximum length of 5 s"),
        "{err}"
    );
    assert!(text(&out.stdout).contains("tick"));

    // Two connections from 127.0.0.1 are allowed at once; a third is turned away. The two
    // stay 3 s, talking every half second (under the idle and maximum lengths), so that both
    // are live together even when logins are slow on a loaded machine.
    let holders: Vec<_> = (0..2)
        .map(|_| {
            lab.ssh(
                lab.short(),
                &Login::Key(&lab.key),
                &["for i in 1 2 3 4 5 6; do echo .; sleep 0.5; done"],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect();
    wait_sessions(&lab, 2).await;
    let out = lab.run(lab.short(), &Login::Key(&lab.key), "true");
    assert_eq!(out.status.code(), Some(255), "a third connection got in");
    for mut h in holders {
        assert!(h.wait().unwrap().success());
    }
    wait_sessions(&lab, 0).await;
    let out = lab.run(lab.short(), &Login::Key(&lab.key), "true");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// ssh-audit (from PyPI) against the proxy: no failure, no CVE, no additional note (its
/// DHEat connection-rate test included), and no warning but the post-quantum one that the
/// classic key exchanges, kept for older clients, carry.
#[tokio::test(flavor = "multi_thread")]
async fn ssh_audit_finds_nothing_but_post_quantum_notes() {
    let server = Server::start(Backend::Sqlite).await;
    let port = server.ssh_addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("ssh-audit")
            .args(["-j", "-p", &port, "127.0.0.1"])
            .output()
            .expect("ssh-audit is installed (scripts/install-deps.sh)")
    })
    .await
    .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    const POST_QUANTUM: &str = "does not provide protection against post-quantum attacks";
    let mut complaints = vec![];
    for section in ["kex", "key", "enc", "mac"] {
        for alg in report[section].as_array().unwrap() {
            let name = alg["algorithm"].as_str().unwrap();
            for level in ["fail", "warn"] {
                for note in alg["notes"][level].as_array().into_iter().flatten() {
                    if !(level == "warn" && note == POST_QUANTUM) {
                        complaints.push(format!("{section} {name}: {level}: {note}"));
                    }
                }
            }
        }
    }
    for list in ["additional_notes", "cves"] {
        for note in report[list].as_array().into_iter().flatten() {
            complaints.push(format!("{list}: {note}"));
        }
    }
    assert!(complaints.is_empty(), "{complaints:#?}");
    // A post-quantum exchange is offered first.
    assert_eq!(
        report["kex"][0]["algorithm"], "mlkem768x25519-sha256",
        "{report}"
    );
}

/// 1100 TCP connections opened to the API and left silent take neither `/healthz` nor an SSH
/// login down, and the API closes them once their header deadline passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_idle_api_sockets_stop_neither_health_nor_ssh() {
    // The server runs in this process: give it and the idle clients room.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let lab = lab("ivy", |s| s.http_header_timeout_secs = 5).await;
    let mut idle = vec![];
    for _ in 0..1100 {
        idle.push(
            tokio::net::TcpStream::connect(lab.server.addr)
                .await
                .expect("the API accepts"),
        );
    }
    let (st, v) = lab
        .server
        .call(reqwest::Method::GET, "/healthz", None, None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let out = lab.run(lab.short(), &Login::Key(&lab.key), "echo still-here");
    assert_eq!(text(&out.stdout), "still-here\n", "{}", text(&out.stderr));

    // Past the header deadline, the server has closed every one of them.
    tokio::time::sleep(Duration::from_secs(7)).await;
    for s in &mut idle {
        use tokio::io::AsyncReadExt;
        let mut rest = vec![];
        // Closed (perhaps after a 408): the read reaches the end rather than waiting.
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("an idle connection is still open");
    }
}

/// The test process's resident memory (Sluice runs in it), in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_forwards_into_a_listener_that_never_reads_leave_sluice_bounded() {
    let lab = lab("ivan", |s| s.ssh.max_sessions_per_account = 2).await;
    // Inside the host: a listener that accepts every connection and never reads one.
    let out = lab.run(
        lab.short(),
        &Login::Key(&lab.key),
        "setsid nohup perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => \"127.0.0.1\", \
         LocalPort => 9000, Listen => 1024, ReuseAddr => 1) or die $!; while (my $c = $s->accept) { push @k, $c }' \
         </dev/null >/dev/null 2>&1 & sleep 1; echo started",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_sessions(&lab, 0).await;
    let before = rss_mib();

    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = local.local_addr().unwrap().port();
    drop(local);
    let errors = lab.dir.join("forward.err");
    let mut fwd = lab
        .ssh(
            lab.short(),
            &Login::Key(&lab.key),
            &[
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                &format!("127.0.0.1:{lport}:127.0.0.1:9000"),
            ],
        )
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .unwrap();
    wait_sessions(&lab, 1).await;
    // 200 connections through the forward, each writing as fast as it can.
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..200 {
        let written = written.clone();
        writers.push(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", lport)).await else {
                return;
            };
            let chunk = vec![7u8; 64 * 1024];
            // Bounded: 64 MiB at most per connection.
            for _ in 0..1024 {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
                written.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    // Until the writers stall (nothing read at the far end, so every buffer on the way fills).
    let mut last = 0;
    let mut peak = before;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_mib());
        let now = written.load(std::sync::atomic::Ordering::Relaxed);
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    let during = rss_mib().max(peak);
    // Another session of the account fits (2 at most); a third is refused, saying why.
    let mut second = lab
        .ssh(lab.short(), &Login::Key(&lab.key), &["sleep 30"])
        .spawn()
        .unwrap();
    wait_sessions(&lab, 2).await;
    let third = lab.run(lab.short(), &Login::Key(&lab.key), "true");
    assert!(!third.status.success());
    assert!(
        text(&third.stderr).contains("account ivan already has 2 live sessions"),
        "{}",
        text(&third.stderr)
    );
    // A browser terminal into the account's host counts the same way.
    {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let jwt = lab.server.login("admin", common::ADMIN_PASSWORD).await;
        let base = lab.server.base.replace("http://", "ws://");
        let mut req = format!("{base}/web/hosts/{}/terminal/socket", lab.host_id())
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("cookie", format!("sluice_session={jwt}").parse().unwrap());
        req.headers_mut()
            .insert("origin", lab.server.base.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let said = until_closed(&mut ws, Duration::from_secs(15)).await;
        assert!(
            said.contains("account ivan already has 2 live sessions"),
            "{said}"
        );
    }
    let _ = second.kill();
    let _ = second.wait();

    let _ = fwd.kill();
    let _ = fwd.wait();
    for w in writers {
        w.abort();
    }
    wait_sessions(&lab, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_mib();
    let refused = std::fs::read_to_string(&errors)
        .unwrap()
        .matches("too many channels: a connection may have 32 open at once")
        .count();
    eprintln!(
        "200 forwards into a listener that never reads: {} MiB written; Sluice's process {before} MiB before, {during} MiB during, {after} MiB after; {refused} channels refused",
        last / (1024 * 1024)
    );
    // Beyond 32 channels on the connection, each open is refused, saying why (ssh may not
    // have got to every one of the 200 by the time it is stopped).
    assert!(
        refused >= 100,
        "channels beyond 32 per connection are refused, saying why: {refused}"
    );
    // 32 channels at most 256 KiB each inside Sluice (8 MiB), with russh's and the
    // allocator's own: well under 64 MiB. Before the budget, each of the 200 channels could
    // hold 64 packets.
    assert!(
        during <= before + 64,
        "Sluice grew from {before} MiB to {during} MiB"
    );
}

/// Opens a browser terminal into the lab's host as the holder of login `jwt` (its session
/// cookie), and waits until the shell answers.
async fn browser_terminal(
    lab: &Lab,
    jwt: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let base = lab.server.base.replace("http://", "ws://");
    let mut req = format!(
        "{base}/web/hosts/{}/terminal/socket?cols=80&rows=24",
        lab.host_id()
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("cookie", format!("sluice_session={jwt}").parse().unwrap());
    req.headers_mut()
        .insert("origin", lab.server.base.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::Binary(b"echo ready-$((6*7))\r".to_vec().into()))
        .await
        .unwrap();
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains("ready-42") {
        assert!(std::time::Instant::now() < deadline, "no shell: {seen}");
        if let Ok(Some(Ok(Message::Binary(b)))) =
            tokio::time::timeout(Duration::from_secs(1), ws.next()).await
        {
            seen.push_str(&String::from_utf8_lossy(&b));
        }
    }
    ws
}

/// Reads until the terminal closes; answers everything it said.
async fn until_closed(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    limit: Duration,
) -> String {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut said = String::new();
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "the terminal stayed open: {said}");
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => said.push_str(&String::from_utf8_lossy(&b)),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return said,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("the terminal stayed open: {said}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_terminal_ends_with_the_sign_in_it_was_opened_with() {
    let lab = lab("judy", |_| {}).await;
    // The administrator's terminal ends with their logout; another login of theirs goes on.
    let first = lab.server.login("admin", common::ADMIN_PASSWORD).await;
    let second = lab.server.login("admin", common::ADMIN_PASSWORD).await;
    let mut ended = browser_terminal(&lab, &first).await;
    let mut kept = browser_terminal(&lab, &second).await;
    let (st, v) = lab
        .server
        .call(reqwest::Method::POST, "/v1/auth/logout", Some(&first), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let said = until_closed(&mut ended, Duration::from_secs(15)).await;
    assert!(said.contains("the sign-in of admin:admin ended"), "{said}");
    {
        use futures::SinkExt;
        kept.send(tokio_tungstenite::tungstenite::Message::Binary(
            b"echo still-$((6*7))\r".to_vec().into(),
        ))
        .await
        .unwrap();
    }
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("still-42") {
        assert!(
            std::time::Instant::now() < deadline,
            "the other login's terminal ended: {seen}"
        );
        use futures::StreamExt;
        if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b)))) =
            tokio::time::timeout(Duration::from_secs(1), kept.next()).await
        {
            seen.push_str(&String::from_utf8_lossy(&b));
        }
    }

    // The owner's terminal ends when an administrator gives them a new password.
    let rotate = || async {
        let (st, v) = lab
            .server
            .post(
                &format!("/v1/admin/users/{}/rotate-password", lab.user_id),
                &lab.admin,
                json!({}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["data"]["password"].as_str().unwrap().to_string()
    };
    let password = rotate().await;
    let owner = lab.server.login("judy", &password).await;
    let mut theirs = browser_terminal(&lab, &owner).await;
    rotate().await;
    let said = until_closed(&mut theirs, Duration::from_secs(15)).await;
    assert!(said.contains("the sign-in of user:judy ended"), "{said}");

    // Every terminal ends when the signing secret is rotated (sluice keys rotate-jwt).
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["keys", "rotate-jwt"])
        .env("SLUICE_DATA_DIR", &lab.dir)
        .env(
            "DATABASE_URL",
            lab.server.settings.store.effective_database_url(),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = until_closed(&mut kept, Duration::from_secs(15)).await;
    assert!(said.contains("the sign-in of admin:admin ended"), "{said}");
}

/// One terminal session in the lab's host running `command`, ended; answers its recording
/// once it is stored.
async fn recorded_session(lab: &Lab, command: &str, n: usize) -> Value {
    let mut cmd = lab.ssh(lab.short(), &Login::Key(&lab.key), &["-tt"]);
    cmd.stdin(Stdio::null());
    let mut term = Pty::spawn(&mut cmd);
    let marker = format!("session-{}-done", 40 + n);
    term.expect(&format!("{}@", lab.username), Duration::from_secs(20));
    term.send(&format!("{command}; echo session-$((40 + {n}))-done\r"));
    term.expect(&marker, Duration::from_secs(60));
    term.send("exit\r");
    term.wait(Duration::from_secs(20));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = lab.server.get("/v1/admin/recordings", &lab.admin).await;
        let newest = v["data"][0].clone();
        if newest["status"] == "stored" {
            return newest;
        }
        assert!(std::time::Instant::now() < deadline, "not stored: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recordings_stop_at_their_cap_and_the_oldest_expire_past_the_disk_budget() {
    let lab = lab("yuri", |s| {
        s.ssh.record_sessions = true;
        s.ssh.recording_max_mb = 1;
        s.ssh.recordings_disk_budget_mb = 1;
    })
    .await;
    let s = &lab.server;
    // `yes` runs past the recording's cap: the session goes on, the recording stops.
    let capped = recorded_session(&lab, "yes | head -c 3000000", 1).await;
    assert_eq!(capped["truncated"], true, "{capped}");
    let id = capped["id"].as_str().unwrap().to_string();
    let resp = s
        .http
        .get(format!("{}/v1/admin/recordings/{id}/cast", s.base))
        .bearer_auth(&lab.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cast = resp.text().await.unwrap();
    assert!(cast.len() <= 1024 * 1024 + 256, "{} bytes", cast.len());
    assert!(cast.len() > 1024 * 1024 - 70 * 1024, "{} bytes", cast.len());
    assert!(
        cast.lines()
            .last()
            .unwrap()
            .contains("the recording stopped here, at its size cap"),
        "{}",
        cast.lines().last().unwrap()
    );
    assert!(
        s.actions(&lab.admin)
            .await
            .contains(&"recording.truncated".to_string())
    );

    // Two sessions of incompressible output (about 0.8 MiB on disk each): past the 1 MiB
    // budget, the recordings that ended first go, each with an event; the newest stays.
    let second = recorded_session(&lab, "head -c 3000000 /dev/urandom | base64 -w0; echo", 2).await;
    let third = recorded_session(&lab, "head -c 3000000 /dev/urandom | base64 -w0; echo", 3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let expired = loop {
        let (_, v) = s
            .get("/v1/admin/events?action=recording.expired", &lab.admin)
            .await;
        let ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["details"]["recording_id"].as_str().unwrap().to_string())
            .collect();
        if ids.len() >= 2 {
            break ids;
        }
        assert!(std::time::Instant::now() < deadline, "nothing expired: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(expired.contains(&id), "{expired:?}");
    assert!(
        expired.contains(&second["id"].as_str().unwrap().to_string()),
        "{expired:?}"
    );
    let (_, v) = s.get("/v1/admin/recordings", &lab.admin).await;
    let left: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [third["id"].as_str().unwrap()], "{v}");
    assert_eq!(
        std::fs::read_dir(lab.dir.join("recordings"))
            .unwrap()
            .count(),
        1,
        "only the kept recording's file is on disk"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_terminals_hold_their_place_under_the_http_connection_cap() {
    let lab = lab("ursa", |s| {
        s.http_max_connections = 2;
        s.http_header_timeout_secs = 2;
    })
    .await;
    let jwt = lab.server.login("admin", common::ADMIN_PASSWORD).await;
    // The test's own keep-alive connections go idle and are closed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first = browser_terminal(&lab, &jwt).await;
    let _second = browser_terminal(&lab, &jwt).await;
    // Two sockets, two places: a third connection waits for one.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(lab.server.addr)
        .await
        .unwrap();
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_secs(2), raw.read(&mut buf)).await;
    assert!(early.is_err(), "served past the cap: {early:?}");
    // One terminal closes: its place goes to the waiting connection.
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf))
        .await
        .expect("the waiting connection was served once a terminal closed")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}
