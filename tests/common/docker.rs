//! Helpers for tests on the real Docker engine: the managed image (built once for all test
//! processes), cleanup of everything one Sluice install made, the docker CLI, and `sluice
//! serve` as a child process.

use std::process::Command;

use sluice::runtime::docker::DockerRuntime;
use sluice::runtime::image::Kind;

/// Builds the managed user image once for all test processes (they run in parallel).
pub async fn ensure_image(runtime: &DockerRuntime) {
    ensure_kind(runtime, Kind::User).await
}

/// Builds the desktop image (and the user image under it) once for all test processes. The
/// user image first, under its own lock; then the desktop image under another, so tests that
/// need only the user image do not wait for the desktop's build.
pub async fn ensure_desktop_image(runtime: &DockerRuntime) {
    ensure_kind(runtime, Kind::User).await;
    ensure_kind(runtime, Kind::Desktop).await
}

async fn ensure_kind(runtime: &DockerRuntime, kind: Kind) {
    let lock =
        std::fs::File::create(format!("/tmp/sluice-test-image-{}.lock", kind.label())).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&lock);
    tokio::task::spawn_blocking(move || unsafe { libc::flock(fd, libc::LOCK_EX) })
        .await
        .unwrap();
    runtime.ensure_image(kind, |_, _| {}).await.expect(
        "the managed images build (is debian:bookworm-slim present? scripts/base-image.sh)",
    );
    drop(lock);
}

/// Removes every container and volume of one Sluice install, whatever the test did.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=sluice.instance={}", self.0);
        for (list, rm) in [
            (vec!["ps", "-aq", "--filter", &filter], vec!["rm", "-f"]),
            (
                vec!["volume", "ls", "-q", "--filter", &filter],
                vec!["volume", "rm", "-f"],
            ),
        ] {
            let out = Command::new("docker").args(&list).output().unwrap();
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker").args(&rm).args(&ids).output();
            }
        }
    }
}

/// Runs the docker CLI; answers success and stdout+stderr.
pub fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The pid of host `short`'s container's first process: its namespaces are under /proc/PID.
pub fn container_pid(short: &str) -> String {
    let (ok, out) = docker(&[
        "inspect",
        "-f",
        "{{.State.Pid}}",
        &sluice::runtime::docker::container_name(short),
    ]);
    assert!(ok, "{out}");
    out.trim().to_string()
}

/// `sluice serve` as a child process, killed on drop.
pub struct ServeProcess(pub std::process::Child);

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sluice serve` on `port` with its data in `dir` (and the database `url`, or the
/// default SQLite file there), logging to `dir/serve.log`.
pub fn spawn_serve(dir: &std::path::Path, url: Option<&str>, port: u16) -> ServeProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.arg("serve")
        .env("SLUICE_DATA_DIR", dir)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("SSH_PROXY_ADDR", "127.0.0.1")
        .env("SSH_PROXY_PORT", "0")
        .env("ADMIN_PASSWORD", super::ADMIN_PASSWORD)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    if let Some(url) = url {
        c.env("DATABASE_URL", url);
    }
    ServeProcess(c.spawn().expect("sluice serve starts"))
}
