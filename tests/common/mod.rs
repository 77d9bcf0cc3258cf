//! Shared test harness: a real Sluice server on an ephemeral port, on SQLite or on a fresh
//! PostgreSQL database, with a recording runtime double, and a small HTTP client.
#![allow(dead_code)]

pub mod browser;
pub mod docker;
pub mod pty;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sluice::config::{LogFormat, LogSettings, ServeSettings, StoreSettings};
use sluice::runtime::{HostRuntime, HostSpec, Progress, RuntimeError};
use sqlx::Connection;

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        )*
    };
}

/// A fresh database URL for one test.
pub async fn database_url(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("sluice.db").display()),
        Backend::Postgres => {
            let admin = std::env::var("SLUICE_TEST_PG_URL").expect(
                "SLUICE_TEST_PG_URL is not set: run the tests through scripts/test.sh, \
                 which starts a PostgreSQL server",
            );
            let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("connect to the test PostgreSQL server");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create a test database");
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
            format!("{base}/{name}")
        }
    }
}

/// What the recording runtime was asked to do, as `(operation, short_id)`.
#[derive(Default)]
pub struct Recorder {
    pub calls: Mutex<Vec<(String, String)>>,
    /// Operations that fail (permanently) with this message.
    pub fail: Mutex<Vec<(String, String)>>,
    /// Operations that never finish (to simulate a crash mid-task).
    pub hang: Mutex<Vec<String>>,
    /// Hosts with a "container", and whether it runs.
    pub containers: Mutex<std::collections::HashMap<uuid::Uuid, bool>>,
}

/// A runtime double that records each call and succeeds unless told otherwise.
#[derive(Clone, Default)]
pub struct RecordingRuntime(pub Arc<Recorder>);

impl RecordingRuntime {
    pub fn calls(&self) -> Vec<(String, String)> {
        self.0.calls.lock().unwrap().clone()
    }
    pub fn fail(&self, op: &str, message: &str) {
        self.0
            .fail
            .lock()
            .unwrap()
            .push((op.into(), message.into()));
    }
    pub fn hang(&self, op: &str) {
        self.0.hang.lock().unwrap().push(op.into());
    }
    async fn op(
        &self,
        op: &str,
        host: &HostSpec,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        self.0
            .calls
            .lock()
            .unwrap()
            .push((op.to_string(), host.short_id.clone()));
        progress.report(&format!("{op} in progress")).await;
        if self.0.hang.lock().unwrap().iter().any(|h| h == op) {
            std::future::pending::<()>().await;
        }
        let failure = self
            .0
            .fail
            .lock()
            .unwrap()
            .iter()
            .find(|(o, _)| o == op)
            .map(|(_, m)| m.clone());
        if let Some(m) = failure {
            return Err(RuntimeError::permanent(m));
        }
        let mut containers = self.0.containers.lock().unwrap();
        match op {
            "create" | "start" | "rebuild" | "rebuild_wipe" => {
                containers.insert(host.id, true);
            }
            "stop" => {
                containers.insert(host.id, false);
            }
            "delete" => {
                containers.remove(&host.id);
            }
            _ => {}
        }
        Ok(())
    }
}

#[async_trait]
impl HostRuntime for RecordingRuntime {
    async fn create(&self, h: &HostSpec, p: &dyn Progress) -> Result<(), RuntimeError> {
        self.op("create", h, p).await
    }
    async fn start(&self, h: &HostSpec, p: &dyn Progress) -> Result<(), RuntimeError> {
        self.op("start", h, p).await
    }
    async fn stop(&self, h: &HostSpec, p: &dyn Progress) -> Result<(), RuntimeError> {
        self.op("stop", h, p).await
    }
    async fn rebuild(
        &self,
        h: &HostSpec,
        wipe: bool,
        p: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        self.op(if wipe { "rebuild_wipe" } else { "rebuild" }, h, p)
            .await
    }
    async fn delete(&self, h: &HostSpec, p: &dyn Progress) -> Result<(), RuntimeError> {
        self.op("delete", h, p).await
    }
    async fn observe(&self) -> Result<Vec<sluice::runtime::Observed>, RuntimeError> {
        Ok(self
            .0
            .containers
            .lock()
            .unwrap()
            .iter()
            .map(|(id, running)| sluice::runtime::Observed {
                host_id: *id,
                running: *running,
                egress_attached: true,
            })
            .collect())
    }
    fn image(&self, kind: sluice::runtime::image::Kind) -> Option<String> {
        Some(format!("recording:{}", kind.repository()))
    }
    async fn bind_egress(&self, h: &HostSpec, p: &dyn Progress) -> Result<(), RuntimeError> {
        let egress = h
            .egress
            .as_ref()
            .map(|e| e.ip_address.clone())
            .unwrap_or_else(|| "none".into());
        self.op(&format!("bind:{egress}"), h, p).await
    }
}

