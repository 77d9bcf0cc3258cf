//! Desktop cost, in one run: the managed desktop image's size, a desktop host's time from
//! creation to a desktop that answers, and the CPU Sluice spends per MiB of desktop it relays,
//! against websockify (Debian's) relaying the same VNC server. Sluice runs as the release
//! binary (`sluice serve`, a process of its own, so its CPU is its own); websockify runs in the
//! container's network namespace, next to the VNC server. The same client (in this process)
//! pulls full-screen raw framebuffer updates through each until 256 MiB have passed, so both
//! relays move the same bytes. Prints each throughput, CPU seconds per GiB relayed, and the
//! ratios.
//!
//! Run as root: `cargo bench --bench desktop`. Needs Docker with the base image
//! (scripts/base-image.sh) and websockify (`apt-get install websockify`).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
mod measure;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use measure::{cpu_of, cpu_tree};
use serde_json::{Value, json};
use sluice::desktop::rfb;
use sluice::netns::NetNs;
use sluice::runtime::docker::DockerRuntime;
use sluice::runtime::image::{self, Kind};
use tokio_tungstenite::tungstenite::Message;

/// What each relay carries.
const BYTES: u64 = 256 * 1024 * 1024;
/// Desktop hosts created for the create-to-ready time.
const CREATES: usize = 3;
const WEBSOCKIFY_PORT: u16 = 6080;

/// A WebSocket carrying RFB, read as a byte stream.
struct Rfb<S> {
    ws: tokio_tungstenite::WebSocketStream<S>,
    buf: Vec<u8>,
    at: usize,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Rfb<S> {
    fn new(ws: tokio_tungstenite::WebSocketStream<S>) -> Self {
        Self {
            ws,
            buf: Vec::new(),
            at: 0,
        }
    }

    async fn read(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() - self.at < n {
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    self.buf.drain(..self.at);
                    self.at = 0;
                    self.buf.extend_from_slice(&b);
                }
                Some(Ok(_)) => {}
                other => panic!("the relay closed: {other:?}"),
            }
        }
        let out = self.buf[self.at..self.at + n].to_vec();
        self.at += n;
        out
    }

    async fn skip(&mut self, mut n: usize) {
        while n > 0 {
            let take = n.min(1 << 20);
            self.read(take).await;
            n -= take;
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .expect("send");
    }

    /// Version and security: none (Sluice answers for the server) or VNC authentication.
    async fn handshake(&mut self, password: Option<&str>) {
        let version = self.read(12).await;
        assert_eq!(&version, rfb::VERSION);
        self.send(rfb::VERSION).await;
        let n = self.read(1).await[0] as usize;
        let types = self.read(n).await;
        match password {
            None => {
                assert!(types.contains(&1), "{types:?}");
                self.send(&[1]).await;
            }
            Some(p) => {
                assert!(types.contains(&2), "{types:?}");
                self.send(&[2]).await;
                let challenge: [u8; 16] = self.read(16).await.try_into().expect("16 bytes");
                self.send(&rfb::vnc_auth_response(p, &challenge)).await;
            }
        }
        assert_eq!(self.read(4).await, [0, 0, 0, 0], "security result");
    }

    /// ClientInit and ServerInit, raw encoding only; then full-screen updates until `bytes`
    /// have arrived. Answers the bytes read.
    async fn pull(&mut self, bytes: u64) -> u64 {
        self.send(&[1]).await;
        let init = self.read(24).await;
        let (w, h) = (
            u16::from_be_bytes([init[0], init[1]]),
            u16::from_be_bytes([init[2], init[3]]),
        );
        let bpp = u64::from(init[4]) / 8;
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        self.read(name_len).await;
        self.send(&[2, 0, 0, 1, 0, 0, 0, 0]).await;
        let mut got = 0u64;
        let [wh, wl] = w.to_be_bytes();
        let [hh, hl] = h.to_be_bytes();
        while got < bytes {
            self.send(&[3, 0, 0, 0, 0, 0, wh, wl, hh, hl]).await;
            let head = self.read(4).await;
            assert_eq!(head[0], 0, "a framebuffer update");
            let rects = u16::from_be_bytes([head[2], head[3]]);
            got += 4;
            for _ in 0..rects {
                let r = self.read(12).await;
                let (rw, rh) = (
                    u64::from(u16::from_be_bytes([r[4], r[5]])),
                    u64::from(u16::from_be_bytes([r[6], r[7]])),
                );
                let encoding = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
                assert_eq!(encoding, 0, "raw rectangles only");
                let n = rw * rh * bpp;
                self.skip(n as usize).await;
                got += 12 + n;
            }
        }
        got
    }
}

