//! The admin and user API over real HTTP, on SQLite and on PostgreSQL.

mod common;

use std::time::Duration;

use common::{Backend, Server, wg_egress};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_backends!(
    login_and_health,
    users_lifecycle,
    user_validation,
    expired_users_cannot_log_in,
    ssh_keys_admin_and_self,
    egress_ips_mask_secrets,
    egress_validation_names_fields,
    hosts_lifecycle_through_tasks,
    host_validation_and_failures,
    bindings_one_egress_per_host,
    user_portal_sees_only_own_hosts,
    authorization_matrix,
    api_tokens,
    pagination,
    rate_limits,
    events_filters,
    deleting_a_user_deletes_their_hosts,
    interrupted_tasks_resume_after_restart,
    health_reports_a_dead_database,
    entry_and_bootstrap_answers,
    who_am_i_logout_and_scoped_logins,
    the_event_stream_is_live_resumable_filtered_and_drops_a_stalled_reader,
    recordings_past_retention_go_and_unfinished_ones_are_marked_failed,
    a_wireguard_egress_carries_one_host_by_the_database_s_own_rule,
);

/// Reads an SSE response until `want` appears in what arrived, within `limit`; answers all of
/// it.
async fn read_until(resp: &mut reqwest::Response, seen: &mut String, want: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while !seen.contains(want) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("{want:?} did not arrive within {limit:?}: {seen}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended before {want:?}: {seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

async fn open_stream(
    s: &Server,
    token: &str,
    query: &str,
    last: Option<&str>,
) -> reqwest::Response {
    let mut req = s
        .http
        .get(format!("{}/v1/admin/events/stream{query}", s.base))
        .bearer_auth(token);
    if let Some(l) = last {
        req = req.header("last-event-id", l);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    resp
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

/// `GET /v1/admin/events/stream`: a change arrives within a second, `Last-Event-ID` resumes
/// with what was missed, filters apply, a heartbeat keeps an idle stream alive, and a client
/// that stops reading is cut off while memory stays flat.
async fn the_event_stream_is_live_resumable_filtered_and_drops_a_stalled_reader(b: Backend) {
    let s = Server::start_configured(b, |c| c.http_write_timeout_secs = 2).await;
    let admin = s.admin().await;

    let mut all = open_stream(&s, &admin, "", None).await;
    let mut seen = String::new();
    read_until(&mut all, &mut seen, ": connected", Duration::from_secs(5)).await;
    let mut hosts_only = open_stream(&s, &admin, "?action=host.created", None).await;
    let mut seen_hosts = String::new();
    read_until(
        &mut hosts_only,
        &mut seen_hosts,
        ": connected",
        Duration::from_secs(5),
    )
    .await;

    // Live: the event reaches the stream promptly once the change is answered
    // (timed from the answer, so slow password hashing on a busy machine does
    // not count).
    let (uid, _) = s.user(&admin, "streamed").await;
    let t0 = std::time::Instant::now();
    read_until(&mut all, &mut seen, &uid, Duration::from_secs(5)).await;
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let last = seen
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .unwrap()
        .to_string();
    drop(all);

    // Missed while away: resumed with Last-Event-ID, in order, before anything live.
    let (a, _) = s.user(&admin, "missed-a").await;
    let (bb, _) = s.user(&admin, "missed-b").await;
    let mut again = open_stream(&s, &admin, "", Some(&last)).await;
    let mut resumed = String::new();
    read_until(&mut again, &mut resumed, &bb, Duration::from_secs(5)).await;
    let pa = resumed.find(&a).unwrap();
    let pb = resumed.find(&bb).unwrap();
    assert!(pa < pb, "{resumed}");
    assert!(
        !resumed.contains(&format!("id: {last}")),
        "resent what was seen: {resumed}"
    );
    // A bad Last-Event-ID is named.
    let resp = s
        .http
        .get(format!("{}/v1/admin/events/stream", s.base))
        .bearer_auth(&admin)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // The filter: users were made, no host yet; then a host.
    s.host(&admin, &uid, json!({})).await;
    read_until(
        &mut hosts_only,
        &mut seen_hosts,
        "host.created",
        Duration::from_secs(5),
    )
    .await;
    assert!(!seen_hosts.contains("user.created"), "{seen_hosts}");
    // Without event:read, no stream.
    let (_, t) = s
        .post(
            "/v1/admin/tokens",
            &admin,
            json!({"name": "nostream", "abilities": ["host:read"]}),
        )
        .await;
    let weak = t["data"]["token"].as_str().unwrap();
    let (st, _) = s.get("/v1/admin/events/stream", weak).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // A client that sends the request and never reads.
    let stalled = {
        let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        let req = format!(
            "GET /v1/admin/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        sock
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    // Far more events than the stalled client's buffers and Sluice's fan-out hold.
    let store = s.running.as_ref().unwrap().store.clone();
    for i in 0..8000 {
        let mut db = store.acquire().await.unwrap();
        sluice::events::record(
            db.conn(),
            sluice::events::NewEvent::new("test", "test.flood", "test")
                .details(json!({"i": i, "pad": "x".repeat(1200)})),
        )
        .await
        .unwrap();
    }
    // The stalled connection is closed by Sluice (2 s write timeout here): reading it now
    // drains what the kernels still held, then ends.
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::AsyncReadExt;
        let mut sock = stalled;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled stream was never closed");
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "memory grew by {grown} KiB");
    // The resumed reader was not read during the flood either: it was cut off too. Resuming
    // from its last id gives the next 1000 missed, then says it fell behind.
    let last = resumed
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .unwrap()
        .to_string();
    let mut behind = open_stream(&s, &admin, "", Some(&last)).await;
    let mut caught = String::new();
    read_until(
        &mut behind,
        &mut caught,
        "event: fell_behind",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        caught.matches("\nid: ").count() + usize::from(caught.starts_with("id: ")),
        1000
    );
    // An idle stream hears a heartbeat.
    let mut idle = open_stream(&s, &admin, "?action=nothing.happens", None).await;
    let mut quiet = String::new();
    let t1 = std::time::Instant::now();
    read_until(
        &mut idle,
        &mut quiet,
        ": heartbeat",
        Duration::from_secs(20),
    )
    .await;
    assert!(t1.elapsed() < Duration::from_secs(17), "{:?}", t1.elapsed());
}

/// ../shared/reference/002's account conventions: `GET /v1/user` for logins and tokens alike,
/// `POST /v1/auth/logout` revoking exactly the credential presented, and `abilities` on login
/// trading an administrator's password for a narrower, expiring token.
async fn who_am_i_logout_and_scoped_logins(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (_, me) = s.get("/v1/user", &admin).await;
    assert_eq!(me["data"]["kind"], "account", "{me}");
    assert_eq!(me["data"]["name"], "admin");
    assert_eq!(me["data"]["role"], "admin");
    assert_eq!(me["data"]["abilities"], json!(["*"]));
    assert!(me["data"]["expires_at"].is_string(), "{me}");

    let (_, user) = s.user(&admin, "ursula").await;
    let (_, me) = s.get("/v1/user", &user).await;
    assert_eq!(me["data"]["role"], "user");
    assert_eq!(me["data"]["abilities"], json!([]));

    let (_, t) = s
        .post(
            "/v1/admin/tokens",
            &admin,
            json!({"name": "ci", "abilities": ["host:read"]}),
        )
        .await;
    let token = t["data"]["token"].as_str().unwrap().to_string();
    let (_, me) = s.get("/v1/user", &token).await;
    assert_eq!(me["data"]["kind"], "token");
    assert_eq!(me["data"]["name"], "ci");
    assert_eq!(me["data"]["abilities"], json!(["host:read"]));
    assert!(me["data"]["role"].is_null());

    // Logout of one login leaves the account's other logins working.
    let second = s.admin().await;
    let (st, _) = s.post("/v1/auth/logout", &admin, json!({})).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.get("/v1/user", &admin).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s.get("/v1/user", &second).await;
    assert_eq!(st, StatusCode::OK);
    // Logout of an API token revokes it.
    let (st, _) = s.post("/v1/auth/logout", &token, json!({})).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.get("/v1/admin/hosts", &token).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s.post("/v1/auth/logout", &token, json!({})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // A user logs out too.
    let (st, _) = s.post("/v1/auth/logout", &user, json!({})).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.get("/v1/user/hosts", &user).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Login with abilities: a token holding only those, expiring as a login does.
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": common::ADMIN_PASSWORD, "abilities": ["host:read"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let scoped = v["token"].as_str().unwrap().to_string();
    assert!(scoped.starts_with("sl_"), "{v}");
    assert_eq!(v["abilities"], json!(["host:read"]));
    let ttl = v["expires_in"].as_i64().unwrap();
    assert!((3600..=12 * 3600).contains(&ttl), "{v}");
    let (st, _) = s.get("/v1/admin/hosts", &scoped).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s.get("/v1/admin/users", &scoped).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, me) = s.get("/v1/user", &scoped).await;
    assert!(me["data"]["expires_at"].is_string(), "{me}");
    // Unknown abilities are refused before the password is looked at; users hold none.
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": "wrong-password", "abilities": ["host:fly"]})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["errors"]["abilities"].is_array(), "{v}");
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "ursula", "password": "ursula-password", "abilities": ["host:read"]})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let actions = s.actions(&second).await;
    assert!(
        actions.iter().filter(|a| *a == "auth.logout").count() >= 3,
        "{actions:?}"
    );
}

/// The short-link and bootstrap endpoints, without a container: answers, one-time logins,
/// the short-id lockout and the single handoff.
async fn entry_and_bootstrap_answers(b: Backend) {
    let mut s = Server::start(b).await;
    let admin = s.admin().await;
    let (uid, _) = s.user(&admin, "nina").await;
    let host = s.host(&admin, &uid, json!({})).await;
    let short = host["short_id"].as_str().unwrap();
    let pw = host["ssh_password"].as_str().unwrap();

    let (st, _) = s
        .call(Method::GET, "/entry/not-a-short-id", None, None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = s
        .call(
            Method::POST,
            &format!("/v1/entry/{short}/auth"),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["errors"]["password"].is_array(), "{v}");
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/entry/zzzzzzzz/auth",
            None,
            Some(json!({"password": "x"})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (st, v) = s
        .call(
            Method::POST,
            &format!("/v1/entry/{short}/auth"),
            None,
            Some(json!({"password": pw})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ready");
    assert_eq!(v["ssh_user"], short);
    assert_eq!(v["ssh_port"], s.ssh_addr.port());
    assert_eq!(v["ssh_pass"].as_str().unwrap().len(), 32);
    assert_ne!(v["ssh_pass"], pw);
    let key = v["host_key"].as_str().unwrap();
    assert!(
        key.starts_with(&format!(
            "[{}]:{} ssh-ed25519 ",
            v["ssh_host"].as_str().unwrap(),
            s.ssh_addr.port()
        )),
        "{key}"
    );

    // Wrong passwords (and the unknown short id above) count against this address: the
    // fifth failure locks it out, the right password included...
    for i in 0..4 {
        let (st, v) = s
            .call(
                Method::POST,
                &format!("/v1/entry/{short}/auth"),
                None,
                Some(json!({"password": "wrong"})),
            )
            .await;
        let want = if i < 3 {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(st, want, "attempt {i}: {v}");
    }
    let (st, headers, _) = s
        .call_full(
            Method::POST,
            &format!("/v1/entry/{short}/auth"),
            None,
            Some(json!({"password": pw})),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 200 && retry <= 301, "{retry}");
    // ...but not the owner, from their own address.
    let (st, _, v) = s
        .call_from(
            [127, 0, 0, 2],
            Method::POST,
            &format!("/v1/entry/{short}/auth"),
            None,
            Some(json!({"password": pw})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let actions = s.actions(&admin).await;
    assert!(
        actions.contains(&"entry.auth_failed".to_string()),
        "{actions:?}"
    );
    // The rest comes from a third address, this one being locked out.
    s.set_source([127, 0, 0, 3]);

    // Bootstrap: the account's password, the host running, one handoff only.
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/bootstrap/sessions",
            None,
            Some(json!({"username": "nina", "password": "wrong"})),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/bootstrap/sessions",
            None,
            Some(json!({"username": "nina", "password": "nina-password"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let status_url = v["status_url"].as_str().unwrap().to_string();
    let (st, v) = s.call(Method::GET, &status_url, None, None).await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("ready")),
        "{v}"
    );
    let (st, v) = s
        .call(Method::GET, &format!("{status_url}/handoff"), None, None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["user"], short);
    assert_eq!(v["ssh_pass"].as_str().unwrap().len(), 32);
    let (st, _) = s
        .call(Method::GET, &format!("{status_url}/handoff"), None, None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "a handoff is given once");

    // Disabled accounts are refused with the reason.
    let (st, _) = s
        .call(
            Method::PATCH,
            &format!("/v1/admin/users/{uid}"),
            Some(&admin),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/bootstrap/sessions",
            None,
            Some(json!({"username": "nina", "password": "nina-password"})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert!(v["message"].as_str().unwrap().contains("disabled"), "{v}");

    let (st, v) = s.get("/v1/admin/sessions", &admin).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"], json!([]));
}

async fn login_and_health(b: Backend) {
    let s = Server::start(b).await;
    let (st, v) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["checks"]["database"], "ok");
    assert!(["ok", "unavailable"].contains(&v["checks"]["docker"].as_str().unwrap()));

    for path in ["/v1/auth/login", "/v1/admin/login"] {
        let (st, v) = s
            .call(
                Method::POST,
                path,
                None,
                Some(json!({"username": "admin", "password": common::ADMIN_PASSWORD})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["role"], "admin");
        assert!(v["expires_in"].as_i64().unwrap() > 0);
        assert!(v["token"].as_str().unwrap().len() > 20);
    }
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": "wrong-password"})),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "nobody", "password": "whatever-pw"})),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = s
        .call(Method::POST, "/v1/auth/login", None, Some(json!({})))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["errors"]["username"].is_array() && v["errors"]["password"].is_array(),
        "{v}"
    );
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!("not an object")),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // An oversized body is a JSON 413, before anything is parsed.
    let big = "x".repeat(300 * 1024);
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": big, "password": "p"})),
        )
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("larger than"),
        "{v}"
    );

    // A tampered token is refused.
    let t = s.admin().await;
    let (st, _) = s.get("/v1/admin/users", &format!("{t}x")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // The reference and the OpenAPI document are served without network.
    let (st, v) = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(v["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(v["paths"]["/v1/admin/hosts/{id}/rebuild"]["post"].is_object());
    let resp = reqwest::get(format!("{}/docs/", s.base)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("swagger"));
}

async fn users_lifecycle(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;

    // Without a password, one is generated and answered once.
    let (st, v) = s
        .post("/v1/admin/users", &admin, json!({"username": "alice"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let alice = v["data"]["id"].as_str().unwrap().to_string();
    let pw = v["data"]["password"].as_str().unwrap().to_string();
    assert_eq!(pw.len(), 20);
    assert_eq!(v["data"]["status"], "active");
    let alice_token = s.login("alice", &pw).await;
    let (st, v) = s.get(&format!("/v1/admin/users/{alice}"), &admin).await;
    assert_eq!(st, StatusCode::OK);
    assert!(v["data"].get("password").is_none(), "{v}");
    assert!(v["data"].get("password_hash").is_none(), "{v}");

    // With a password, nothing is echoed.
    let (st, v) = s
        .post(
            "/v1/admin/users",
            &admin,
            json!({"username": "bob", "password": "bob-password-1"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(v["data"].get("password").is_none());
    let (st, v) = s
        .post("/v1/admin/users", &admin, json!({"username": "bob"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains("bob"));
    // The administrator's name is taken too.
    let (st, _) = s
        .post("/v1/admin/users", &admin, json!({"username": "admin"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);

    let (st, v) = s.get("/v1/admin/users", &admin).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["meta"]["total"], 2, "administrators are not listed: {v}");

    // Disabling revokes the user's tokens and refuses login with the reason.
    let (st, v) = s
        .call(
            Method::PATCH,
            &format!("/v1/admin/users/{alice}"),
            Some(&admin),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["status"], "disabled");
    let (st, _) = s.get("/v1/user/hosts", &alice_token).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "alice", "password": pw})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(v["message"].as_str().unwrap().contains("disabled"), "{v}");
    let (st, _) = s
        .call(
            Method::PATCH,
            &format!("/v1/admin/users/{alice}"),
            Some(&admin),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let alice_token = s.login("alice", &pw).await;

    // Rotation answers a new 20-character password once; the old one and old tokens stop working.
    let (st, v) = s
        .post(
            &format!("/v1/admin/users/{alice}/rotate-password"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let new_pw = v["data"]["password"].as_str().unwrap().to_string();
    assert_eq!(new_pw.len(), 20);
    let (st, _) = s.get("/v1/user/hosts", &alice_token).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "alice", "password": pw})),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    s.login("alice", &new_pw).await;

    // Expiry: set, cleared.
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/admin/users/{alice}/expiry"),
            Some(&admin),
            Some(json!({"expires_at": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["expires_at"], "2099-01-01T00:00:00Z");
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/admin/users/{alice}/expiry"),
            Some(&admin),
            Some(json!({"expires_at": null})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"]["expires_at"], Value::Null);

    // Delete without hosts: 204, then 404 everywhere.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/users/{alice}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.get(&format!("/v1/admin/users/{alice}"), &admin).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/users/{alice}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.get("/v1/admin/users/not-a-uuid", &admin).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let actions = s.actions(&admin).await;
    for a in [
        "user.created",
        "user.updated",
        "user.password_rotated",
        "user.expiry_set",
        "user.deleted",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
}

async fn user_validation(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let cases = [
        (json!({}), "username"),
        (json!({"username": "ab"}), "username"),
        (json!({"username": "1abc"}), "username"),
        (json!({"username": "Alice"}), "username"),
        (json!({"username": "al ice"}), "username"),
        (json!({"username": "a".repeat(51)}), "username"),
        (json!({"username": 42}), "username"),
        (
            json!({"username": "carol", "password": "short"}),
            "password",
        ),
        (
            json!({"username": "carol", "password": "x".repeat(129)}),
            "password",
        ),
        (
            json!({"username": "carol", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"username": "carol", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ];
    for (body, field) in cases {
        let (st, v) = s.post("/v1/admin/users", &admin, body.clone()).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert!(v["errors"][field].is_array(), "{body}: {v}");
        assert!(v["message"].is_string());
    }
    let (id, _) = s.user(&admin, "carol").await;
    for (body, field) in [(json!({"status": "gone"}), "status"), (json!({}), "status")] {
        let (st, v) = s
            .call(
                Method::PATCH,
                &format!("/v1/admin/users/{id}"),
                Some(&admin),
                Some(body),
            )
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(v["errors"][field].is_array(), "{v}");
    }
    for body in [
        json!({}),
        json!({"expires_at": "2001-01-01T00:00:00Z"}),
        json!({"expires_at": "soon"}),
    ] {
        let (st, v) = s
            .call(
                Method::PUT,
                &format!("/v1/admin/users/{id}/expiry"),
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(v["errors"]["expires_at"].is_array(), "{v}");
    }
    // Nothing half-created.
    let (_, v) = s.get("/v1/admin/users", &admin).await;
    assert_eq!(v["meta"]["total"], 1);
}

async fn expired_users_cannot_log_in(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (id, token) = s.user(&admin, "dave").await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/admin/users/{id}/expiry"),
            Some(&admin),
            Some(json!({"expires_at": soon})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Refused at once, even before the sweep marks the account.
    let (st, v) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "dave", "password": "dave-password"})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert!(v["message"].as_str().unwrap().contains("expired"));
    let (st, _) = s.get("/v1/user/hosts", &token).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // The sweep marks it `expired` within a minute.
    let mut status = String::new();
    for _ in 0..60 {
        let (_, v) = s.get(&format!("/v1/admin/users/{id}"), &admin).await;
        status = v["data"]["status"].as_str().unwrap().to_string();
        if status == "expired" {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(status, "expired");
    assert!(
        s.actions(&admin)
            .await
            .contains(&"user.expired".to_string())
    );
    // A new expiry in the future brings the account back.
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/admin/users/{id}/expiry"),
            Some(&admin),
            Some(json!({"expires_at": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"]["status"], "active");
    s.login("dave", "dave-password").await;
}

/// A key made by OpenSSH's ssh-keygen: (public line, fingerprint as ssh-keygen prints it).
fn keygen(kind: &str, bits: Option<&str>) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let mut cmd = std::process::Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", "", "-C", "me@laptop", "-f"])
        .arg(&path);
    if let Some(b) = bits {
        cmd.args(["-b", b]);
    }
    assert!(cmd.status().expect("ssh-keygen runs").success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path.with_extension("pub"))
        .output()
        .unwrap();
    let fp = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    (public.trim().to_string(), fp)
}

async fn ssh_keys_admin_and_self(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (alice, alice_t) = s.user(&admin, "alice").await;
    let (_bob, bob_t) = s.user(&admin, "bob").await;
    let base = format!("/v1/admin/users/{alice}/ssh-keys");

    for (kind, bits) in [
        ("ed25519", None),
        ("ecdsa", Some("256")),
        ("rsa", Some("2048")),
    ] {
        let (line, fp) = keygen(kind, bits);
        let (st, v) = s.post(&base, &admin, json!({"public_key": line})).await;
        assert_eq!(st, StatusCode::CREATED, "{kind}: {v}");
        assert_eq!(v["data"]["fingerprint"], fp.as_str(), "{kind}");
        assert_eq!(v["data"]["name"], "me@laptop");
        // The same key again is a conflict.
        let (st, _) = s.post(&base, &admin, json!({"public_key": line})).await;
        assert_eq!(st, StatusCode::CONFLICT, "{kind}");
    }
    let (weak, _) = keygen("rsa", Some("1024"));
    for bad in [
        json!({"public_key": weak}),
        json!({"public_key": "garbage"}),
        json!({}),
        json!({"public_key": "ssh-ed25519 AAAA"}),
    ] {
        let (st, v) = s.post(&base, &admin, bad.clone()).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(v["errors"]["public_key"].is_array(), "{v}");
    }
    let (st, v) = s.get(&base, &admin).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["meta"]["total"], 3);

    // Generation answers the private key once; the listing never carries it.
    let (st, v) = s
        .post(
            &format!("{base}/generate"),
            &admin,
            json!({"name": "laptop"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let private = v["data"]["private_key"].as_str().unwrap().to_string();
    assert!(private.contains("BEGIN OPENSSH PRIVATE KEY"));
    assert_eq!(v["data"]["key_type"], "ssh-ed25519");
    let generated_id = v["data"]["id"].as_str().unwrap().to_string();
    // The private key is a real OpenSSH key whose public half is the one stored.
    let dir = tempfile::tempdir().unwrap();
    let kp = dir.path().join("id");
    std::fs::write(&kp, &private).unwrap();
    std::fs::set_permissions(&kp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&kp)
        .output()
        .unwrap();
    let derived = String::from_utf8(out.stdout).unwrap();
    let stored = v["data"]["public_key"].as_str().unwrap();
    assert_eq!(
        derived.split_whitespace().nth(1),
        stored.split_whitespace().nth(1)
    );
    let (_, v) = s.get(&base, &admin).await;
    assert!(!v.to_string().contains("PRIVATE KEY"));

    // The user's own routes.
    let (st, v) = s.get("/v1/user/ssh-keys", &alice_t).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["meta"]["total"], 4);
    let (line, _) = keygen("ed25519", None);
    let (st, v) = s
        .post(
            "/v1/user/ssh-keys",
            &bob_t,
            json!({"public_key": line, "name": "work"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let bob_key = v["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["data"]["name"], "work");
    let (st, v) = s
        .post("/v1/user/ssh-keys/generate", &bob_t, json!({}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(v["data"]["private_key"].is_string());
    // Another user's key is not found, and stays.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/user/ssh-keys/{bob_key}"),
            Some(&alice_t),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/user/ssh-keys/{bob_key}"),
            Some(&bob_t),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("{base}/{generated_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("{base}/{generated_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let actions = s.actions(&admin).await;
    for a in ["ssh_key.added", "ssh_key.generated", "ssh_key.deleted"] {
        assert!(actions.contains(&a.to_string()), "{a}");
    }
}

async fn egress_ips_mask_secrets(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    // A WireGuard egress with its private and preshared keys, then one of each proxy kind.
    let (bodies, secrets) = common::every_egress_kind();
    let (wg, proxies) = bodies.split_first().unwrap();
    let (st, v) = s.post("/v1/admin/egress-ips", &admin, wg.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let wg_id = v["data"]["id"].as_str().unwrap().to_string();
    let client_pub = v["data"]["wg_client_public_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(v["data"]["wg_private_key"], "********");
    assert_eq!(v["data"]["wg_preshared_key"], "********");
    assert_eq!(v["data"]["wg_allowed_ips"], json!(["0.0.0.0/0"]));

    // Without a private key, Sluice makes the pair and shows the public half.
    let (st, v) = s
        .post("/v1/admin/egress-ips", &admin, wg_egress("wg-generated"))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(
        v["data"]["wg_client_public_key"].as_str().unwrap().len(),
        44
    );

    let mut proxy_ids = vec![];
    for body in proxies {
        let (st, v) = s.post("/v1/admin/egress-ips", &admin, body.clone()).await;
        assert_eq!(st, StatusCode::CREATED, "{body}: {v}");
        assert_eq!(
            v["data"]["proxy_config"]["type"],
            body["proxy_config"]["type"]
        );
        proxy_ids.push(v["data"]["id"].as_str().unwrap().to_string());
    }
    let (_, list) = s.get("/v1/admin/egress-ips?per_page=100", &admin).await;
    let mut reads = vec![list.to_string()];
    for id in proxy_ids.iter().chain([&wg_id]) {
        reads.push(
            s.get(&format!("/v1/admin/egress-ips/{id}"), &admin)
                .await
                .1
                .to_string(),
        );
    }
    for text in &reads {
        for secret in &secrets {
            assert!(!text.contains(secret), "secret {secret} in {text}");
        }
    }

    // A partial update keeps what it does not name, including masked secrets sent back.
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/admin/egress-ips/{wg_id}"),
            Some(&admin),
            Some(json!({"label": "renamed", "wg_private_key": "********"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["label"], "renamed");
    assert_eq!(
        v["data"]["wg_client_public_key"],
        client_pub.as_str(),
        "private key kept"
    );
    assert_eq!(v["data"]["wg_endpoint"], "198.51.100.2:51820");
    let ss = &proxy_ids[2];
    let (_, before) = s.get(&format!("/v1/admin/egress-ips/{ss}"), &admin).await;
    let mut cfg = before["data"]["proxy_config"].clone();
    cfg["server_port"] = json!(8389);
    // Re-pointed with the mask echoed back: refused, the old secret must not follow.
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/admin/egress-ips/{ss}"),
            Some(&admin),
            Some(json!({"proxy_config": cfg})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["errors"]["proxy_config.password"].is_array(), "{v}");
    let (_, unchanged) = s.get(&format!("/v1/admin/egress-ips/{ss}"), &admin).await;
    assert_eq!(
        unchanged["data"]["proxy_config"]["server_port"],
        before["data"]["proxy_config"]["server_port"]
    );
    // With the secret given again it goes through.
    cfg["password"] = json!("the-new-servers-password");
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/admin/egress-ips/{ss}"),
            Some(&admin),
            Some(json!({"proxy_config": cfg})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["proxy_config"]["server_port"], 8389);
    assert_eq!(v["data"]["proxy_config"]["password"], "********");
    // A bad update changes nothing.
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/admin/egress-ips/{wg_id}"),
            Some(&admin),
            Some(json!({"wg_endpoint": "nope"})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["errors"]["wg_endpoint"].is_array());
    let (_, v) = s
        .get(&format!("/v1/admin/egress-ips/{wg_id}"), &admin)
        .await;
    assert_eq!(v["data"]["wg_endpoint"], "198.51.100.2:51820");

    // Deleting a bound egress names the hosts; unbound, it goes.
    let (user, _) = s.user(&admin, "erin").await;
    let host = s.host(&admin, &user, json!({"egress_ip_id": wg_id})).await;
    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/egress-ips/{wg_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains(host["short_id"].as_str().unwrap()),
        "{v}"
    );
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/egress-ips/{ss}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.get(&format!("/v1/admin/egress-ips/{ss}"), &admin).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // A change to an egress moves its running host onto the new settings.
    let (st, _) = s
        .call(
            Method::PUT,
            &format!("/v1/admin/egress-ips/{wg_id}"),
            Some(&admin),
            Some(json!({"wg_endpoint": "198.51.100.3:51820"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, tasks) = s
        .get(
            &format!(
                "/v1/admin/tasks?kind=bind_egress&host_id={}",
                host["id"].as_str().unwrap()
            ),
            &admin,
        )
        .await;
    assert_eq!(tasks["meta"]["total"], 1, "{tasks}");
    // Events carry no secret either.
    let (_, ev) = s.get("/v1/admin/events?limit=1000", &admin).await;
    for secret in &secrets {
        assert!(!ev.to_string().contains(secret), "{secret} in events");
    }
}

async fn egress_validation_names_fields(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let mut cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["label", "ip_address", "tunnel_type"]),
        (
            json!({"label": "x", "ip_address": "300.1.1.1", "tunnel_type": "wireguard"}),
            vec![
                "ip_address",
                "wg_endpoint",
                "wg_public_key",
                "wg_dns_server",
                "wg_peer_address",
            ],
        ),
        (
            json!({"label": "x", "ip_address": "203.0.113.1", "tunnel_type": "gre"}),
            vec!["tunnel_type"],
        ),
        (
            json!({"label": "x", "ip_address": "203.0.113.1", "tunnel_type": "proxy"}),
            vec!["proxy_config"],
        ),
        (
            json!({"label": "x", "ip_address": "203.0.113.1", "tunnel_type": "proxy", "proxy_config": {"type": "socks", "server": "192.0.2.1", "server_port": 70000}}),
            vec!["proxy_config.server_port"],
        ),
        (
            json!({"label": "x", "ip_address": "203.0.113.1", "tunnel_type": "proxy", "proxy_config": {"type": "shadowsocks", "server": "192.0.2.1", "server_port": 8388, "method": "rc4", "password": "p"}}),
            vec!["proxy_config.method"],
        ),
        (
            json!({"label": "x", "ip_address": "203.0.113.1", "tunnel_type": "proxy", "proxy_config": {"type": "vmess", "server": "192.0.2.1", "server_port": 1, "uuid": "nope", "security": "rot13"}}),
            vec!["proxy_config.uuid", "proxy_config.security"],
        ),
        (
            json!({"label": "x", "ip_address": "203.0.113.1", "tunnel_type": "proxy", "proxy_config": {"type": "trojan", "server": "192.0.2.1", "server_port": 443}}),
            vec!["proxy_config.password", "proxy_config.tls"],
        ),
    ];
    let mut wg = wg_egress("x");
    wg["wg_allowed_ips"] = json!(["0.0.0.0/0", "bogus"]);
    wg["wg_preshared_key"] = json!("tooshort");
    cases.push((wg, vec!["wg_allowed_ips", "wg_preshared_key"]));
    for (body, fields) in cases {
        let (st, v) = s.post("/v1/admin/egress-ips", &admin, body.clone()).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        for f in fields {
            assert!(v["errors"][f].is_array(), "{f} not named for {body}: {v}");
        }
    }
    let (_, v) = s.get("/v1/admin/egress-ips", &admin).await;
    assert_eq!(v["meta"]["total"], 0, "nothing half-created");
}

async fn hosts_lifecycle_through_tasks(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (user, _) = s.user(&admin, "frank").await;
    let (st, v) = s
        .post(
            "/v1/admin/hosts",
            &admin,
            json!({"user_id": user, "memory_mb": 512, "cpus": 0.5, "pids_limit": 256}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let d = &v["data"];
    let id = d["id"].as_str().unwrap().to_string();
    let short = d["short_id"].as_str().unwrap().to_string();
    assert_eq!(short.len(), 8);
    assert!(
        short
            .chars()
            .all(|c| "abcdefghjkmnpqrstuvwxyz23456789".contains(c)),
        "{short}"
    );
    assert_eq!(d["ssh_password"].as_str().unwrap().len(), 20);
    assert_eq!(
        d["access"]["entry_command"],
        format!("curl -sSf {}/entry/{short} | bash", s.base)
    );
    assert_eq!(
        d["access"]["ssh_command"],
        format!("ssh -p {} {short}@sluice.test", s.ssh_addr.port())
    );
    assert_eq!(
        (d["memory_mb"].as_i64(), d["pids_limit"].as_i64()),
        (Some(512), Some(256))
    );
    let task = s.wait_task(&admin, d["task_id"].as_str().unwrap()).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["kind"], "create");
    assert!(task["started_at"].is_string() && task["finished_at"].is_string());
    let (_, v) = s.get(&format!("/v1/admin/hosts/{id}"), &admin).await;
    assert_eq!(v["data"]["status"], "running");
    assert!(v["data"].get("ssh_password").is_none());
    assert!(!v.to_string().contains("argon2"));

    for (path, body, op, status) in [
        ("stop", json!({}), "stop", "stopped"),
        ("start", json!({}), "start", "running"),
        ("rebuild", json!({}), "rebuild", "running"),
        (
            "rebuild",
            json!({"wipe_home": true}),
            "rebuild_wipe",
            "running",
        ),
    ] {
        let (st, v) = s
            .post(&format!("/v1/admin/hosts/{id}/{path}"), &admin, body)
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{path}: {v}");
        let task = s
            .wait_task(&admin, v["data"]["task_id"].as_str().unwrap())
            .await;
        assert_eq!(task["status"], "succeeded");
        assert_eq!(
            s.runtime.calls().last().unwrap(),
            &(op.to_string(), short.clone())
        );
        let (_, h) = s.get(&format!("/v1/admin/hosts/{id}"), &admin).await;
        assert_eq!(h["data"]["status"], status, "after {path}");
    }
    let (st, v) = s
        .post(
            &format!("/v1/admin/hosts/{id}/rotate-ssh-password"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"]["ssh_password"].as_str().unwrap().len(), 20);

    let (st, v) = s
        .get(
            &format!("/v1/admin/tasks?host_id={id}&kind=rebuild"),
            &admin,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["meta"]["total"], 2);
    let (st, v) = s.get("/v1/admin/tasks?status=succeeded", &admin).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["meta"]["total"], 5);
    for bad in ["status=done", "kind=explode", "host_id=xyz"] {
        let (st, _) = s.get(&format!("/v1/admin/tasks?{bad}"), &admin).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    // Hosts by status: the host is in its own status's list and in no other's.
    let (_, h) = s.get(&format!("/v1/admin/hosts/{id}"), &admin).await;
    let now = h["data"]["status"].as_str().unwrap().to_string();
    let (st, v) = s
        .get(&format!("/v1/admin/hosts?status={now}"), &admin)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["meta"]["total"], 1, "{v}");
    assert_eq!(v["data"][0]["id"], id.as_str());
    let other = if now == "stopped" {
        "running"
    } else {
        "stopped"
    };
    let (_, v) = s
        .get(&format!("/v1/admin/hosts?status={other}"), &admin)
        .await;
    assert_eq!(v["meta"]["total"], 0, "{v}");
    let (st, v) = s.get("/v1/admin/hosts?status=asleep", &admin).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["errors"]["status"][0]
            .as_str()
            .unwrap()
            .contains("running"),
        "{v}"
    );

    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/hosts/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let task = s
        .wait_task(&admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "succeeded");
    let (st, _) = s.get(&format!("/v1/admin/hosts/{id}"), &admin).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(s.runtime.calls().last().unwrap().0, "delete");
    let actions = s.actions(&admin).await;
    for a in [
        "host.created",
        "host.stop_requested",
        "host.start_requested",
        "host.rebuild_requested",
        "host.ssh_password_rotated",
        "host.delete_requested",
        "host.deleted",
        "task.succeeded",
    ] {
        assert!(actions.contains(&a.to_string()), "{a} missing");
    }
    let (_, stats) = s.get("/v1/admin/dashboard/stats", &admin).await;
    assert_eq!(stats["data"]["users"], 1);
    assert_eq!(stats["data"]["hosts"]["total"], 0);
    assert_eq!(stats["data"]["tasks"]["failed_last_24h"], 0);
}

async fn host_validation_and_failures(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (user, _) = s.user(&admin, "gina").await;
    let missing = uuid::Uuid::now_v7().to_string();
    for (body, field) in [
        (json!({}), "user_id"),
        (json!({"user_id": "nope"}), "user_id"),
        (json!({"user_id": missing}), "user_id"),
        (
            json!({"user_id": user, "egress_ip_id": missing}),
            "egress_ip_id",
        ),
        (json!({"user_id": user, "memory_mb": 1}), "memory_mb"),
        (
            json!({"user_id": user, "memory_mb": 10_000_000}),
            "memory_mb",
        ),
        (json!({"user_id": user, "cpus": 0}), "cpus"),
        (json!({"user_id": user, "cpus": 1000}), "cpus"),
        (json!({"user_id": user, "pids_limit": 2}), "pids_limit"),
        (json!({"user_id": user, "memory_mb": "lots"}), "memory_mb"),
    ] {
        let (st, v) = s.post("/v1/admin/hosts", &admin, body.clone()).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert!(v["errors"][field].is_array(), "{body}: {v}");
    }
    let (_, v) = s.get("/v1/admin/hosts", &admin).await;
    assert_eq!(v["meta"]["total"], 0, "no half-created host");
    let (_, v) = s.get("/v1/admin/tasks", &admin).await;
    assert_eq!(v["meta"]["total"], 0, "no task for a refused host");

    // A failing runtime leaves the host in error with the reason, and the task failed.
    s.runtime.fail("create", "memory limit is impossible");
    let (st, v) = s
        .post("/v1/admin/hosts", &admin, json!({"user_id": user}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let task = s
        .wait_task(&admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "failed");
    assert!(
        task["error"]
            .as_str()
            .unwrap()
            .contains("memory limit is impossible")
    );
    let (_, h) = s.get(&format!("/v1/admin/hosts/{id}"), &admin).await;
    assert_eq!(h["data"]["status"], "error");
    assert!(
        h["data"]["status_reason"]
            .as_str()
            .unwrap()
            .contains("memory limit is impossible"),
        "{h}"
    );
    assert!(s.actions(&admin).await.contains(&"task.failed".to_string()));
    // Lifecycle calls on unknown hosts are 404.
    let (st, _) = s
        .post(
            &format!("/v1/admin/hosts/{missing}/start"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // A host being deleted refuses other steps.
    s.runtime.hang("delete");
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/hosts/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, v) = s
        .post(&format!("/v1/admin/hosts/{id}/start"), &admin, json!({}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
}

async fn bindings_one_egress_per_host(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (user, _) = s.user(&admin, "hana").await;
    let (_, e1) = s
        .post("/v1/admin/egress-ips", &admin, wg_egress("one"))
        .await;
    let mut two = wg_egress("two");
    two["ip_address"] = json!("203.0.113.11");
    let (_, e2) = s.post("/v1/admin/egress-ips", &admin, two).await;
    let (e1, e2) = (
        e1["data"]["id"].as_str().unwrap().to_string(),
        e2["data"]["id"].as_str().unwrap().to_string(),
    );
    let host = s.host(&admin, &user, json!({})).await;
    let hid = host["id"].as_str().unwrap().to_string();

    let (st, v) = s
        .post(
            "/v1/admin/bindings",
            &admin,
            json!({"host_id": hid, "egress_ip_id": e1}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let binding = v["data"]["id"].as_str().unwrap().to_string();
    // The host is running, so a task moves it onto the egress.
    let task = s
        .wait_task(&admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["status"], "succeeded");
    assert_eq!(s.runtime.calls().last().unwrap().0, "bind:203.0.113.10");
    let (_, h) = s.get(&format!("/v1/admin/hosts/{hid}"), &admin).await;
    assert_eq!(h["data"]["egress_ip_id"], e1.as_str());
    assert_eq!(h["data"]["binding_id"], binding.as_str());

    let (st, v) = s
        .post(
            "/v1/admin/bindings",
            &admin,
            json!({"host_id": hid, "egress_ip_id": e2}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    for (body, field) in [
        (json!({"egress_ip_id": e2}), "host_id"),
        (json!({"host_id": hid}), "egress_ip_id"),
        (
            json!({"host_id": uuid::Uuid::now_v7(), "egress_ip_id": e2}),
            "host_id",
        ),
        (json!({"host_id": hid, "egress_ip_id": "x"}), "egress_ip_id"),
    ] {
        let (st, v) = s.post("/v1/admin/bindings", &admin, body).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(v["errors"][field].is_array(), "{v}");
    }
    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/bindings/{binding}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    s.wait_task(&admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(s.runtime.calls().last().unwrap().0, "bind:none");
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/bindings/{binding}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Hot swap: bind the second one.
    let (st, v) = s
        .post(
            "/v1/admin/bindings",
            &admin,
            json!({"host_id": hid, "egress_ip_id": e2}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    s.wait_task(&admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(s.runtime.calls().last().unwrap().0, "bind:203.0.113.11");
    // A stopped host is bound without a task; it attaches when started.
    let (_, v) = s
        .post(&format!("/v1/admin/hosts/{hid}/stop"), &admin, json!({}))
        .await;
    s.wait_task(&admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    let binding = s.get(&format!("/v1/admin/hosts/{hid}"), &admin).await.1["data"]["binding_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/bindings/{binding}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = s
        .post(
            "/v1/admin/bindings",
            &admin,
            json!({"host_id": hid, "egress_ip_id": e1}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(v["data"]["task_id"], Value::Null);
    // A WireGuard egress carries one host: a second one is refused, naming the first.
    let other = s.host(&admin, &user, json!({})).await;
    let (st, v) = s
        .post(
            "/v1/admin/bindings",
            &admin,
            json!({"host_id": other["id"], "egress_ip_id": e1}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains(host["short_id"].as_str().unwrap()),
        "{v}"
    );
    let (st, _) = s
        .post(
            "/v1/admin/hosts",
            &admin,
            json!({"user_id": user, "egress_ip_id": e1}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let actions = s.actions(&admin).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "binding.created").count(),
        3
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "binding.deleted").count(),
        2
    );
}

async fn user_portal_sees_only_own_hosts(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (ivy, ivy_t) = s.user(&admin, "ivy").await;
    let (jay, jay_t) = s.user(&admin, "jay").await;
    let ivy_host = s.host(&admin, &ivy, json!({})).await;
    let jay_host = s.host(&admin, &jay, json!({})).await;
    let (ivy_h, jay_h) = (
        ivy_host["id"].as_str().unwrap(),
        jay_host["id"].as_str().unwrap(),
    );

    let (st, v) = s.get("/v1/user/hosts", &ivy_t).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["meta"]["total"], 1);
    assert_eq!(v["data"][0]["id"], ivy_h);
    let (st, _) = s.get(&format!("/v1/user/hosts/{ivy_h}"), &ivy_t).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s.get(&format!("/v1/user/hosts/{jay_h}"), &ivy_t).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s
        .post(
            &format!("/v1/user/hosts/{jay_h}/rebuild"),
            &ivy_t,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = s
        .post(
            &format!("/v1/user/hosts/{ivy_h}/rebuild"),
            &ivy_t,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let task = s
        .wait_task(&admin, v["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(task["created_by"], "user:ivy");

    // Change password: the old one is checked, the new one validated, old tokens revoked.
    let (st, v) = s
        .post(
            "/v1/user/change-password",
            &jay_t,
            json!({"old_password": "wrong", "new_password": "jay-new-password"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["errors"]["old_password"].is_array());
    let (st, v) = s
        .post(
            "/v1/user/change-password",
            &jay_t,
            json!({"old_password": "jay-password", "new_password": "short"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["errors"]["new_password"].is_array());
    let (st, _) = s
        .post(
            "/v1/user/change-password",
            &jay_t,
            json!({"old_password": "jay-password", "new_password": "jay-new-password"}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.get("/v1/user/hosts", &jay_t).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    s.login("jay", "jay-new-password").await;
    assert!(
        s.actions(&admin)
            .await
            .contains(&"user.password_changed".to_string())
    );
}

async fn authorization_matrix(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (kim, user_t) = s.user(&admin, "kim").await;
    // Write routes act on another account, so that rotating its password leaves kim's token alone.
    let (uid, _) = s.user(&admin, "target").await;
    let host = s.host(&admin, &kim, json!({})).await;
    let hid = host["id"].as_str().unwrap().to_string();
    let (_, v) = s
        .post(
            "/v1/admin/tokens",
            &admin,
            json!({"name": "reader", "abilities": ["event:read"]}),
        )
        .await;
    let weak = v["data"]["token"].as_str().unwrap().to_string();

    let routes: Vec<(Method, String, &str)> = vec![
        (Method::GET, "/v1/admin/users".into(), "user:read"),
        (Method::POST, "/v1/admin/users".into(), "user:write"),
        (Method::GET, format!("/v1/admin/users/{uid}"), "user:read"),
        (
            Method::PATCH,
            format!("/v1/admin/users/{uid}"),
            "user:write",
        ),
        (
            Method::POST,
            format!("/v1/admin/users/{uid}/rotate-password"),
            "user:write",
        ),
        (
            Method::PUT,
            format!("/v1/admin/users/{uid}/expiry"),
            "user:write",
        ),
        (
            Method::GET,
            format!("/v1/admin/users/{uid}/ssh-keys"),
            "user:read",
        ),
        (
            Method::POST,
            format!("/v1/admin/users/{uid}/ssh-keys/generate"),
            "user:write",
        ),
        (Method::GET, "/v1/admin/egress-ips".into(), "egress:read"),
        (Method::POST, "/v1/admin/egress-ips".into(), "egress:write"),
        (Method::GET, "/v1/admin/hosts".into(), "host:read"),
        (Method::GET, format!("/v1/admin/hosts/{hid}"), "host:read"),
        (
            Method::POST,
            format!("/v1/admin/hosts/{hid}/stop"),
            "host:write",
        ),
        (Method::POST, "/v1/admin/bindings".into(), "host:write"),
        (Method::GET, "/v1/admin/tasks".into(), "task:read"),
        (Method::GET, "/v1/admin/dashboard/stats".into(), "host:read"),
        (Method::GET, "/v1/admin/tokens".into(), "token:write"),
    ];
    let mut scoped_tokens = std::collections::HashMap::new();
    for (m, path, ability) in &routes {
        let (st, _) = s.call(m.clone(), path, None, Some(json!({}))).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "none {m} {path}");
        let (st, _) = s
            .call(m.clone(), path, Some(&user_t), Some(json!({})))
            .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "user {m} {path}");
        let (st, v) = s.call(m.clone(), path, Some(&weak), Some(json!({}))).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "weak token {m} {path}");
        assert!(v["message"].as_str().unwrap().contains(ability), "{v}");
        // One token per ability (token creation is limited to 10 a minute).
        if !scoped_tokens.contains_key(ability) {
            let (_, v) = s
                .post(
                    "/v1/admin/tokens",
                    &admin,
                    json!({"name": format!("t-{ability}"), "abilities": [ability]}),
                )
                .await;
            scoped_tokens.insert(ability, v["data"]["token"].as_str().unwrap().to_string());
        }
        let scoped = &scoped_tokens[ability];
        let (st, v) = s.call(m.clone(), path, Some(scoped), Some(json!({}))).await;
        assert!(
            st != StatusCode::UNAUTHORIZED && st != StatusCode::FORBIDDEN,
            "scoped token {m} {path}: {st} {v}"
        );
        let (st, _) = s.call(m.clone(), path, Some(&admin), Some(json!({}))).await;
        assert!(
            st != StatusCode::UNAUTHORIZED && st != StatusCode::FORBIDDEN,
            "admin {m} {path}: {st}"
        );
    }
    // User routes are for users only.
    for path in ["/v1/user/hosts", "/v1/user/ssh-keys"] {
        let (st, _) = s.get(path, &admin).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "admin on {path}");
        let (st, _) = s.get(path, &weak).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "token on {path}");
        let (st, _) = s.call(Method::GET, path, None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, _) = s.get(path, &user_t).await;
        assert_eq!(st, StatusCode::OK);
    }
    let (st, _) = s.get("/v1/admin/events", &weak).await;
    assert_eq!(st, StatusCode::OK);
    // Unknown routes are a JSON 404.
    let (st, v) = s.get("/v1/admin/nothing-here", &admin).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(v["message"].is_string());
}

async fn api_tokens(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (st, v) = s
        .post("/v1/admin/tokens", &admin, json!({"name": "ci", "abilities": ["host:read", "token:write"], "expires_at": "2099-01-01T00:00:00Z"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let token = v["data"]["token"].as_str().unwrap().to_string();
    let id = v["data"]["id"].as_str().unwrap().to_string();
    assert!(token.starts_with("sl_"));
    assert_eq!(v["data"]["abilities"], json!(["host:read", "token:write"]));

    let (st, _) = s.get("/v1/admin/hosts", &token).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = s.get("/v1/admin/tokens", &admin).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        !v.to_string().contains(&token),
        "listing never shows the token"
    );
    assert!(v["data"][0]["last_used_at"].is_string(), "{v}");
    assert_eq!(v["data"][0]["prefix"], &token[..9]);

    // A token can grant only what it holds.
    let (st, v) = s
        .post(
            "/v1/admin/tokens",
            &token,
            json!({"name": "escalate", "abilities": ["*"]}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    // What a token mints lives no longer than the token itself...
    let (st, v) = s
        .post(
            "/v1/admin/tokens",
            &token,
            json!({"name": "longer", "abilities": ["host:read"], "expires_at": "2100-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["errors"]["expires_at"].is_array(), "{v}");
    let (st, v) = s
        .post(
            "/v1/admin/tokens",
            &token,
            json!({"name": "narrow", "abilities": ["host:read"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(v["data"]["expires_at"], "2099-01-01T00:00:00Z", "{v}");
    assert_eq!(v["data"]["parent_id"], id.as_str(), "{v}");
    let minted = v["data"]["token"].as_str().unwrap().to_string();
    let (st, _) = s.get("/v1/admin/hosts", &minted).await;
    assert_eq!(st, StatusCode::OK);
    for (body, field) in [
        (json!({"abilities": ["host:read"]}), "name"),
        (json!({"name": "x"}), "abilities"),
        (
            json!({"name": "x", "abilities": ["host:explode"]}),
            "abilities",
        ),
        (
            json!({"name": "x", "abilities": ["*"], "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ] {
        let (st, v) = s.post("/v1/admin/tokens", &admin, body).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(v["errors"][field].is_array(), "{v}");
    }

    // An expired token stops working.
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, v) = s
        .post(
            "/v1/admin/tokens",
            &admin,
            json!({"name": "brief", "abilities": ["*"], "expires_at": soon}),
        )
        .await;
    let brief = v["data"]["token"].as_str().unwrap().to_string();
    let (st, _) = s.get("/v1/admin/users", &brief).await;
    assert_eq!(st, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (st, _) = s.get("/v1/admin/users", &brief).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Revoked: gone.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/tokens/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.get("/v1/admin/hosts", &token).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // ...and goes with it when it is revoked.
    let (st, _) = s.get("/v1/admin/hosts", &minted).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/tokens/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let actions = s.actions(&admin).await;
    assert!(
        actions.contains(&"token.created".to_string())
            && actions.contains(&"token.revoked".to_string())
    );
    let (_, ev) = s.get("/v1/admin/events?limit=1000", &admin).await;
    assert!(!ev.to_string().contains(&token));
}

async fn pagination(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    for i in 0..17 {
        let (st, _) = s
            .post(
                "/v1/admin/users",
                &admin,
                json!({"username": format!("user{i:02}"), "password": "password-123"}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let (st, v) = s.get("/v1/admin/users", &admin).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        15,
        "default per_page is 15"
    );
    assert_eq!(
        v["meta"],
        json!({"current_page": 1, "per_page": 15, "total": 17, "last_page": 2})
    );
    assert_eq!(v["links"]["next"], "/v1/admin/users?page=2&per_page=15");
    assert_eq!(v["links"]["prev"], Value::Null);
    let (_, v) = s.get("/v1/admin/users?page=2", &admin).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["links"]["prev"], "/v1/admin/users?page=1&per_page=15");
    assert_eq!(v["links"]["next"], Value::Null);
    let (_, v) = s.get("/v1/admin/users?per_page=100", &admin).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 17);
    let (_, v) = s.get("/v1/admin/users?page=9", &admin).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
    // Pages do not overlap and cover everything.
    let mut seen = std::collections::BTreeSet::new();
    for p in 1..=4 {
        let (_, v) = s
            .get(&format!("/v1/admin/users?per_page=5&page={p}"), &admin)
            .await;
        for u in v["data"].as_array().unwrap() {
            assert!(seen.insert(u["id"].as_str().unwrap().to_string()));
        }
    }
    assert_eq!(seen.len(), 17);
    for bad in [
        "per_page=0",
        "per_page=101",
        "per_page=abc",
        "page=0",
        "page=-1",
    ] {
        let (st, v) = s.get(&format!("/v1/admin/users?{bad}"), &admin).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let field = bad.split('=').next().unwrap();
        assert!(v["errors"][field].is_array(), "{v}");
    }
    // Filters survive in the links.
    let (_, v) = s
        .get("/v1/admin/events?action=user.created&per_page=5", &admin)
        .await;
    assert_eq!(v["meta"]["total"], 17);
    assert_eq!(
        v["links"]["next"],
        "/v1/admin/events?action=user.created&page=2&per_page=5"
    );
}

async fn rate_limits(b: Backend) {
    // The default limit of 120 requests a minute per credential.
    let s = Server::start_configured(b, |s| s.api_rate_limit = 120).await;
    // Login: 5 a minute per source address and user name.
    for _ in 0..5 {
        let (st, _) = s
            .call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"username": "admin", "password": "wrong-password"})),
            )
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let (st, h, v) = s
        .call_full(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": common::ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Five failures lock the address out across user names, unknown ones included...
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "someone", "password": "wrong-password"})),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    // ...but the admin, from another address, still logs in.
    let (st, _, v) = s
        .call_from(
            [127, 0, 0, 2],
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": common::ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // A token for admin work (the admin login is locked for a minute).
    let store = s.running.as_ref().unwrap().store.clone();
    let mut tx = store.begin().await.unwrap();
    let (_, token) = sluice::auth::tokens::issue(
        tx.conn(),
        "t",
        &[sluice::auth::Ability::All],
        None,
        "test",
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Token creation: 10 a minute per caller.
    for i in 0..10 {
        let (st, _) = s
            .post(
                "/v1/admin/tokens",
                &token,
                json!({"name": format!("n{i}"), "abilities": ["host:read"]}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let (st, h, _) = s
        .call_full(
            Method::POST,
            "/v1/admin/tokens",
            Some(&token),
            Some(json!({"name": "n11", "abilities": ["host:read"]})),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key("retry-after"));

    // Everything else: 120 a minute per credential (11 used above), one more
    // every half second. Count what passes until the first refusal; the
    // bound allows for what refilled while the loop ran, so a slow machine
    // cannot make the test fail, and an unlimited server still does.
    let started = std::time::Instant::now();
    let mut passed = 0u64;
    let mut refused = false;
    for _ in 0..400 {
        let (st, _) = s.get("/v1/admin/hosts", &token).await;
        if st == StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
        assert_eq!(st, StatusCode::OK);
        passed += 1;
    }
    let refilled = started.elapsed().as_secs() * 2 + 2;
    assert!(refused, "{passed} requests passed and none was refused");
    assert!(
        (109..=109 + refilled).contains(&passed),
        "{passed} passed before the first refusal; 109 + {refilled} refilled expected at most"
    );
    // The refusal as a client sees it. A token may refill between the refusal above and this
    // request (one every half second); two in a row cannot both pass in a few milliseconds.
    let mut answers = vec![];
    for _ in 0..2 {
        let (st, h, v) = s
            .call_full(Method::GET, "/v1/admin/hosts", Some(&token), None)
            .await;
        if st == StatusCode::TOO_MANY_REQUESTS {
            assert!(h.contains_key("retry-after"));
            assert!(v["message"].is_string());
        }
        answers.push(st);
    }
    assert!(
        answers.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{answers:?}"
    );
}

async fn events_filters(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let (la, _) = s.user(&admin, "lara").await;
    let (mo, _) = s.user(&admin, "mona").await;
    let host = s.host(&admin, &mo, json!({})).await;
    let hid = host["id"].as_str().unwrap();

    let (st, v) = s
        .get(&format!("/v1/admin/events?user_id={la}"), &admin)
        .await;
    assert_eq!(st, StatusCode::OK);
    let actions: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"user.created"), "{actions:?}");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user_id"] == la.as_str())
    );
    let (_, v) = s
        .get(&format!("/v1/admin/events?host_id={hid}"), &admin)
        .await;
    let actions: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"host.created") && actions.contains(&"task.succeeded"),
        "{actions:?}"
    );
    let e = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "host.created")
        .unwrap();
    assert_eq!(e["actor"], "admin:admin");
    assert_eq!(e["source_ip"], "127.0.0.1");
    assert!(e["details"]["short_id"].is_string());

    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let (_, v) = s
        .get(&format!("/v1/admin/events?since={}", fmt(before)), &admin)
        .await;
    let recent = v["meta"]["total"].as_i64().unwrap();
    assert!(recent >= 4, "{v}");
    let (_, v) = s
        .get(&format!("/v1/admin/events?until={}", fmt(before)), &admin)
        .await;
    let old = v["meta"]["total"].as_i64().unwrap();
    let (_, all) = s.get("/v1/admin/events", &admin).await;
    assert!(old + recent >= all["meta"]["total"].as_i64().unwrap());
    let (_, v) = s.get("/v1/admin/events?limit=2", &admin).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    for bad in ["limit=0", "limit=1001", "since=yesterday", "user_id=nope"] {
        let (st, _) = s.get(&format!("/v1/admin/events?{bad}"), &admin).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

async fn deleting_a_user_deletes_their_hosts(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (uid, _) = s.user(&admin, "nina").await;
    let (_, key) = s
        .post(
            &format!("/v1/admin/users/{uid}/ssh-keys/generate"),
            &admin,
            json!({}),
        )
        .await;
    assert!(key["data"]["id"].is_string());
    let h1 = s.host(&admin, &uid, json!({})).await;
    let h2 = s.host(&admin, &uid, json!({})).await;
    let (st, v) = s
        .call(
            Method::DELETE,
            &format!("/v1/admin/users/{uid}"),
            Some(&admin),
            None,
        )
        .await;
    // 204 as the reference documents; the hosts go in the background, through tasks the
    // deletion's event names.
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (_, ev) = s.get("/v1/admin/events?action=user.deleted", &admin).await;
    let tasks = ev["data"][0]["details"]["task_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("{ev}"))
        .clone();
    assert_eq!(tasks.len(), 2);
    for t in tasks {
        assert_eq!(
            s.wait_task(&admin, t.as_str().unwrap()).await["status"],
            "succeeded"
        );
    }
    for h in [h1, h2] {
        let (st, _) = s
            .get(
                &format!("/v1/admin/hosts/{}", h["id"].as_str().unwrap()),
                &admin,
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    let deletes = s
        .runtime
        .calls()
        .iter()
        .filter(|(op, _)| op == "delete")
        .count();
    assert_eq!(deletes, 2);
    let (st, _) = s
        .post(
            "/v1/auth/login",
            &admin,
            json!({"username": "nina", "password": "nina-password"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

async fn interrupted_tasks_resume_after_restart(b: Backend) {
    let mut s = Server::start(b).await;
    let admin = s.admin().await;
    let (uid, _) = s.user(&admin, "olga").await;
    s.runtime.hang("create");
    let (st, v) = s
        .post("/v1/admin/hosts", &admin, json!({"user_id": uid}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let task_id = v["data"]["task_id"].as_str().unwrap().to_string();
    let host_id = v["data"]["id"].as_str().unwrap().to_string();
    for _ in 0..100 {
        let (_, t) = s.get(&format!("/v1/admin/tasks/{task_id}"), &admin).await;
        if t["data"]["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The process goes away with the task running.
    let settings = s.settings.clone();
    let dir = s.dir.clone();
    let tmp = s.stop().await;
    let s2 = Server::start_with(settings, common::RecordingRuntime::default(), dir, tmp).await;
    let admin = s2.admin().await;
    let task = s2.wait_task(&admin, &task_id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 2);
    let (_, h) = s2.get(&format!("/v1/admin/hosts/{host_id}"), &admin).await;
    assert_eq!(h["data"]["status"], "running");
    let (_, running) = s2.get("/v1/admin/tasks?status=running", &admin).await;
    assert_eq!(running["meta"]["total"], 0);
}

async fn health_reports_a_dead_database(b: Backend) {
    let s = Server::start(b).await;
    s.running.as_ref().unwrap().store.close().await;
    let (st, v) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["checks"]["database"], "unavailable");
}

/// Recording housekeeping at start: a recording a stopped process left unfinished is marked
/// failed (and becomes downloadable as such, not "still recording"), and one that ended before
/// the retention goes with its file, while a recent one stays.
async fn recordings_past_retention_go_and_unfinished_ones_are_marked_failed(b: Backend) {
    use sluice::store::recordings::RecordingRow;
    let mut s = Server::start_configured(b, |c| {
        c.ssh.record_sessions = true;
        c.ssh.recording_retention_days = 1;
    })
    .await;
    let store = s.running.as_ref().unwrap().store.clone();
    let dir = s.dir.join("recordings");
    std::fs::create_dir_all(&dir).unwrap();
    let now = sluice::clock::now();
    let row = |file: &str, status: &str, ended: Option<time::OffsetDateTime>| RecordingRow {
        id: uuid::Uuid::now_v7(),
        session_id: uuid::Uuid::now_v7(),
        host_id: uuid::Uuid::now_v7(),
        short_id: "k3x9m2qa".into(),
        username: "olga".into(),
        kind: "ssh".into(),
        file: file.into(),
        status: status.into(),
        with_input: false,
        bytes: 1,
        started_at: now - time::Duration::days(3),
        ended_at: ended,
        truncated: false,
    };
    let old = row("old.cast.gz", "stored", Some(now - time::Duration::days(2)));
    let recent = row(
        "recent.cast.gz",
        "stored",
        Some(now - time::Duration::hours(2)),
    );
    let cut = row("cut.cast.gz", "recording", None);
    {
        let mut db = store.acquire().await.unwrap();
        for r in [&old, &recent, &cut] {
            sluice::store::recordings::insert(db.conn(), r)
                .await
                .unwrap();
            std::fs::write(dir.join(&r.file), b"x").unwrap();
        }
    }
    let settings = s.settings.clone();
    let data = s.dir.clone();
    let tmp = s.stop().await;
    drop(store);
    let s2 = Server::start_with(settings, common::RecordingRuntime::default(), data, tmp).await;
    let admin = s2.admin().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = s2.get("/v1/admin/recordings", &admin).await;
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        if !ids.contains(&old.id.to_string().as_str()) {
            assert_eq!(v["meta"]["total"], 2, "{v}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old recording stayed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!dir.join("old.cast.gz").exists());
    assert!(dir.join("recent.cast.gz").exists());
    let (_, v) = s2
        .get(&format!("/v1/admin/recordings/{}", cut.id), &admin)
        .await;
    assert_eq!(v["data"]["status"], "failed", "{v}");
    assert!(v["data"]["ended_at"].is_string(), "{v}");
}

/// The one-host-per-WireGuard-egress rule is the database's, not only a check before a write:
/// binds racing each other leave exactly one, a write past the check is refused by the
/// constraint, and a proxy egress carrying two hosts cannot be switched to WireGuard.
async fn a_wireguard_egress_carries_one_host_by_the_database_s_own_rule(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (user, _) = s.user(&admin, "wendy").await;
    let (_, e) = s
        .post("/v1/admin/egress-ips", &admin, wg_egress("one"))
        .await;
    let wg = e["data"]["id"].as_str().unwrap().to_string();
    let mut hosts = vec![];
    for _ in 0..8 {
        hosts.push(
            s.host(&admin, &user, json!({})).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Eight binds at once: one wins, the others are told why.
    let binds = hosts.iter().map(|h| {
        s.post(
            "/v1/admin/bindings",
            &admin,
            json!({"host_id": h, "egress_ip_id": wg}),
        )
    });
    let answers = futures::future::join_all(binds).await;
    let won = answers
        .iter()
        .filter(|(st, _)| *st == StatusCode::CREATED)
        .count();
    assert_eq!(won, 1, "{answers:?}");
    for (st, v) in answers.iter().filter(|(st, _)| *st != StatusCode::CREATED) {
        assert_eq!(*st, StatusCode::CONFLICT, "{v}");
        assert!(v.to_string().contains("serves one host"), "{v}");
    }
    // A write that skips the check (as a second process racing this one could) is refused by
    // the database itself.
    let store = s.running.as_ref().unwrap().store.clone();
    let mut db = store.acquire().await.unwrap();
    let (_, h) = s.get(&format!("/v1/admin/egress-ips/{wg}"), &admin).await;
    assert_eq!(h["data"]["id"], wg.as_str());
    let loser = answers
        .iter()
        .zip(&hosts)
        .find(|((st, _), _)| *st != StatusCode::CREATED)
        .map(|(_, h)| h.clone())
        .unwrap();
    let err = sluice::store::hosts::insert_binding(
        db.conn(),
        &sluice::store::hosts::BindingRow {
            id: uuid::Uuid::now_v7(),
            host_id: loser.parse().unwrap(),
            egress_ip_id: wg.parse().unwrap(),
            created_at: sluice::clock::now(),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, sluice::store::StoreError::Conflict(c) if sluice::store::hosts::is_exclusive_binding(c)),
        "{err:?}"
    );
    drop(db);

    // A proxy egress carrying two hosts is not made WireGuard under them.
    let (_, p) = s
        .post(
            "/v1/admin/egress-ips",
            &admin,
            json!({"label": "p", "ip_address": "203.0.113.12", "tunnel_type": "proxy",
                "proxy_config": {"type": "socks", "server": "192.0.2.1", "server_port": 1080}}),
        )
        .await;
    let proxy = p["data"]["id"].as_str().unwrap().to_string();
    let unbound: Vec<&String> = answers
        .iter()
        .zip(&hosts)
        .filter(|((st, _), h)| *st != StatusCode::CREATED && **h != loser)
        .map(|(_, h)| h)
        .collect();
    for h in unbound.into_iter().take(2) {
        let (st, v) = s
            .post(
                "/v1/admin/bindings",
                &admin,
                json!({"host_id": h, "egress_ip_id": proxy}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let mut switch = wg_egress("p");
    switch["ip_address"] = json!("203.0.113.12");
    let (st, v) = s
        .call(
            Method::PUT,
            &format!("/v1/admin/egress-ips/{proxy}"),
            Some(&admin),
            Some(switch),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v.to_string().contains("unbind the others first"), "{v}");
    let (_, after) = s
        .get(&format!("/v1/admin/egress-ips/{proxy}"), &admin)
        .await;
    assert_eq!(
        after["data"]["tunnel_type"], "proxy",
        "nothing changed: {after}"
    );
}