/// A running server and a client for it.
pub struct Server {
    pub base: String,
    pub addr: SocketAddr,
    /// Where this server's SSH proxy listens.
    pub ssh_addr: SocketAddr,
    pub runtime: RecordingRuntime,
    pub running: Option<sluice::app::Running>,
    pub settings: ServeSettings,
    pub http: reqwest::Client,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub fn settings(dir: &std::path::Path, url: String) -> ServeSettings {
    ServeSettings {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        http_max_connections: 4096,
        http_header_timeout_secs: 10,
        http_write_timeout_secs: 30,
        store: StoreSettings {
            data_dir: dir.to_path_buf(),
            database_url: Some(url),
            host_uids: Default::default(),
        },
        admin_username: "admin".into(),
        admin_password: Some(ADMIN_PASSWORD.into()),
        admin_jwt_secret: None,
        // An ephemeral port on loopback: every test server has its own SSH proxy.
        ssh_proxy_port: 0,
        ssh: sluice::config::SshSettings {
            listen_ip: [127, 0, 0, 1].into(),
            handshake_timeout_secs: 30,
            idle_timeout_secs: 3600,
            max_session_secs: 86400,
            max_connections_per_source: 200,
            max_sessions_per_account: 64,
            max_channels: 32,
            max_channels_per_account: 256,
            agent_forwarding: false,
            record_sessions: false,
            record_input: false,
            recording_retention_days: 30,
            recording_max_mb: 256,
            recordings_disk_budget_mb: 10240,
        },
        public_host: Some("sluice.test".into()),
        public_url: None,
        tls_cert: None,
        tls_key: None,
        trusted_proxies: Vec::new(),
        metrics_addr: None,
        // High, so that polling tests do not trip it; the rate-limit test sets the default.
        api_rate_limit: 100_000,
        probe: sluice::config::ProbeSettings {
            probe_url: "http://192.0.2.1/".into(),
            probe_ip_urls: vec!["http://192.0.2.1/".into()],
            probe_dns_name: "*.whoami.test".into(),
        },
        log: LogSettings {
            log_format: LogFormat::Text,
            log_level: "info".into(),
        },
    }
}

impl Server {
    pub async fn start(backend: Backend) -> Server {
        Self::start_configured(backend, |_| {}).await
    }

    /// Starts a server whose settings `tweak` adjusts.
    pub async fn start_configured(
        backend: Backend,
        tweak: impl FnOnce(&mut ServeSettings),
    ) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let url = database_url(backend, tmp.path()).await;
        let mut s = settings(tmp.path(), url);
        tweak(&mut s);
        let dir = tmp.path().to_path_buf();
        Self::start_with(s, RecordingRuntime::default(), dir, Some(tmp)).await
    }

    pub async fn start_with(
        settings: ServeSettings,
        runtime: RecordingRuntime,
        dir: PathBuf,
        tmp: Option<tempfile::TempDir>,
    ) -> Server {
        let dynamic: Arc<dyn HostRuntime> = Arc::new(runtime.clone());
        Self::start_on(settings, dynamic, runtime, dir, tmp).await
    }

    /// Starts a server driving `runtime` (the recorder then stays unused).
    pub async fn start_on(
        settings: ServeSettings,
        runtime: Arc<dyn HostRuntime>,
        recorder: RecordingRuntime,
        dir: PathBuf,
        tmp: Option<tempfile::TempDir>,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = sluice::app::start(&settings, runtime, Some(listener))
            .await
            .expect("server starts");
        let addr = running.addr;
        let ssh_addr = running.ssh_addr;
        Server {
            base: format!("http://{addr}"),
            addr,
            ssh_addr,
            runtime: recorder,
            running: Some(running),
            settings,
            http: reqwest::Client::new(),
            dir,
            _tmp: tmp,
        }
    }

    /// Stops serving, keeping the data (to start another server on it).
    pub async fn stop(&mut self) -> Option<tempfile::TempDir> {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self._tmp.take()
    }