/// One relay's figures.
struct Figures {
    name: &'static str,
    bytes: u64,
    elapsed: Duration,
    cpu: f64,
}

impl Figures {
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64()
    }
    fn cpu_per_gib(&self) -> f64 {
        self.cpu / (self.bytes as f64 / (1024.0 * 1024.0 * 1024.0))
    }
}

async fn api(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Value {
    let mut rq = http.request(method, format!("{base}{path}")).json(&body);
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    let resp = rq.send().await.expect("request");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or_default();
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

async fn wait_task(http: &reqwest::Client, base: &str, token: &str, task: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // Polled every 100 ms (faster runs into the API's rate limit).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let resp = http
            .get(format!("{base}/v1/admin/tasks/{task}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            continue;
        }
        let v: Value = resp.json().await.unwrap_or_default();
        match v["data"]["status"].as_str() {
            Some("succeeded") => return,
            Some("failed") => panic!("task failed: {v}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "task {task} did not finish");
    }
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let runtime = Arc::new(DockerRuntime::new(&dir).expect("docker runtime"));
    common::docker::ensure_desktop_image(&runtime).await;
    let _cleanup = common::docker::Cleanup(runtime.instance().to_string());
    let size = |tag: &str| -> f64 {
        let (ok, out) = common::docker::docker(&["image", "inspect", "-f", "{{.Size}}", tag]);
        assert!(ok, "{out}");
        out.trim().parse::<f64>().expect("a size") / 1e6
    };
    let (desktop_tag, user_tag) = (image::tag(Kind::Desktop), image::tag(Kind::User));
    let (desktop_mb, user_mb) = (size(&desktop_tag), size(&user_tag));

    let port = common::browser::free_port();
    let mut serve = common::docker::spawn_serve(&dir, None, port);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "sluice serve did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login = api(
        &http,
        &base,
        None,
        reqwest::Method::POST,
        "/v1/admin/login",
        json!({"username": "admin", "password": common::ADMIN_PASSWORD}),
    )
    .await;
    let admin = login["token"].as_str().expect("token").to_string();
    let user = api(
        &http,
        &base,
        Some(&admin),
        reqwest::Method::POST,
        "/v1/admin/users",
        json!({"username": "bench"}),
    )
    .await;
    let user_id = user["data"]["id"].as_str().expect("user id").to_string();

    // Create to ready: the task ends once sshd and the VNC server both answer.
    let mut readies = Vec::new();
    let mut hosts = Vec::new();
    for _ in 0..CREATES {
        let start = Instant::now();
        let made = api(
            &http,
            &base,
            Some(&admin),
            reqwest::Method::POST,
            "/v1/admin/hosts",
            json!({"user_id": user_id, "desktop": true, "memory_mb": 1536}),
        )
        .await;
        wait_task(
            &http,
            &base,
            &admin,
            made["data"]["task_id"].as_str().expect("task"),
        )
        .await;
        readies.push(start.elapsed());
        hosts.push(made["data"].clone());
    }
    readies.sort();
    let host = &hosts[0];
    let (host_id, short) = (
        host["id"].as_str().expect("id").to_string(),
        host["short_id"].as_str().expect("short").to_string(),
    );
    for other in &hosts[1..] {
        api(
            &http,
            &base,
            Some(&admin),
            reqwest::Method::DELETE,
            &format!("/v1/admin/hosts/{}", other["id"].as_str().expect("id")),
            json!(null),
        )
        .await;
    }

    // Through Sluice: a ticket, the WebSocket, Sluice's greeting.
    let ticket = api(
        &http,
        &base,
        Some(&admin),
        reqwest::Method::POST,
        &format!("/v1/admin/hosts/{host_id}/vnc/ticket"),
        json!({}),
    )
    .await;
    let url = format!(
        "ws://127.0.0.1:{port}{}",
        ticket["data"]["websocket"].as_str().expect("websocket")
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("Sluice's desktop WebSocket");
    let mut client = Rfb::new(ws);
    client.handshake(None).await;
    let sluice_pid = serve.0.id();
    let (cpu0, start) = (cpu_of(sluice_pid), Instant::now());
    let bytes = client.pull(BYTES).await;
    let sluice = Figures {
        name: "Sluice",
        bytes,
        elapsed: start.elapsed(),
        cpu: cpu_of(sluice_pid) - cpu0,
    };
    drop(client);

    // Through websockify, in the container's namespace, to the same VNC server.
    let (ok, pid) = common::docker::docker(&[
        "inspect",
        "-f",
        "{{.State.Pid}}",
        &sluice::runtime::docker::container_name(&short),
    ]);
    assert!(ok, "{pid}");
    let pid: i64 = pid.trim().parse().expect("pid");
    let mut websockify = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "websockify"])
        .arg(format!("127.0.0.1:{WEBSOCKIFY_PORT}"))
        .arg("127.0.0.1:5901")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("websockify (apt-get install websockify)");
    let ns = NetNs::Pid(pid);
    let addr = ([127, 0, 0, 1], WEBSOCKIFY_PORT).into();
    let deadline = Instant::now() + Duration::from_secs(15);
    let stream = loop {
        match ns.connect_tcp(addr, Duration::from_secs(1)).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "websockify did not start: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://127.0.0.1:{WEBSOCKIFY_PORT}/websockify"),
        stream,
    )
    .await
    .expect("websockify's WebSocket");
    let password =
        std::fs::read_to_string(dir.join("hosts").join(&host_id).join("etc/vnc_password"))
            .expect("the host's VNC password");
    let mut client = Rfb::new(ws);
    client.handshake(Some(password.trim())).await;
    let ws_pid = websockify.id();
    let (cpu0, start) = (cpu_tree(ws_pid), Instant::now());
    let bytes = client.pull(BYTES).await;
    // websockify serves each connection in a child process: measured before it ends.
    let peer = Figures {
        name: "websockify",
        bytes,
        elapsed: start.elapsed(),
        cpu: cpu_tree(ws_pid) - cpu0,
    };
    drop(client);
    let _ = websockify.kill();
    let _ = websockify.wait();
    let _ = serve.0.kill();

    println!(
        "desktop image {desktop_tag}: {desktop_mb:.0} MB (on the user image {user_tag}, {user_mb:.0} MB)"
    );
    println!(
        "create to desktop ready (median of {CREATES}): {:.2} s (all: {:?})",
        readies[CREATES / 2].as_secs_f64(),
        readies
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
    );
    for f in [&sluice, &peer] {
        println!(
            "{:<11} {:>7.1} MiB/s  {:>6.3} CPU s per GiB relayed ({} MiB)",
            f.name,
            f.mib_per_s(),
            f.cpu_per_gib(),
            f.bytes / (1024 * 1024)
        );
    }
    println!(
        "Sluice / websockify: throughput {:.2}x, CPU per GiB {:.2}x",
        sluice.mib_per_s() / peer.mib_per_s(),
        sluice.cpu_per_gib() / peer.cpu_per_gib()
    );
}
