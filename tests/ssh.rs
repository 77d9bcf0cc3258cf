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
            .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20"]);
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
                std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o700))
                    .unwrap();
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
                cmd.arg("-i")
                    .arg(key)
                    .args([
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
    assert!(text(&out.stderr).contains("to-stderr"), "{}", text(&out.stderr));

    // The owner's key, with the user name instead of the short id (one host).
    let out = lab.run(&lab.username, &Login::Key(&lab.key), "id -u; pwd");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1000\n/home/alice\n");

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
    assert!(text(&out.stderr).contains("Permission denied"), "{}", text(&out.stderr));
    let stranger = lab.dir.join("stranger");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    let out = lab.run(&short, &Login::Key(&stranger), "true");
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));

    let actions = lab.server.actions(&lab.admin).await;
    assert!(actions.iter().filter(|a| *a == "ssh.login_succeeded").count() >= 3, "{actions:?}");
    assert!(actions.contains(&"ssh.login_failed".to_string()), "{actions:?}");
    let (_, ev) = lab
        .server
        .get("/v1/admin/events?action=ssh.login_failed", &lab.admin)
        .await;
    assert_eq!(ev["data"][0]["source_ip"], "127.0.0.1", "{ev}");
}
