//! The gauges of one scrape, read fresh from the database, the egress engine, the SSH proxy
//! and `/proc`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use uuid::Uuid;

use super::gauge_family;
use crate::hosts::HostStatus;
use crate::ops::Core;
use crate::store;

type G = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EgressLabels {
    egress: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EgressInfoLabels {
    egress: String,
    label: String,
    tunnel_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    egress: String,
    /// `out` (from the hosts into the egress) or `in`.
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    egress: String,
    check: &'static str,
}

/// One scrape's gauges.
#[derive(Debug, Default)]
pub struct Snapshot {
    hosts: Family<StatusLabels, G>,
    tasks: Family<StatusLabels, G>,
    egress_info: Family<EgressInfoLabels, G>,
    egress_sessions: Family<EgressLabels, G>,
    egress_bytes: Family<DirectionLabels, G>,
    egress_packets: Family<DirectionLabels, G>,
    egress_refused: Family<EgressLabels, G>,
    handshake_age: Family<EgressLabels, G>,
    test_passed: Family<CheckLabels, G>,
    test_time: Family<EgressLabels, G>,
    ssh_live: Option<f64>,
    fds: Option<f64>,
    max_fds: Option<f64>,
    rss: Option<f64>,
    database_up: f64,
}

fn set<L: Clone + std::hash::Hash + Eq>(f: &Family<L, G>, l: L, v: f64) {
    f.get_or_create(&l).set(v);
}

impl Snapshot {
    /// Reads everything a scrape shows. A database that does not answer shows as
    /// `sluice_database_up 0`, not as a failed scrape.
    pub async fn take(core: &Core) -> Snapshot {
        let mut s = Snapshot::default();
        match s.read_database(core).await {
            Ok(()) => s.database_up = 1.0,
            Err(e) => tracing::warn!(error = %e, "metrics: the database did not answer"),
        }
        if let Some(engine) = core.runtime.engine() {
            let now = crate::clock::now().unix_timestamp().max(0) as u64;
            for (_, info) in engine.sessions().await {
                let egress = info.egress_id.to_string();
                s.egress_sessions
                    .get_or_create(&EgressLabels {
                        egress: egress.clone(),
                    })
                    .inc();
                s.egress_refused
                    .get_or_create(&EgressLabels {
                        egress: egress.clone(),
                    })
                    .inc_by(info.refused_destinations as f64);
                for (direction, bytes, packets) in [
                    ("out", info.tx_bytes, info.tx_packets),
                    ("in", info.rx_bytes, info.rx_packets),
                ] {
                    let l = DirectionLabels {
                        egress: egress.clone(),
                        direction,
                    };
                    s.egress_bytes.get_or_create(&l).inc_by(bytes as f64);
                    s.egress_packets.get_or_create(&l).inc_by(packets as f64);
                }
                if info.last_handshake > 0 {
                    set(
                        &s.handshake_age,
                        EgressLabels { egress },
                        now.saturating_sub(info.last_handshake) as f64,
                    );
                }
            }
        }
        s.ssh_live = core.sessions.as_ref().map(|r| r.count() as f64);
        s.fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        s.max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft as f64);
        s.rss = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|t| t.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map(|pages| pages * page_size());
        s
    }

    async fn read_database(&self, core: &Core) -> store::Result<()> {
        let mut db = core.store.acquire().await?;
        for st in HostStatus::ALL {
            let status = st.as_str().into();
            set(&self.hosts, StatusLabels { status }, 0.0);
        }
        for (status, n) in store::hosts::count_by_status(db.conn()).await? {
            set(&self.hosts, StatusLabels { status }, n as f64);
        }
        for status in ["queued", "running"] {
            let n = store::tasks::count(db.conn(), status, None).await?;
            let status = status.into();
            set(&self.tasks, StatusLabels { status }, n as f64);
        }
        for (id, label, tunnel_type, last_test) in store::egress::summaries(db.conn()).await? {
            let egress = id.to_string();
            set(
                &self.egress_info,
                EgressInfoLabels {
                    egress,
                    label,
                    tunnel_type,
                },
                1.0,
            );
            if let Some(t) = last_test {
                self.record_test(id, &t.0);
            }
        }
        Ok(())
    }

    fn record_test(&self, id: Uuid, report: &serde_json::Value) {
        let egress = id.to_string();
        for check in ["connectivity", "exit_ip", "dns_leak"] {
            if let Some(passed) = report["checks"][check]["passed"].as_bool() {
                set(
                    &self.test_passed,
                    CheckLabels {
                        egress: egress.clone(),
                        check,
                    },
                    if passed { 1.0 } else { 0.0 },
                );
            }
        }
        if let Some(at) = report["tested_at"].as_str().and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        }) {
            set(
                &self.test_time,
                EgressLabels { egress },
                at.unix_timestamp() as f64,
            );
        }
    }

    pub(super) fn encode(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge_family(e, "hosts", "Hosts by status", &self.hosts)?;
        gauge_family(
            e,
            "tasks_waiting",
            "Tasks queued or running, by status",
            &self.tasks,
        )?;
        gauge_family(
            e,
            "egress_info",
            "Each egress: its label and tunnel type (always 1)",
            &self.egress_info,
        )?;
        gauge_family(
            e,
            "egress_sessions",
            "Live egress sessions (hosts attached), by egress",
            &self.egress_sessions,
        )?;
        gauge_family(
            e,
            "egress_session_bytes",
            "Bytes through live egress sessions since each started, by egress and direction (out: from hosts)",
            &self.egress_bytes,
        )?;
        gauge_family(
            e,
            "egress_session_packets",
            "Packets through live egress sessions since each started, by egress and direction",
            &self.egress_packets,
        )?;
        gauge_family(
            e,
            "egress_session_refused_destinations",
            "Connections live proxy egress sessions refused for their destination (internal addresses the egress does not allow) since each started, by egress",
            &self.egress_refused,
        )?;
        gauge_family(
            e,
            "wireguard_handshake_age_seconds",
            "Seconds since the last WireGuard handshake, by egress (the oldest of its sessions)",
            &self.handshake_age,
        )?;
        gauge_family(
            e,
            "egress_test_passed",
            "The last egress test's checks (1 passed, 0 failed), by egress and check",
            &self.test_passed,
        )?;
        gauge_family(
            e,
            "egress_test_timestamp_seconds",
            "When each egress was last tested (Unix seconds)",
            &self.test_time,
        )?;
        let single: [(&str, &str, Option<f64>); 5] = [
            (
                "database_up",
                "Whether the database answered this scrape",
                Some(self.database_up),
            ),
            (
                "ssh_sessions_live",
                "Live SSH and browser sessions",
                self.ssh_live,
            ),
            (
                "process_open_fds",
                "Open file descriptors of the Sluice process",
                self.fds,
            ),
            (
                "process_max_fds",
                "The open-files limit of the Sluice process",
                self.max_fds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory of the Sluice process",
                self.rss,
            ),
        ];
        for (name, help, value) in single {
            if let Some(v) = value {
                let g = G::default();
                g.set(v);
                let m = e.encode_descriptor(
                    name,
                    help,
                    None,
                    prometheus_client::metrics::MetricType::Gauge,
                )?;
                prometheus_client::encoding::EncodeMetric::encode(&g, m)?;
            }
        }
        Ok(())
    }
}

fn page_size() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096.0, |p| p as f64)
}
