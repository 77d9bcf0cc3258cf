//! Secrets at rest and the install's keys, on SQLite and PostgreSQL: after every kind of
//! egress is created, neither the database's bytes nor a backup of it (`VACUUM INTO`,
//! `pg_dump`) holds any of their secrets; rows an older version wrote in clear are sealed at
//! the next start; `sluice keys rotate`, run by the real binary beside the running server,
//! moves every row onto a new key, drops the old one, and the server goes on reading and
//! writing them; `sluice keys rotate-jwt` refuses every earlier login at once while API
//! tokens stay valid.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{Backend, Server, every_egress_kind};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice::keys::Keyring;
use sluice::store::{PageRequest, Store};

on_both_backends!(
    no_secret_is_in_the_database_or_its_backup,
    rotation_reseals_every_row_online,
    rotating_the_jwt_secret_refuses_earlier_logins_at_once,
    rotate_jwt_beside_a_server_signing_with_its_own_variable_refuses_naming_it,
);

/// The real binary as an operator runs it on the server's machine.
fn sluice(s: &Server, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_DATA_DIR", &s.dir)
        .env(
            "DATABASE_URL",
            s.settings.store.database_url.as_deref().unwrap(),
        )
        .env_remove("SLUICE_SEALING_KEYS")
        .env_remove("ADMIN_JWT_SECRET")
        .output()
        .unwrap()
}

async fn create_every_kind(s: &Server, admin: &str) -> Vec<String> {
    let (bodies, _) = every_egress_kind();
    let mut ids = vec![];
    for body in bodies {
        let (st, v) = s.post("/v1/admin/egress-ips", admin, body.clone()).await;
        assert_eq!(st, StatusCode::CREATED, "{body}: {v}");
        ids.push(v["data"]["id"].as_str().unwrap().to_string());
    }
    ids
}

/// Every byte the database keeps, and a backup of it as an operator would take one.
async fn database_bytes(s: &Server, b: Backend) -> Vec<(String, Vec<u8>)> {
    let url = s.settings.store.database_url.clone().unwrap();
    match b {
        Backend::Sqlite => {
            let file = url.trim_start_matches("sqlite://").to_string();
            let backup = s.dir.join("backup.db");
            let _ = std::fs::remove_file(&backup);
            let store = s.running.as_ref().unwrap().store.clone();
            let mut db = store.acquire().await.unwrap();
            sluice::on_conn!(db.conn(), |c| sqlx::query(sqlx::AssertSqlSafe(format!(
                "VACUUM INTO '{}'",
                backup.display()
            )))
            .execute(&mut *c)
            .await
            .map(|_| ()))
            .unwrap();
            let mut out = vec![];
            for f in [
                file.clone(),
                format!("{file}-wal"),
                backup.display().to_string(),
            ] {
                if let Ok(bytes) = std::fs::read(&f) {
                    out.push((f, bytes));
                }
            }
            assert!(out.len() >= 2, "no database file at {file}");
            out
        }
        Backend::Postgres => {
            let dump = Command::new("pg_dump").arg(&url).output().unwrap();
            assert!(
                dump.status.success(),
                "{}",
                String::from_utf8_lossy(&dump.stderr)
            );
            vec![("pg_dump".into(), dump.stdout)]
        }
    }
}

fn assert_no_secret(files: &[(String, Vec<u8>)]) {
    let (_, secrets) = every_egress_kind();
    for (name, bytes) in files {
        for secret in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is readable in {name}"
            );
        }
    }
}

/// The egresses as the server reads them for its own use (settings opened), by id.
async fn opened(store: &Store) -> Vec<(uuid::Uuid, Value)> {
    let mut db = store.acquire().await.unwrap();
    let (rows, _) = sluice::store::egress::list(
        db.conn(),
        store.keys(),
        PageRequest {
            page: 1,
            per_page: 100,
        },
    )
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| (r.id, serde_json::to_value(&r.settings.0).unwrap()))
        .collect()
}

async fn key_ids(store: &Store) -> Vec<(String, i64)> {
    let mut db = store.acquire().await.unwrap();
    sluice::store::egress::key_use(db.conn()).await.unwrap()
}

async fn no_secret_is_in_the_database_or_its_backup(b: Backend) {
    let mut s = Server::start(b).await;
    let admin = s.admin().await;
    create_every_kind(&s, &admin).await;
    // An update seals again: the old sealed value is replaced, the secret never clear.
    let (bodies, _) = every_egress_kind();
    let store = s.running.as_ref().unwrap().store.clone();
    let before = opened(&store).await;
    assert_eq!(before.len(), bodies.len());
    // Opened, they are what was given (the server can dial them).
    let text = serde_json::to_string(&before).unwrap();
    for secret in every_egress_kind().1 {
        assert!(text.contains(secret), "{secret} does not open");
    }
    assert_no_secret(&database_bytes(&s, b).await);

    // A database written in clear by an older version: sealed at the next start, with no
    // clear copy left in the file's free pages or its log.
    let (wg_id, wg_clear) = before[0].clone();
    {
        let mut db = store.acquire().await.unwrap();
        sluice::on_conn!(db.conn(), |c| sqlx::query(
            "UPDATE egress_ips SET settings = $1, secrets = NULL, key_id = NULL WHERE id = $2"
        )
        .bind(sqlx::types::Json(&wg_clear))
        .bind(wg_id)
        .execute(&mut *c)
        .await
        .map(|_| ()))
        .unwrap();
    }
    let tmp = s.stop().await;
    drop(store);
    let mut s =
        Server::start_with(s.settings.clone(), Default::default(), s.dir.clone(), tmp).await;
    let store = s.running.as_ref().unwrap().store.clone();
    assert_eq!(opened(&store).await, before);
    assert_eq!(
        key_ids(&store).await.iter().map(|(_, n)| n).sum::<i64>(),
        before.len() as i64
    );
    assert_no_secret(&database_bytes(&s, b).await);
    // The key is not in the database either: it is the data directory's, 0600.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(s.dir.join("sealing.keys")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let _keep = s.stop().await;

    // Without its key file, the data is unreadable, and the server says why.
    std::fs::rename(s.dir.join("sealing.keys"), s.dir.join("sealing.keys.away")).unwrap();
    let keys = Arc::new(Keyring::open(&s.dir).unwrap());
    let other = Store::connect(s.settings.store.database_url.as_deref().unwrap(), keys)
        .await
        .unwrap();
    let mut db = other.acquire().await.unwrap();
    let e = sluice::store::egress::get(db.conn(), other.keys(), wg_id)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not have"), "{e}");
}

