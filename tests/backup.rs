//! The restore drill, on SQLite and on PostgreSQL, with real hosts behind the lab's WireGuard:
//! users, a host bound to an egress and an API token; a backup taken while the server runs, by
//! `deploy/scripts/backup.sh` as cron or the timer would (retention included); the data
//! directory and the database destroyed; `sluice backup restore`; and the restored install
//! starts, logs in with the same password, takes the same API token, and its host's traffic
//! leaves through its egress again. Also: a damaged archive is refused before anything is
//! written, and a restore over a running server or an existing install is refused.

mod common;
mod lab;
mod rig;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Backend, docker::Cleanup};
use reqwest::StatusCode;
use rig::{exec, lab_egress, start_server, wait_output};
use serde_json::json;

on_both_backends!(a_restored_install_runs_its_hosts_through_their_egress);

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn sluice(data: &Path, url: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("SLUICE_DATA_DIR", data)
        .env("DATABASE_URL", url)
        .output()
        .unwrap()
}

/// Drops the test's PostgreSQL database and makes it again, empty.
async fn destroy_postgres(url: &str) {
    use sqlx::Connection;
    let admin = std::env::var("SLUICE_TEST_PG_URL").unwrap();
    let name = url.rsplit('/').next().unwrap();
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    for sql in [
        format!("DROP DATABASE {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

async fn a_restored_install_runs_its_hosts_through_their_egress(b: Backend) {
    let mut lab = lab::Lab::new();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let url = common::database_url(b, &data).await;
    let (mut s, runtime) = start_server(&data, &url, &lab).await;
    let _cleanup = Cleanup(runtime.instance().to_string());
    let admin = s.admin().await;
    let egress = lab_egress(&s, &admin, &mut lab, 0).await;
    let (uid, _) = s.user(&admin, "drill").await;
    s.user(&admin, "other").await;
    let host = s.host(&admin, &uid, json!({"egress_ip_id": egress})).await;
    let (st, v) = s
        .post(
            "/v1/admin/tokens",
            &admin,
            json!({"name": "ops", "abilities": ["host:read"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let token = v["data"]["token"].as_str().unwrap().to_string();
    let echo = format!("curl -s --max-time 5 http://{}/", lab.echo());
    wait_output(&host, &echo, lab::EXIT_WG0, Duration::from_secs(60));

    // The backup script as the timer runs it, beside the running server; an archive older
    // than the retention goes, a recent one stays.
    let backups = tmp.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let old = backups.join("sluice-backup-20200101T000000Z.tar.gz");
    let recent = backups.join("sluice-backup-20990101T000000Z.tar.gz");
    for f in [&old, &recent] {
        std::fs::write(f, b"x").unwrap();
    }
    let touched = Command::new("touch")
        .args(["-d", "10 days ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(touched.success());
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/scripts/backup.sh"
        ))
        .env("BACKUP_DIR", &backups)
        .env("RETENTION_DAYS", "7")
        .env("SLUICE", BIN)
        .env("SLUICE_ENV_FILE", "/nonexistent")
        .env("SLUICE_DATA_DIR", &data)
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("removed") && !old.exists() && recent.exists(),
        "{said}"
    );
    let archive = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p != &recent)
        .expect("the script made an archive");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Not over a running server.
    let out = sluice(
        &data,
        &url,
        &["backup", "restore", archive.to_str().unwrap(), "--force"],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop it"));

    // The server stops (the host fails closed), then the data directory and the database are
    // lost.
    s.stop().await;
    drop(s);
    let (ok, _) = exec(&host, &echo);
    assert!(!ok, "traffic left with Sluice stopped");
    std::fs::remove_dir_all(&data).unwrap();
    if b == Backend::Postgres {
        destroy_postgres(&url).await;
    }

    // A damaged archive is refused and nothing is written.
    let mut bytes = std::fs::read(&archive).unwrap();
    let damaged = tmp.path().join("damaged.tar.gz");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();
    let out = sluice(
        &data,
        &url,
        &["backup", "restore", damaged.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!data.join("instance_id").exists());

    let out = sluice(
        &data,
        &url,
        &["backup", "restore", archive.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Over an install now there: only with --force.
    let out = sluice(
        &data,
        &url,
        &["backup", "restore", archive.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(4));

    // The restored install: same install id (its containers are its own), same password,
    // same token, and the host's traffic leaves through its egress again.
    let (s, runtime2) = start_server(&data, &url, &lab).await;
    assert_eq!(runtime2.instance(), runtime.instance());
    let admin = s.admin().await;
    let (st, v) = s.get("/v1/admin/hosts", &token).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"][0]["short_id"], host["short_id"], "{v}");
    wait_output(&host, &echo, lab::EXIT_WG0, Duration::from_secs(90));
    let (_, v) = s.get("/v1/admin/users", &admin).await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2), "{v}");
    // The restore is on the record (the backup's own event came after its snapshot).
    let (_, v) = s
        .get("/v1/admin/events?action=backup.restored", &admin)
        .await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1), "{v}");
}

/// An off-site copy: `--without-keys` leaves the sealing keys and the JWT secret out, the
/// archive alone restores nothing (refused, naming the keys, before anything is written), and
/// with the keys put back it restores an install whose sealed egress secrets open.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_without_keys_restores_only_with_the_keys_put_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let url = common::database_url(Backend::Sqlite, &data).await;
    let mut s = common::Server::start_with(
        common::settings(&data, url.clone()),
        common::RecordingRuntime::default(),
        data.clone(),
        None,
    )
    .await;
    let admin = s.admin().await;
    let (st, v) = s
        .post("/v1/admin/egress-ips", &admin, common::wg_egress("offsite"))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    s.stop().await;
    // What the Docker runtime writes on a real install (this server drives a recorder).
    std::fs::write(data.join("instance_id"), "0123456789abcdef").unwrap();

    let archive = tmp.path().join("offsite.tar.gz");
    let out = sluice(
        &data,
        &url,
        &[
            "backup",
            "create",
            "--without-keys",
            "-o",
            archive.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("are not in it"));
    let listing = Command::new("tar")
        .arg("tzf")
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("data/instance_id"), "{listing}");
    assert!(
        !listing.contains("sealing.keys") && !listing.contains("jwt_secret"),
        "{listing}"
    );

    // Elsewhere, from the archive alone: refused, nothing written.
    let elsewhere = tmp.path().join("elsewhere");
    let url2 = format!("sqlite://{}", elsewhere.join("sluice.db").display());
    let out = sluice(
        &elsewhere,
        &url2,
        &["backup", "restore", archive.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--without-keys") && err.contains("sealing.keys"),
        "{err}"
    );
    assert!(!elsewhere.join("sluice.db").exists());
    assert!(!elsewhere.join("instance_id").exists());

    // With the install's sealing keys put back: restored, and its secrets open.
    std::fs::copy(data.join("sealing.keys"), elsewhere.join("sealing.keys")).unwrap();
    let out = sluice(
        &elsewhere,
        &url2,
        &["backup", "restore", archive.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("everyone signs in again"));
    let out = sluice(&elsewhere, &url2, &["egress", "show", "offsite", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["label"], "offsite", "{shown}");
    assert_eq!(shown["wg_private_key"], "********", "{shown}");
}