    /// Sends a request; answers the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, v) = self.call_full(method, path, token, body).await;
        (status, v)
    }

    pub async fn call_full(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        Self::send(&self.http, &self.base, method, path, token, body).await
    }

    /// Sends every later request from another loopback address (127.0.0.x).
    pub fn set_source(&mut self, source: [u8; 4]) {
        self.http = reqwest::Client::builder()
            .local_address(Some(std::net::IpAddr::from(source)))
            .build()
            .unwrap();
    }

    /// Sends a request from another loopback address (127.0.0.x), as a second client
    /// machine would.
    pub async fn call_from(
        &self,
        source: [u8; 4],
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let client = reqwest::Client::builder()
            .local_address(Some(std::net::IpAddr::from(source)))
            .build()
            .unwrap();
        Self::send(&client, &self.base, method, path, token, body).await
    }

    async fn send(
        http: &reqwest::Client,
        base: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = http.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, v)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "login of {username}: {v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub async fn admin(&self) -> String {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Creates a user with a known password; answers (id, token).
    pub async fn user(&self, admin: &str, username: &str) -> (String, String) {
        let pw = format!("{username}-password");
        let (s, v) = self
            .post(
                "/v1/admin/users",
                admin,
                json!({"username": username, "password": pw}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v["data"]["id"].as_str().unwrap().to_string();
        (id.clone(), self.login(username, &pw).await)
    }

    /// Polls a task until it finishes (within two minutes); answers it.
    pub async fn wait_task(&self, admin: &str, task_id: &str) -> Value {
        self.wait_task_for(admin, task_id, Duration::from_secs(120))
            .await
    }

    /// Polls a task until it finishes within `limit`; answers it.
    pub async fn wait_task_for(&self, admin: &str, task_id: &str, limit: Duration) -> Value {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let (s, v) = self.get(&format!("/v1/admin/tasks/{task_id}"), admin).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let st = v["data"]["status"].as_str().unwrap().to_string();
            if st == "succeeded" || st == "failed" {
                return v["data"].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "task {task_id} did not finish: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a host for a user and waits for its creation task.
    pub async fn host(&self, admin: &str, user_id: &str, extra: Value) -> Value {
        let mut body = json!({"user_id": user_id});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let (s, v) = self.post("/v1/admin/hosts", admin, body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        self.wait_task(admin, v["data"]["task_id"].as_str().unwrap())
            .await;
        v["data"].clone()
    }

    /// Actions of the events so far, oldest first.
    pub async fn actions(&self, admin: &str) -> Vec<String> {
        let (_, v) = self.get("/v1/admin/events?limit=1000", admin).await;
        let mut a: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect();
        a.reverse();
        a
    }
}

/// A WireGuard egress body.
pub fn wg_egress(label: &str) -> Value {
    json!({
        "label": label,
        "ip_address": "203.0.113.10",
        "provider": "lab",
        "tunnel_type": "wireguard",
        "wg_endpoint": "198.51.100.2:51820",
        "wg_public_key": "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        "wg_dns_server": "10.64.0.1",
        "wg_peer_address": "10.64.0.2/32",
    })
}

/// One egress of every kind with known secrets: (bodies, the secrets they carry).
pub fn every_egress_kind() -> (Vec<Value>, Vec<&'static str>) {
    let private = "4HV0OMx1ELdM1FkdrBFfK2b1KaQnOPBuYZt9HnmVYXY=";
    let psk = "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=";
    let mut wg = wg_egress("wg-private");
    wg["wg_private_key"] = json!(private);
    wg["wg_preshared_key"] = json!(psk);
    let proxies = [
        json!({"type": "socks", "server": "192.0.2.1", "server_port": 1080, "username": "u", "password": "socks-secret"}),
        json!({"type": "http", "server": "192.0.2.1", "server_port": 3128, "username": "u", "password": "http-secret", "tls": {"enabled": true, "server_name": "proxy.example"}}),
        json!({"type": "shadowsocks", "server": "192.0.2.1", "server_port": 8388, "method": "chacha20-ietf-poly1305", "password": "ss-secret"}),
        json!({"type": "vmess", "server": "192.0.2.1", "server_port": 10086, "uuid": "b831381d-6324-4d53-ad4f-8cda48b30811", "security": "aes-128-gcm"}),
        json!({"type": "trojan", "server": "192.0.2.1", "server_port": 443, "password": "trojan-secret", "tls": {"enabled": true, "server_name": "t.example", "insecure": true}}),
    ];
    let mut bodies = vec![wg];
    bodies.extend(proxies.into_iter().map(|cfg| {
        json!({"label": cfg["type"], "ip_address": "203.0.113.20", "tunnel_type": "proxy", "proxy_config": cfg})
    }));
    let secrets = vec![
        private,
        psk,
        "socks-secret",
        "http-secret",
        "ss-secret",
        "b831381d-6324-4d53-ad4f-8cda48b30811",
        "trojan-secret",
    ];
    (bodies, secrets)
}