async fn rotation_reseals_every_row_online(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let ids = create_every_kind(&s, &admin).await;
    let store = s.running.as_ref().unwrap().store.clone();
    let before = opened(&store).await;
    let old = key_ids(&store).await;
    assert_eq!(old.len(), 1, "{old:?}");

    let out = sluice(&s, &["keys", "rotate", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["resealed"], ids.len());
    assert_eq!(r["dropped"], json!([old[0].0]));
    let new = r["key_id"].as_str().unwrap().to_string();
    assert_ne!(new, old[0].0);
    assert_eq!(key_ids(&store).await, vec![(new.clone(), ids.len() as i64)]);
    let file = std::fs::read_to_string(s.dir.join("sealing.keys")).unwrap();
    assert!(file.contains(&new) && !file.contains(&old[0].0), "{file}");

    // The running server opens what the rotation sealed, and seals under the new key.
    assert_eq!(opened(&store).await, before);
    for id in &ids {
        let (st, v) = s.get(&format!("/v1/admin/egress-ips/{id}"), &admin).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/admin/egress-ips/{}", ids[0]),
            Some(&admin),
            Some(json!({"label": "after-rotation"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(key_ids(&store).await, vec![(new.clone(), ids.len() as i64)]);
    assert_no_secret(&database_bytes(&s, b).await);

    let out = sluice(&s, &["keys", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&new) && text.contains("seals new secrets"),
        "{text}"
    );
    let (_, v) = s
        .get("/v1/admin/events?action=keys.sealing_rotated", &admin)
        .await;
    assert_eq!(v["data"][0]["actor"], "cli:root", "{v}");

    // Keys from the environment instead of the file (newest last): the rotation seals under
    // the newest given; one that lacks the key the rows are under says so and changes nothing.
    let env_rotate = |keys: String| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["keys", "rotate"])
            .env("SLUICE_DATA_DIR", &s.dir)
            .env(
                "DATABASE_URL",
                s.settings.store.database_url.as_deref().unwrap(),
            )
            .env("SLUICE_SEALING_KEYS", keys)
            .output()
            .unwrap()
    };
    let generated = sluice(&s, &["keys", "generate"]);
    let fresh = String::from_utf8_lossy(&generated.stdout)
        .trim()
        .to_string();
    let out = env_rotate(fresh.clone());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&new) && err.contains("does not have"), "{err}");
    assert_eq!(key_ids(&store).await, vec![(new.clone(), ids.len() as i64)]);
    let file_key = file
        .lines()
        .find(|l| l.starts_with(&new))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    let out = env_rotate(format!("{file_key},{fresh}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used = key_ids(&store).await;
    assert_eq!(used.len(), 1);
    assert_ne!(used[0].0, new);
}

async fn rotating_the_jwt_secret_refuses_earlier_logins_at_once(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (st, v) = s
        .post(
            "/v1/admin/tokens",
            &admin,
            json!({"name": "monitor", "abilities": ["host:read"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let api_token = v["data"]["token"].as_str().unwrap().to_string();
    assert_eq!(s.get("/v1/user", &admin).await.0, StatusCode::OK);

    let out = sluice(&s, &["keys", "rotate-jwt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // At once: no restart, no wait.
    assert_eq!(s.get("/v1/user", &admin).await.0, StatusCode::UNAUTHORIZED);
    let fresh = s.admin().await;
    assert_eq!(s.get("/v1/user", &fresh).await.0, StatusCode::OK);
    assert_eq!(s.get("/v1/admin/hosts", &api_token).await.0, StatusCode::OK);
    let (_, v) = s
        .get("/v1/admin/events?action=keys.jwt_rotated", &fresh)
        .await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1), "{v}");
}

/// A server started with ADMIN_JWT_SECRET signs with it for its whole life: `sluice keys
/// rotate-jwt` beside it (without the variable) asks the server, refuses naming the variable,
/// and writes nothing; every login goes on as the server says.
async fn rotate_jwt_beside_a_server_signing_with_its_own_variable_refuses_naming_it(b: Backend) {
    let s = Server::start_configured(b, |c| {
        c.admin_jwt_secret = Some("a-fixed-secret-of-the-servers-own-environment".into());
    })
    .await;
    let admin = s.admin().await;
    let before = std::fs::read(s.dir.join("jwt_secret")).ok();
    let out = sluice(&s, &["keys", "rotate-jwt"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ADMIN_JWT_SECRET") && err.contains("running server"),
        "{err}"
    );
    assert_eq!(std::fs::read(s.dir.join("jwt_secret")).ok(), before);
    assert_eq!(s.get("/v1/user", &admin).await.0, StatusCode::OK);
    let (_, v) = s
        .get("/v1/admin/events?action=keys.jwt_rotated", &admin)
        .await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(0), "{v}");
}
