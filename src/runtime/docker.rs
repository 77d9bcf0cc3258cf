//! The Docker implementation of [`HostRuntime`], through bollard: one container per host
//! (`sluice-<short id>`, network mode `none`, capabilities cut to what sshd needs), one home
//! volume per host (`sluice-home-<host id>`), Sluice's files bind-mounted read-only.
//!
//! Containers carry the label `sluice.instance`, so two Sluice installs (or two test servers)
//! on one engine never touch each other's containers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, OnceCell};
use uuid::Uuid;

use super::hostfiles::HostFiles;
use super::image::{self, BuildEvent};
use super::{
    DesktopEndpoint, HostIssue, HostRuntime, HostSpec, ImageStatus, Observed, Progress,
    RuntimeError, RuntimeStatus, SshEndpoint, VNC_PORT,
};
use crate::egress::EgressSettings;
use crate::egress::engine::Engine;
use crate::netns;
use crate::netns::NetNs;
use russh::keys::ssh_key::{PrivateKey, PublicKey};
use std::sync::Arc;

/// Capabilities a host keeps: what sshd and the entrypoint need, and nothing that touches
/// the network (no NET_ADMIN, NET_RAW) or the kernel (no SYS_ADMIN).
pub const CAPABILITIES: [&str; 8] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

const LABEL_INSTANCE: &str = "sluice.instance";
const LABEL_HOST: &str = "sluice.host_id";
const LABEL_SHORT: &str = "sluice.short_id";
/// The shape of the container Sluice makes (mounts, account), carried as a label: a container
/// of an older shape is made again (its home kept) when its host next starts, so a change that
/// contains tenants better reaches every host without waiting for a rebuild.
const LABEL_SHAPE: &str = "sluice.shape";
/// Shape 2: `/run` and `/tmp` are fresh tmpfs at every start, and the account has its host's
/// own uid.
const SHAPE: &str = "2";
/// How long sshd gets to answer after the container starts.
const SSHD_WAIT: Duration = Duration::from_secs(30);

/// Hosts as Docker containers.
pub struct DockerRuntime {
    docker: OnceCell<Docker>,
    data_dir: PathBuf,
    instance: String,
    build_lock: Mutex<()>,
    engine: Arc<Engine>,
    /// How the engine maps containers' ids, read once: `None` when it does not remap.
    remap: OnceCell<Option<super::remap::IdMap>>,
}

pub fn container_name(short_id: &str) -> String {
    format!("sluice-{short_id}")
}

pub fn volume_name(host_id: Uuid) -> String {
    format!("sluice-home-{host_id}")
}

/// Transient: the engine could not be reached or timed out. Everything else is permanent.
fn classify(e: DockerError) -> RuntimeError {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let message = message.trim().to_string();
            if status_code == 502 || status_code == 503 {
                RuntimeError::EngineBusy(message)
            } else {
                RuntimeError::Refused(message)
            }
        }
        DockerError::IOError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::RequestTimeoutError => RuntimeError::EngineUnreachable(e.to_string()),
        other => RuntimeError::Engine(other.to_string()),
    }
}

