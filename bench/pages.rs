//! The dashboard's weight and speed: each page's size with the assets it loads (all served by
//! Sluice itself, nothing from elsewhere), and its server time (p50 and p99 of 200 loads on
//! loopback, signed in). The peer, measured in the same run, is the API reference at `/docs`
//! (Swagger UI, also served by Sluice, with its own assets): weights and times are printed as
//! ratios to it. The server is the release binary, in its own process, with users and hosts in
//! its database so the lists are not empty.
//! Run: `cargo bench --bench pages`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SAMPLES: usize = 200;
const ADMIN_PASSWORD: &str = "bench-admin-password";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The page's own bytes, and the bytes of the scripts and sheets it names (same origin).
async fn weight(http: &reqwest::Client, base: &str, path: &str, cookie: &str) -> (usize, usize) {
    let html = http
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("page body");
    let mut assets = 0;
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let url = part.split('"').next().unwrap_or_default();
            let is_asset = url.ends_with(".js") || url.ends_with(".css");
            if !is_asset || url.starts_with("http") {
                continue;
            }
            let url = if url.starts_with('/') {
                url.to_string()
            } else {
                format!(
                    "{}/{}",
                    path.trim_end_matches('/'),
                    url.trim_start_matches("./")
                )
            };
            let body = http
                .get(format!("{base}{url}"))
                .send()
                .await
                .expect("asset")
                .bytes()
                .await
                .expect("asset body");
            assets += body.len();
        }
    }
    (html.len(), assets)
}

async fn times(http: &reqwest::Client, base: &str, path: &str, cookie: &str) -> Vec<Duration> {
    let mut v = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        let resp = http
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
            .await
            .expect("page answered");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        let _ = resp.bytes().await;
        v.push(start.elapsed());
    }
    v.sort();
    v
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, ssh_port) = (free_port(), free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SLUICE_DATA_DIR", dir.path())
        .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("SSH_PROXY_ADDR", "127.0.0.1")
        .env("SSH_PROXY_PORT", ssh_port.to_string())
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SLUICE_API_RATE_LIMIT", "1000000")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sluice serve starts");
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "sluice did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Some content: 20 users with a host each (the hosts stay pending: no Docker here).
    let v: serde_json::Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login answer");
    let token = v["token"].as_str().expect("a token").to_string();
    for i in 0..20 {
        let u: serde_json::Value = http
            .post(format!("{base}/v1/admin/users"))
            .bearer_auth(&token)
            .json(
                &serde_json::json!({"username": format!("user{i:02}"), "password": "a-password-1"}),
            )
            .send()
            .await
            .expect("user")
            .json()
            .await
            .expect("user answer");
        http.post(format!("{base}/v1/admin/hosts"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"user_id": u["data"]["id"]}))
            .send()
            .await
            .expect("host");
    }
    let signed_in = http
        .post(format!("{base}/login"))
        .header("origin", &base)
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .expect("sign in");
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("cookie value")
        .to_string();

    let (peer_html, peer_assets) = weight(&http, &base, "/docs/", "").await;
    let peer_times = times(&http, &base, "/docs/", "").await;
    let peer_weight = (peer_html + peer_assets) as f64;
    let peer_p50 = percentile(&peer_times, 0.5);
    println!(
        "peer /docs/ (Swagger UI): {:.1} KiB with assets, p50 {:?}, p99 {:?}",
        peer_weight / 1024.0,
        peer_p50,
        percentile(&peer_times, 0.99)
    );
    println!(
        "{:<16} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "page", "html KiB", "total KiB", "x peer", "p50", "p99", "p50 x peer"
    );
    for path in [
        "/login",
        "/admin",
        "/admin/hosts",
        "/admin/users",
        "/admin/egress",
        "/admin/sessions",
        "/admin/tasks",
        "/admin/events",
        "/admin/tokens",
    ] {
        // The sign-in page is what a visitor without a session gets.
        let cookie = if path == "/login" {
            ""
        } else {
            cookie.as_str()
        };
        let (html, assets) = weight(&http, &base, path, cookie).await;
        let t = times(&http, &base, path, cookie).await;
        let p50 = percentile(&t, 0.5);
        println!(
            "{:<16} {:>9.1} {:>10.1} {:>10.3} {:>10.2?} {:>10.2?} {:>10.2}",
            path,
            html as f64 / 1024.0,
            (html + assets) as f64 / 1024.0,
            (html + assets) as f64 / peer_weight,
            p50,
            percentile(&t, 0.99),
            p50.as_secs_f64() / peer_p50.as_secs_f64()
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}
