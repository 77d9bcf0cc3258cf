//! Sluice under hostile load, on a real server: a flood of wrong passwords from many parallel
//! clients across random short ids and user names, from one address and then from 64, while
//! an administrator works. From one address the flood is answered 429 with Retry-After after
//! the first few guesses (without hashing); from many, password hashing waits at the global
//! gate. Throughout, the administrator's requests are answered, nothing fails, and the owner
//! of a short link the flood hit still gets in from their own address.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Backend, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(a_password_flood_is_turned_away_and_starves_no_one);

const FLOOD: usize = 300;
const CLIENTS: usize = 64;

fn random_short_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..8)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Wrong entry passwords at random short ids, one in ten at `owners`.
fn guesses_at_short_ids(owners: String) -> impl Fn(usize) -> (String, Value) + Send + Sync {
    move |n| {
        let id = if n % 10 == 0 {
            owners.clone()
        } else {
            random_short_id()
        };
        (
            format!("/v1/entry/{id}/auth"),
            json!({"password": "guess-guess"}),
        )
    }
}

/// Sends `FLOOD` requests from `CLIENTS` parallel clients, all from 127.0.0.1 or each from an
/// address of its own (127.0.0.10 and up); `make` gives each request's path and body.
/// Answers the count of each status.
async fn flood(
    s: &Server,
    spread: bool,
    make: impl Fn(usize) -> (String, Value) + Send + Sync + 'static,
) -> std::collections::BTreeMap<u16, usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let mut clients = vec![];
    for c in 0..CLIENTS {
        let (next, make, statuses) = (next.clone(), make.clone(), statuses.clone());
        let source = spread.then(|| std::net::IpAddr::from([127, 0, 0, 10 + c as u8]));
        let http = reqwest::Client::builder()
            .local_address(source)
            .build()
            .unwrap();
        let base = s.base.clone();
        clients.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= FLOOD {
                    return;
                }
                let (path, body) = make(n);
                let resp = http
                    .post(format!("{base}{path}"))
                    .json(&body)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .expect("the flood is answered");
                let st = resp.status();
                if st == StatusCode::TOO_MANY_REQUESTS {
                    let retry = resp.headers().get("retry-after").cloned();
                    assert!(retry.is_some(), "429 without Retry-After");
                }
                *statuses.lock().unwrap().entry(st.as_u16()).or_insert(0) += 1;
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    Arc::try_unwrap(statuses).unwrap().into_inner().unwrap()
}

async fn a_password_flood_is_turned_away_and_starves_no_one(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin().await;
    let (uid, _) = s.user(&admin, "olga").await;
    let host = s.host(&admin, &uid, json!({})).await;
    let short = host["short_id"].as_str().unwrap().to_string();
    let password = host["ssh_password"].as_str().unwrap().to_string();

    // The administrator lists hosts all along; every answer must come, and be a 200.
    let stop = Arc::new(AtomicBool::new(false));
    let admin_requests = {
        let (stop, http, base, admin) = (
            stop.clone(),
            reqwest::Client::new(),
            s.base.clone(),
            admin.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let resp = http
                    .get(format!("{base}/v1/admin/hosts"))
                    .bearer_auth(&admin)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .expect("the admin is answered during the flood");
                assert_eq!(resp.status(), StatusCode::OK);
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        })
    };

    // Wrong passwords at random short ids (the owner's among them).
    let statuses = flood(&s, false, guesses_at_short_ids(short.clone())).await;
    let refused = statuses.get(&429).copied().unwrap_or(0);
    assert!(
        statuses.keys().all(|s| [401, 404, 429].contains(s)),
        "{statuses:?}"
    );
    // Five failures lock the address out; only a few more can be in flight by then.
    assert!(refused >= FLOOD - 10, "{statuses:?}");

    // Then wrong logins at random user names: still locked out, still 429.
    let statuses = flood(&s, false, |n| {
        (
            "/v1/auth/login".to_string(),
            json!({"username": format!("name{n}"), "password": "guess-guess"}),
        )
    })
    .await;
    assert_eq!(statuses.get(&429).copied(), Some(FLOOD), "{statuses:?}");

    // The same flood spread over 64 addresses: each gets its five guesses, so hundreds of
    // passwords are hashed, one core at most at a time; the rest wait their turn or are told
    // to come back. Nothing fails, and the administrator is still answered.
    let statuses = flood(&s, true, guesses_at_short_ids(short.clone())).await;
    assert!(
        statuses.keys().all(|s| [401, 404, 429].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.get(&404).copied().unwrap_or(0) > 0, "{statuses:?}");

    stop.store(true, Ordering::SeqCst);
    let answered = admin_requests.await.unwrap();
    assert!(answered > 0);

    // The owner, from their own address, still gets in through the short link.
    let (st, _, v) = s
        .call_from(
            [127, 0, 0, 2],
            reqwest::Method::POST,
            &format!("/v1/entry/{short}/auth"),
            None,
            Some(json!({"password": password})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ready", "{v}");
}

on_both_backends!(sixty_addresses_failing_at_the_admin_cannot_keep_the_admin_out);

/// The per-account budget holds off the addresses that failed, not the account's owner: sixty
/// addresses each guessing once at the administrator's login (more than the account's fifty)
/// leave the administrator a way in from an address of their own, while every guessing
/// address is turned away with Retry-After.
async fn sixty_addresses_failing_at_the_admin_cannot_keep_the_admin_out(b: Backend) {
    let s = Server::start(b).await;
    let guess = json!({"username": "admin", "password": "not-the-password"});
    for n in 0..60u8 {
        let (st, _, v) = s
            .call_from(
                [127, 0, 1, n],
                reqwest::Method::POST,
                "/v1/auth/login",
                None,
                Some(guess.clone()),
            )
            .await;
        // Each address's first guess is heard (and wrong), even past the account's fifty.
        assert_eq!(st, StatusCode::UNAUTHORIZED, "address {n}: {v}");
    }
    // A guessing address tries again: held off, told when to come back.
    let (st, headers, _) = s
        .call_from(
            [127, 0, 1, 7],
            reqwest::Method::POST,
            "/v1/auth/login",
            None,
            Some(guess.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.get("retry-after").is_some());
    // Even with the right password: it failed before.
    let right = json!({"username": "admin", "password": common::ADMIN_PASSWORD});
    let (st, _, _) = s
        .call_from(
            [127, 0, 1, 8],
            reqwest::Method::POST,
            "/v1/auth/login",
            None,
            Some(right.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    // The administrator, from their own address, gets in.
    let (st, _, v) = s
        .call_from(
            [127, 0, 2, 1],
            reqwest::Method::POST,
            "/v1/auth/login",
            None,
            Some(right),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["token"].is_string());
}