fn not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerRuntime {
    /// A runtime keeping its per-host files under `data_dir`. The engine is contacted (and its
    /// API version negotiated) on first use, so Sluice starts even while Docker is down.
    pub fn new(data_dir: &Path) -> std::io::Result<Self> {
        // Bind-mount sources must be absolute; whatever the caller passed, resolve it once.
        let data_dir = std::path::absolute(data_dir)?;
        let data_dir = data_dir.as_path();
        Ok(Self {
            docker: OnceCell::new(),
            data_dir: data_dir.to_path_buf(),
            instance: instance_id(data_dir)?,
            build_lock: Mutex::new(()),
            engine: Arc::new(Engine::new()),
            remap: OnceCell::new(),
        })
    }

    /// A runtime that only looks at the engine and its images (`sluice doctor`): it has no
    /// data directory and belongs to no install, so it touches no file and no container.
    pub fn observer() -> Self {
        Self {
            docker: OnceCell::new(),
            data_dir: std::path::PathBuf::new(),
            instance: String::new(),
            build_lock: Mutex::new(()),
            engine: Arc::new(Engine::new()),
            remap: OnceCell::new(),
        }
    }

    /// Attaches a running host's namespace to its egress, or detaches it when it has none.
    async fn attach_egress(
        &self,
        host: &HostSpec,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        let Some(egress) = &host.egress else {
            self.engine.detach(host.id).await;
            return Ok(());
        };
        let pid = self
            .running_pid(host)
            .await?
            .ok_or(RuntimeError::Host(HostIssue::NotRunning))?;
        progress.report("attaching the egress").await;
        self.engine
            .attach(host.id, &NetNs::Pid(pid), egress.id, &egress.settings)
            .await
            .map_err(|e| RuntimeError::Egress(e.to_string()))
    }

    /// This install's id, carried by every container it makes.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The negotiated engine client.
    pub async fn docker(&self) -> Result<&Docker, RuntimeError> {
        self.docker
            .get_or_try_init(|| async {
                let d = Docker::connect_with_local_defaults().map_err(classify)?;
                tokio::time::timeout(Duration::from_secs(10), d.negotiate_version())
                    .await
                    .map_err(|_| RuntimeError::EngineUnreachable("no answer within 10 s".into()))?
                    .map_err(classify)
            })
            .await
    }

    /// Builds a managed image if it is missing (the user image first, which the desktop image
    /// is built from), reporting steps to `on_event`. Answers whether anything was built.
    pub async fn ensure_image(
        &self,
        kind: image::Kind,
        mut on_event: impl FnMut(image::Kind, BuildEvent),
    ) -> Result<bool, RuntimeError> {
        let docker = self.docker().await?;
        let _guard = self.build_lock.lock().await;
        let mut built = false;
        let chain: &[image::Kind] = match kind {
            image::Kind::User => &[image::Kind::User],
            image::Kind::Desktop => &[image::Kind::User, image::Kind::Desktop],
        };
        for &k in chain {
            if image::exists(docker, &image::tag(k))
                .await
                .map_err(classify)?
            {
                continue;
            }
            image::build(docker, k, |ev| on_event(k, ev))
                .await
                .map_err(|e| RuntimeError::Image(e.to_string()))?;
            built = true;
        }
        Ok(built)
    }

    fn files(&self, host: &HostSpec) -> HostFiles {
        HostFiles::new(&self.data_dir, host.id)
    }

    /// The resolver a host's container uses: its WireGuard egress's DNS server, or nothing
    /// reachable (loopback) while it has no egress.
    fn nameserver(host: &HostSpec) -> String {
        match host.egress.as_ref().map(|e| &e.settings) {
            Some(EgressSettings::Wireguard(w)) => w.dns_server.clone(),
            Some(EgressSettings::Proxy { .. }) => crate::egress::proxy::RESOLVER.to_string(),
            None => "127.0.0.1".into(),
        }
    }

    async fn inspect(
        &self,
        name: &str,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>, RuntimeError> {
        match self.docker().await?.inspect_container(name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn remove_container(&self, name: &str) -> Result<(), RuntimeError> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self
            .docker()
            .await?
            .remove_container(name, Some(opts))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // A removal already under way finishes on its own.
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn remove_volume(&self, host_id: Uuid) -> Result<(), RuntimeError> {
        let opts = RemoveVolumeOptions { force: true };
        match self
            .docker()
            .await?
            .remove_volume(&volume_name(host_id), Some(opts))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// This install's containers (of one host, when given), running or not.
    async fn list_own(
        &self,
        host_id: Option<Uuid>,
    ) -> Result<Vec<bollard::models::ContainerSummary>, RuntimeError> {
        let mut labels = vec![format!("{LABEL_INSTANCE}={}", self.instance)];
        if let Some(id) = host_id {
            labels.push(format!("{LABEL_HOST}={id}"));
        }
        let filters = HashMap::from([("label".to_string(), labels)]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker()
            .await?
            .list_containers(Some(opts))
            .await
            .map_err(classify)
    }

    /// The pid of a host's container init, when the container runs.
    async fn running_pid(&self, host: &HostSpec) -> Result<Option<i64>, RuntimeError> {
        Ok(self
            .inspect(&container_name(&host.short_id))
            .await?
            .and_then(|c| c.state)
            .filter(|s| s.running == Some(true))
            .and_then(|s| s.pid)
            .filter(|p| *p > 0))
    }

    fn labels(&self, host: &HostSpec) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_INSTANCE.to_string(), self.instance.clone()),
            (LABEL_HOST.to_string(), host.id.to_string()),
            (LABEL_SHORT.to_string(), host.short_id.clone()),
        ])
    }

    /// Whether the engine remaps user namespaces, and how (read once).
    pub async fn remap(&self) -> Result<Option<super::remap::IdMap>, RuntimeError> {
        self.remap
            .get_or_try_init(|| async {
                let info = self.docker().await?.info().await.map_err(classify)?;
                if !super::remap::remapping(&info.security_options.unwrap_or_default()) {
                    return Ok(None);
                }
                super::remap::IdMap::of_default_user()
                    .map(Some)
                    .map_err(RuntimeError::Unsupported)
            })
            .await
            .copied()
    }

    /// Writes the host's files (keys, account, resolver) for its container. Under
    /// `userns-remap` the account's uid must be one the engine maps, and the container's root
    /// gets the files only it reads.
    async fn prepare_files(&self, host: &HostSpec) -> Result<(), RuntimeError> {
        let account = host.account()?;
        let remap = self.remap().await?;
        if let Some(m) = remap
            && !m.maps(account.uid)
        {
            return Err(RuntimeError::Unsupported(format!(
                "the host's account uid {} is outside the {} uids Docker's userns-remap maps: \
                 give SLUICE_HOST_UIDS a range below {}",
                account.uid, m.size, m.size
            )));
        }
        self.files(host)
            .prepare(
                &account,
                &host.owner_keys,
                &Self::nameserver(host),
                remap.map(|m| (m.uid_base, m.gid_base)),
            )
            .map_err(|e| RuntimeError::Files {
                action: "write",
                detail: e.to_string(),
            })
    }

    /// Makes the container (files, image and volume first), replacing any stale one.
    async fn create_container(
        &self,
        host: &HostSpec,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        let username = host.account()?.name;
        let files = self.files(host);
        self.prepare_files(host).await?;
        let docker = self.docker().await?;
        let kind = image::Kind::of(host.desktop);
        let tag = image::tag(kind);
        if !image::exists(docker, &tag).await.map_err(classify)? {
            progress
                .report(match kind {
                    image::Kind::User => {
                        "building the managed image (first use; this takes a few minutes)"
                    }
                    image::Kind::Desktop => {
                        "building the desktop image (first use; this takes several minutes)"
                    }
                })
                .await;
        }
        self.ensure_image(kind, |k, ev| {
            if let BuildEvent::Step {
                n,
                total,
                instruction,
            } = ev
            {
                tracing::info!(image = ?k, step = n, total, %instruction, "building a managed image");
            }
        })
        .await?;
        progress.report("creating the home volume").await;
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume_name(host.id)),
                labels: Some(self.labels(host)),
                ..Default::default()
            })
            .await
            .map_err(classify)?;

        let name = container_name(&host.short_id);
        self.remove_container(&name).await?;
        progress.report("creating the container").await;
        let bind = |source: &Path, target: &str| Mount {
            source: Some(source.display().to_string()),
            target: Some(target.to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        };
        let memory = host.memory_mb.saturating_mul(1024 * 1024);
        let host_config = HostConfig {
            network_mode: Some("none".into()),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(CAPABILITIES.iter().map(|c| c.to_string()).collect()),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            sysctls: Some(HashMap::from([
                (
                    "net.ipv6.conf.all.disable_ipv6".to_string(),
                    "1".to_string(),
                ),
                (
                    "net.ipv6.conf.default.disable_ipv6".to_string(),
                    "1".to_string(),
                ),
            ])),
            init: Some(true),
            pids_limit: Some(host.pids_limit),
            // A browser needs more shared memory than Docker's 64 MiB default; it counts
            // against the host's memory limit like any other page.
            shm_size: host.desktop.then_some(DESKTOP_SHM_BYTES),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some((host.cpus * 1e9).round() as i64),
            // Fresh at every start and owned by root: nothing the owner left in /run or /tmp
            // is there when the entrypoint (root) makes its directories. Their pages count
            // against the host's memory limit.
            tmpfs: Some(HashMap::from([
                (
                    "/run".to_string(),
                    "rw,nosuid,nodev,noexec,mode=0755,size=16m".to_string(),
                ),
                (
                    "/tmp".to_string(),
                    format!("rw,nosuid,nodev,mode=1777,size={}m", host.memory_mb.max(1)),
                ),
            ])),
            mounts: Some(vec![
                Mount {
                    source: Some(volume_name(host.id)),
                    target: Some(format!("/home/{username}")),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                },
                bind(&files.etc(), "/etc/sluice"),
                bind(&files.resolv_conf(), "/etc/resolv.conf"),
            ]),
            ..Default::default()
        };
        let mut labels = self.labels(host);
        labels.insert(LABEL_SHAPE.to_string(), SHAPE.to_string());
        let body = ContainerCreateBody {
            image: Some(tag),
            hostname: Some(host.short_id.clone()),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        if let Err(e) = docker.create_container(Some(opts), body).await {
            // Leave nothing half-made behind.
            let _ = self.remove_container(&name).await;
            return Err(classify(e));
        }
        Ok(())
    }

    /// Starts the container and waits until sshd answers inside it.
    async fn start_and_wait(
        &self,
        host: &HostSpec,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        let name = container_name(&host.short_id);
        let docker = self.docker().await?;
        progress.report("starting the container").await;
        match docker.start_container(&name, None).await {
            Ok(()) => {}
            // 304: already running.
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(classify(e)),
        }
        progress
            .report(if host.desktop {
                "waiting for sshd and the desktop"
            } else {
                "waiting for sshd"
            })
            .await;
        let deadline = tokio::time::Instant::now() + SSHD_WAIT;
        loop {
            let state = self
                .inspect(&name)
                .await?
                .and_then(|c| c.state)
                .ok_or(RuntimeError::Host(HostIssue::Vanished))?;
            if state.running != Some(true) {
                let logs = self.tail(&name, 10).await.unwrap_or_default().join("\n");
                return Err(RuntimeError::Exited {
                    code: state.exit_code.unwrap_or(-1),
                    output: if logs.is_empty() {
                        state.error.unwrap_or_default()
                    } else {
                        logs
                    },
                });
            }
            if let Some(pid) = state.pid.filter(|p| *p > 0)
                && sshd_answers(pid).await
                && (!host.desktop || vnc_answers(pid).await)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(RuntimeError::SshdSilent(SSHD_WAIT.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn tail(&self, name: &str, n: u32) -> Result<Vec<String>, RuntimeError> {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&n.to_string())
            .build();
        let mut stream = self.docker().await?.logs(name, Some(opts));
        let mut lines = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(out) => lines.extend(out.to_string().lines().map(|l| l.to_string())),
                Err(e) if not_found(&e) => break,
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(lines)
    }
}

/// Whether sshd greets on 127.0.0.1:22 in the namespace of process `pid`.
pub async fn sshd_answers(pid: i64) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], 22).into();
    let Ok(mut s) = netns::connect_tcp(pid, addr, Duration::from_secs(1)).await else {
        return false;
    };
    let mut buf = [0u8; 8];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"SSH-2.0-"
    )
}

