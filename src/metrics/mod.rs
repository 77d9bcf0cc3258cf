//! Metrics: what Sluice tells a monitoring system, at `/metrics` (OpenMetrics text, which
//! Prometheus scrapes), through the `prometheus-client` crate.
//!
//! Counters and histograms are bumped where things happen: the HTTP layer ([`http_layer`]),
//! the task worker, the SSH proxy's logins, the password doors. Gauges are read fresh at each
//! scrape ([`Snapshot`]): hosts by status, tasks waiting, egress sessions with their bytes,
//! packets and WireGuard handshake age, the last egress test, live SSH sessions, and the
//! process's descriptors and memory. Every label set is bounded: routes are templates,
//! kinds and outcomes come from fixed sets, egresses by id (as many as are configured);
//! never a user, a host or an address.

use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub mod snapshot;

pub use snapshot::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub kind: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// `account` (API, dashboard, bootstrap, password change) or `host` (short links, SSH).
    pub target: &'static str,
}

fn histogram_seconds() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 4.0, 9))
}

/// The metrics bumped as things happen, one set per process.
#[derive(Debug)]
pub struct Metrics {
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub tasks: Family<TaskLabels, Counter>,
    pub task_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    pub ssh_logins: Family<OutcomeLabels, Counter>,
    pub password_failures: Family<TargetLabels, Counter>,
    pub lockouts: Family<TargetLabels, Counter>,
    pub refused_locked: Counter,
    pub sessions_recorded: Family<OutcomeLabels, Counter>,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    http_requests: Family::default(),
    http_duration: Family::new_with_constructor(histogram_seconds),
    tasks: Family::default(),
    task_duration: Family::new_with_constructor(histogram_seconds),
    ssh_logins: Family::default(),
    password_failures: Family::default(),
    lockouts: Family::default(),
    refused_locked: Counter::default(),
    sessions_recorded: Family::default(),
});

/// The values read at the scrape in progress, handed to the registry's collector.
#[derive(Debug, Default)]
struct Fresh(Mutex<Option<Snapshot>>);

impl Collector for &'static Fresh {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(s) => s.encode(&mut encoder),
            None => Ok(()),
        }
    }
}

static FRESH: LazyLock<Fresh> = LazyLock::new(Fresh::default);

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let m = &*METRICS;
    let mut r = Registry::with_prefix("sluice");
    r.register(
        "http_requests",
        "HTTP requests answered, by route template, method and status code",
        m.http_requests.clone(),
    );
    r.register(
        "http_request_duration_seconds",
        "Time to answer an HTTP request (until its headers), by route template",
        m.http_duration.clone(),
    );
    r.register(
        "tasks",
        "Tasks finished, by kind and outcome (succeeded, failed)",
        m.tasks.clone(),
    );
    r.register(
        "task_duration_seconds",
        "Time a task ran, by kind",
        m.task_duration.clone(),
    );
    r.register(
        "ssh_logins",
        "SSH proxy logins by outcome: entered, refused (wrong credentials), turned_away (right credentials, but the host or account cannot be entered)",
        m.ssh_logins.clone(),
    );
    r.register(
        "password_failures",
        "Wrong passwords (or unknown names) at any door, by what was tried: account or host",
        m.password_failures.clone(),
    );
    r.register(
        "lockouts",
        "Lockouts a failure triggered, by what was tried",
        m.lockouts.clone(),
    );
    r.register(
        "refused_locked",
        "Password attempts refused because their source or target was locked out",
        m.refused_locked.clone(),
    );
    r.register(
        "session_recordings",
        "Terminal sessions whose recording ended, by outcome (stored, failed)",
        m.sessions_recorded.clone(),
    );
    r.register_collector(Box::new(&*FRESH));
    r
});

/// Serializes scrapes: the collector shows one snapshot at a time.
static SCRAPE: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(Default::default);

/// The exposition: counters so far and `snapshot`'s gauges.
pub async fn render(snapshot: Snapshot) -> String {
    let _one = SCRAPE.lock().await;
    *FRESH.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &REGISTRY).is_err() {
        out.clear();
    }
    *FRESH.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    out
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The tower layer counting every request by its route template, method and status.
pub async fn http_layer(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = &*METRICS;
    m.http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            method,
            code: resp.status().as_u16(),
        })
        .inc();
    m.http_duration
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// A task finished after `secs`.
pub fn task_done(kind: &str, ok: bool, secs: f64) {
    let m = &*METRICS;
    m.tasks
        .get_or_create(&TaskLabels {
            kind: kind.to_string(),
            outcome: if ok { "succeeded" } else { "failed" },
        })
        .inc();
    m.task_duration
        .get_or_create(&KindLabels {
            kind: kind.to_string(),
        })
        .observe(secs);
}

/// Encodes a gauge family under `name`.
pub(crate) fn gauge_family<L>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    family: &Family<L, Gauge<f64, std::sync::atomic::AtomicU64>>,
) -> Result<(), std::fmt::Error>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug,
{
    let m = encoder.encode_descriptor(name, help, None, family.metric_type())?;
    family.encode(m)
}
