//! An administrator's request under a password flood: the latency of `GET /v1/admin/hosts`
//! alone, then while 64 clients send wrong passwords as fast as they are answered, each from
//! a fresh loopback address (127.1.x.y) so that no per-address budget turns them away and
//! every guess is hashed: the worst case for the global hashing gate. Prints p50 and p99 of
//! both and their ratios, in one run. The server is the release binary, in its own process.
//! Run: `cargo bench --bench flood`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SAMPLES: usize = 400;
const CLIENTS: usize = 64;
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

async fn admin_latencies(http: &reqwest::Client, base: &str, token: &str) -> Vec<Duration> {
    let mut v = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        let resp = http
            .get(format!("{base}/v1/admin/hosts"))
            .bearer_auth(token)
            .send()
            .await
            .expect("admin request answered");
        assert!(resp.status().is_success(), "{}", resp.status());
        let _ = resp.bytes().await;
        v.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
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
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "sluice did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

    let alone = admin_latencies(&http, &base, &token).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let next_source = Arc::new(AtomicUsize::new(0));
    let mut clients = vec![];
    for _ in 0..CLIENTS {
        let (stop, sent, refused, next_source, base) = (
            stop.clone(),
            sent.clone(),
            refused.clone(),
            next_source.clone(),
            base.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = next_source.fetch_add(1, Ordering::Relaxed) % 60_000;
                let source = std::net::IpAddr::from([127, 1, (n / 250) as u8, (n % 250 + 1) as u8]);
                let client = reqwest::Client::builder()
                    .local_address(Some(source))
                    .build()
                    .expect("client");
                let resp = client
                    .post(format!("{base}/v1/auth/login"))
                    .json(&serde_json::json!({"username": format!("guess{n}"), "password": "wrong-wrong"}))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
                if let Ok(r) = resp
                    && r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS
                {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let flood_start = Instant::now();
    let sent_before = sent.load(Ordering::Relaxed);
    let during = admin_latencies(&http, &base, &token).await;
    let flood_secs = flood_start.elapsed().as_secs_f64();
    let flood_sent = sent.load(Ordering::Relaxed) - sent_before;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let _ = server.kill();
    let _ = server.wait();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (a50, a99) = (percentile(&alone, 0.5), percentile(&alone, 0.99));
    let (d50, d99) = (percentile(&during, 0.5), percentile(&during, 0.99));
    println!("admin GET /v1/admin/hosts, {SAMPLES} requests each");
    println!(
        "  alone:            p50 {:8.2} ms   p99 {:8.2} ms",
        ms(a50),
        ms(a99)
    );
    println!(
        "  during the flood: p50 {:8.2} ms   p99 {:8.2} ms   ({:.0} wrong logins/s from {CLIENTS} clients, {} answered 429)",
        ms(d50),
        ms(d99),
        flood_sent as f64 / flood_secs,
        refused.load(Ordering::Relaxed)
    );
    println!(
        "  ratio (flood / alone): p50 {:.2}x   p99 {:.2}x",
        ms(d50) / ms(a50),
        ms(d99) / ms(a99)
    );
    println!(
        "  password-hashing slots: {}",
        sluice::auth::password::gate_size()
    );
}