/// /dev/shm of a desktop host.
const DESKTOP_SHM_BYTES: i64 = 256 * 1024 * 1024;

/// Whether a VNC server greets on 127.0.0.1:5901 in the namespace of process `pid`.
pub async fn vnc_answers(pid: i64) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], VNC_PORT).into();
    let Ok(mut s) = netns::connect_tcp(pid, addr, Duration::from_secs(1)).await else {
        return false;
    };
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"RFB "
    )
}

/// The id of this install, kept in the data directory.
fn instance_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("instance_id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)?;
    }
    let id = Uuid::now_v7().simple().to_string();
    std::fs::write(&path, &id)?;
    Ok(id)
}

#[async_trait]
impl HostRuntime for DockerRuntime {
    async fn create(&self, host: &HostSpec, progress: &dyn Progress) -> Result<(), RuntimeError> {
        self.create_container(host, progress).await?;
        self.start_and_wait(host, progress).await?;
        self.attach_egress(host, progress).await
    }

    async fn start(&self, host: &HostSpec, progress: &dyn Progress) -> Result<(), RuntimeError> {
        let name = container_name(&host.short_id);
        let shape = self.inspect(&name).await?.map(|c| {
            c.config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(LABEL_SHAPE).cloned())
        });
        match shape {
            Some(Some(shape)) if shape == SHAPE => {
                // Keep the container (an outdated image is shown, and replaced by a rebuild);
                // refresh the files, since keys or the egress may have changed.
                self.prepare_files(host).await?;
            }
            Some(_) => {
                progress
                    .report("the container predates this version's confinement: making it again (the home is kept)")
                    .await;
                self.create_container(host, progress).await?;
            }
            None => {
                progress
                    .report("the container is missing: making it again")
                    .await;
                self.create_container(host, progress).await?;
            }
        }
        self.start_and_wait(host, progress).await?;
        self.attach_egress(host, progress).await
    }

    async fn stop(&self, host: &HostSpec, progress: &dyn Progress) -> Result<(), RuntimeError> {
        let name = container_name(&host.short_id);
        self.engine.detach(host.id).await;
        progress.report("stopping the container").await;
        let opts = StopContainerOptionsBuilder::default().t(10).build();
        match self.docker().await?.stop_container(&name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn rebuild(
        &self,
        host: &HostSpec,
        wipe_home: bool,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        self.engine.detach(host.id).await;
        progress.report("removing the old container").await;
        self.remove_container(&container_name(&host.short_id))
            .await?;
        if wipe_home {
            progress.report("wiping the home volume").await;
            self.remove_volume(host.id).await?;
        }
        self.create_container(host, progress).await?;
        self.start_and_wait(host, progress).await?;
        self.attach_egress(host, progress).await
    }

    async fn delete(&self, host: &HostSpec, progress: &dyn Progress) -> Result<(), RuntimeError> {
        self.engine.detach(host.id).await;
        progress.report("removing the container").await;
        self.remove_container(&container_name(&host.short_id))
            .await?;
        progress.report("removing the home volume").await;
        self.remove_volume(host.id).await?;
        self.files(host).remove().map_err(|e| RuntimeError::Files {
            action: "remove",
            detail: e.to_string(),
        })
    }

    async fn bind_egress(
        &self,
        host: &HostSpec,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError> {
        // Resolver first: it names the new egress's DNS server, reachable only through it.
        progress.report("pointing the resolver at the egress").await;
        self.files(host)
            .write_resolv_conf(&Self::nameserver(host))
            .map_err(|e| RuntimeError::Files {
                action: "write",
                detail: format!("resolv.conf: {e}"),
            })?;
        if self.running_pid(host).await?.is_some() {
            self.attach_egress(host, progress).await
        } else {
            // It attaches when it starts.
            self.engine.detach(host.id).await;
            Ok(())
        }
    }

    async fn observe(&self) -> Result<Vec<Observed>, RuntimeError> {
        let list = self.list_own(None).await?;
        let mut observed = Vec::with_capacity(list.len());
        for c in list {
            let Some(host_id) = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_HOST))
                .and_then(|h| h.parse().ok())
            else {
                continue;
            };
            let running = matches!(
                c.state,
                Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
            );
            let egress_attached = self.engine.session(host_id).await.is_some();
            observed.push(Observed {
                host_id,
                running,
                egress_attached,
            });
        }
        Ok(observed)
    }

    async fn remove_orphan(&self, host_id: Uuid) -> Result<(), RuntimeError> {
        for c in self.list_own(Some(host_id)).await? {
            if let Some(id) = c.id {
                self.remove_container(&id).await?;
            }
        }
        self.remove_volume(host_id).await?;
        HostFiles::new(&self.data_dir, host_id)
            .remove()
            .map_err(|e| RuntimeError::Files {
                action: "remove",
                detail: e.to_string(),
            })
    }

    async fn logs(&self, host: &HostSpec, tail: u32) -> Result<Vec<String>, RuntimeError> {
        let name = container_name(&host.short_id);
        if self.inspect(&name).await?.is_none() {
            return Err(RuntimeError::Host(HostIssue::NoContainer));
        }
        self.tail(&name, tail).await
    }

    async fn status(&self) -> RuntimeStatus {
        let user = image::tag(image::Kind::User);
        let mut s = RuntimeStatus {
            image: Some(user.clone()),
            images: [image::Kind::User, image::Kind::Desktop]
                .into_iter()
                .map(|kind| ImageStatus {
                    kind,
                    tag: image::tag(kind),
                    present: false,
                    size_bytes: None,
                })
                .collect(),
            ..Default::default()
        };
        match self.docker().await {
            Ok(d) => match tokio::time::timeout(Duration::from_secs(3), d.version()).await {
                Ok(Ok(v)) => {
                    s.reachable = true;
                    s.version = v.version;
                    for i in &mut s.images {
                        i.size_bytes = image::size(d, &i.tag).await.ok().flatten();
                        i.present = i.size_bytes.is_some();
                    }
                    s.image_present = s.images.first().is_some_and(|i| i.present);
                }
                Ok(Err(e)) => s.error = Some(classify(e).to_string()),
                Err(_) => s.error = Some("Docker engine did not answer within 3 s".into()),
            },
            Err(e) => s.error = Some(e.to_string()),
        }
        s
    }

    fn image(&self, kind: image::Kind) -> Option<String> {
        Some(image::tag(kind))
    }

    async fn shutdown(&self) {
        self.engine.detach_all().await;
    }

    fn engine(&self) -> Option<Arc<Engine>> {
        Some(self.engine.clone())
    }

    async fn ssh_endpoint(&self, host: &HostSpec) -> Result<SshEndpoint, RuntimeError> {
        let pid = self
            .running_pid(host)
            .await?
            .ok_or(RuntimeError::Host(HostIssue::NotRunning))?;
        let account = host
            .username
            .clone()
            .ok_or(RuntimeError::Host(HostIssue::NoOwner))?;
        let files = self.files(host);
        let (key_path, pub_path) = (files.internal_key(), files.host_key_pub());
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).map_err(|e| RuntimeError::Files {
                action: "read",
                detail: format!("{}: {e}", p.display()),
            })
        };
        let internal_key = PrivateKey::from_openssh(read(key_path)?.as_bytes()).map_err(|e| {
            RuntimeError::Keys {
                which: "internal",
                detail: e.to_string(),
            }
        })?;
        let host_key =
            PublicKey::from_openssh(read(pub_path)?.trim()).map_err(|e| RuntimeError::Keys {
                which: "pinned",
                detail: e.to_string(),
            })?;
        Ok(SshEndpoint {
            netns: NetNs::Pid(pid),
            host_key,
            internal_key,
            account,
        })
    }

    async fn desktop_endpoint(&self, host: &HostSpec) -> Result<DesktopEndpoint, RuntimeError> {
        if !host.desktop {
            return Err(RuntimeError::Unsupported(format!(
                "host {} is not a desktop host",
                host.short_id
            )));
        }
        let pid = self
            .running_pid(host)
            .await?
            .ok_or(RuntimeError::Host(HostIssue::NotRunning))?;
        let path = self.files(host).vnc_password();
        let password = std::fs::read_to_string(&path).map_err(|e| RuntimeError::Files {
            action: "read",
            detail: format!("{}: {e}", path.display()),
        })?;
        Ok(DesktopEndpoint {
            netns: NetNs::Pid(pid),
            password: password.trim().to_string(),
        })
    }

    async fn egress_netns(&self, host: &HostSpec) -> Option<NetNs> {
        self.engine.session(host.id).await?;
        let pid = self.running_pid(host).await.ok()??;
        Some(NetNs::Pid(pid))
    }
}
