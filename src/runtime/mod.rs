//! Runtime: what makes a host real. The task worker drives hosts through the [`HostRuntime`]
//! trait; the Docker implementation (docker.rs) lives behind it, and the API tests use a
//! recording double.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::egress::EgressSettings;

pub mod docker;
pub mod hostfiles;
pub mod image;
pub mod remap;

/// What the runtime needs to know about a host.
#[derive(Debug, Clone)]
pub struct HostSpec {
    pub id: Uuid,
    pub short_id: String,
    /// The owner's user name, which is the Linux account inside the container.
    pub username: Option<String>,
    pub memory_mb: i64,
    pub cpus: f64,
    pub pids_limit: i64,
    /// The owner's SSH public keys, for the host's authorized_keys.
    pub owner_keys: Vec<String>,
    /// The egress the host is bound to, if any.
    pub egress: Option<EgressSpec>,
    /// Whether the host runs the desktop image (a desktop in the browser besides SSH).
    pub desktop: bool,
    /// The uid (and gid) of the owner's account in the container, unique on the machine.
    pub account_uid: Option<u32>,
}

/// The owner's Linux account inside a host's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
}

impl HostSpec {
    /// The account the container runs for its owner: the owner's user name and the host's uid.
    pub fn account(&self) -> Result<Account, RuntimeError> {
        let name = self
            .username
            .clone()
            .ok_or(RuntimeError::Host(HostIssue::NoOwner))?;
        let uid = self
            .account_uid
            .ok_or(RuntimeError::Host(HostIssue::NoAccountUid))?;
        Ok(Account { name, uid })
    }
}

#[derive(Debug, Clone)]
pub struct EgressSpec {
    pub id: Uuid,
    pub ip_address: String,
    pub settings: EgressSettings,
}

/// A runtime failure. Transient ones (the engine busy or briefly unreachable) are retried
/// with backoff; the others fail the task at once. Display is the full detail, for the log;
/// [`RuntimeError::summary`] is what callers and users see.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("Docker engine busy: {0}")]
    EngineBusy(String),
    #[error("Docker engine unreachable: {0}")]
    EngineUnreachable(String),
    /// The engine refused the request (its message).
    #[error("Docker refused: {0}")]
    Refused(String),
    #[error("Docker error: {0}")]
    Engine(String),
    #[error("the managed image could not be built: {0}")]
    Image(String),
    /// Sluice's own files for the host (`action`: read, write, remove).
    #[error("cannot {action} the host's files: {detail}")]
    Files {
        action: &'static str,
        detail: String,
    },
    /// The host's internal or pinned key (`which`).
    #[error("the host's {which} key is unreadable: {detail}")]
    Keys { which: &'static str, detail: String },
    #[error("egress attach failed: {0}")]
    Egress(String),
    #[error("the container exited (code {code}): {output}")]
    Exited { code: i64, output: String },
    #[error("sshd did not answer within {0} s")]
    SshdSilent(u64),
    #[error("{0}")]
    Host(HostIssue),
    /// Something this runtime does not do.
    #[error("{0}")]
    Unsupported(String),
    /// A failure told in a sentence of its own (runtimes other than Docker, test doubles).
    #[error("{0}")]
    Other(String),
}

/// Why a host is not in the shape an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostIssue {
    #[error("the host has no owner")]
    NoOwner,
    #[error("the host has no container")]
    NoContainer,
    #[error("the container is not running")]
    NotRunning,
    #[error("the container vanished while starting")]
    Vanished,
    #[error("the host has no account uid yet (Sluice gives one at its start)")]
    NoAccountUid,
}

impl RuntimeError {
    /// A permanent failure told in a sentence.
    pub fn permanent(message: impl Into<String>) -> Self {
        RuntimeError::Other(message.into())
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RuntimeError::EngineBusy(_) | RuntimeError::EngineUnreachable(_)
        )
    }

    /// A short reason for API callers and users: never Docker's own message, a server path
    /// or an OS error (the full message goes to the log). Known refusals are told in
    /// Sluice's words; Sluice's own sentences pass when they carry nothing internal.
    pub fn summary(&self) -> String {
        let clean = |s: &str| s.len() <= 160 && !s.contains('/') && !s.contains("os error");
        match self {
            RuntimeError::EngineBusy(_) => "the container engine is busy".into(),
            RuntimeError::EngineUnreachable(_) => "the container engine is unreachable".into(),
            RuntimeError::Refused(docker) => {
                let d = docker.to_ascii_lowercase();
                if d.contains("cpu") {
                    "the container engine refused: the host asks for more CPUs than this machine has"
                } else if d.contains("memory") {
                    "the container engine refused the host's memory limit"
                } else if d.contains("mount") {
                    "the container engine could not mount the host's files"
                } else if d.contains("no such image") || d.contains("not found") {
                    "the managed image is missing: run `sluice image build`"
                } else {
                    "the container engine refused the operation"
                }
                .into()
            }
            RuntimeError::Engine(_) => "the container engine failed".into(),
            RuntimeError::Image(_) => {
                "the managed image could not be built (details in the Sluice log)".into()
            }
            RuntimeError::Files { action, .. } => {
                format!("Sluice could not {action} the host's files")
            }
            RuntimeError::Keys { .. } => "the host's keys are unreadable".into(),
            RuntimeError::Egress(why) if clean(why) => {
                format!("the egress could not be attached: {why}")
            }
            RuntimeError::Egress(_) => "the egress could not be attached".into(),
            RuntimeError::Exited { .. } => "the container exited while starting".into(),
            RuntimeError::SshdSilent(_) | RuntimeError::Host(_) => self.to_string(),
            RuntimeError::Unsupported(m) | RuntimeError::Other(m) if clean(m) => m.clone(),
            RuntimeError::Unsupported(_) | RuntimeError::Other(_) => {
                "the operation failed (details in the Sluice log)".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{HostIssue, RuntimeError};

    #[test]
    fn summaries_carry_no_docker_message_or_path() {
        let e = RuntimeError::Refused(
            "invalid mount config for type \"bind\": invalid mount path: './data/hosts/x/etc'"
                .into(),
        );
        assert_eq!(
            e.summary(),
            "the container engine could not mount the host's files"
        );
        let e = RuntimeError::Refused(
            "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available".into(),
        );
        assert!(e.summary().contains("CPUs"), "{}", e.summary());
        assert!(!e.summary().contains("0.01"), "{}", e.summary());
        let e = RuntimeError::Egress(
            "the proxy egress cannot be used: unknown shadowsocks method rc4-md5".into(),
        );
        assert!(
            e.summary().ends_with("unknown shadowsocks method rc4-md5"),
            "{}",
            e.summary()
        );
        let e = RuntimeError::Files {
            action: "write",
            detail: "/var/lib/sluice: EACCES".into(),
        };
        assert!(!e.summary().contains('/'), "{}", e.summary());
        assert!(
            e.to_string().contains("/var/lib/sluice"),
            "the log keeps the detail"
        );
        assert_eq!(
            RuntimeError::Host(HostIssue::NoOwner).summary(),
            "the host has no owner"
        );
        let e = RuntimeError::permanent("something at /srv/x");
        assert!(!e.summary().contains("/srv"), "{}", e.summary());
        let e = RuntimeError::Exited {
            code: 1,
            output: "sshd: /etc/sluice/account: no such file".into(),
        };
        assert_eq!(e.summary(), "the container exited while starting");
    }

    #[test]
    fn only_an_engine_busy_or_unreachable_is_retried() {
        assert!(RuntimeError::EngineBusy("x".into()).is_transient());
        assert!(RuntimeError::EngineUnreachable("x".into()).is_transient());
        assert!(!RuntimeError::Refused("x".into()).is_transient());
        assert!(!RuntimeError::Host(HostIssue::NotRunning).is_transient());
    }
}

/// Where a running task reports how far it got.
#[async_trait]
pub trait Progress: Send + Sync {
    async fn report(&self, message: &str);
}

/// The operations a host goes through. Each must be idempotent: a task re-run after a crash
/// calls it again.
#[async_trait]
pub trait HostRuntime: Send + Sync + 'static {
    /// Creates and starts the host's container.
    async fn create(&self, host: &HostSpec, progress: &dyn Progress) -> Result<(), RuntimeError>;
    async fn start(&self, host: &HostSpec, progress: &dyn Progress) -> Result<(), RuntimeError>;
    async fn stop(&self, host: &HostSpec, progress: &dyn Progress) -> Result<(), RuntimeError>;
    /// Replaces the container; the home volume survives unless `wipe_home`.
    async fn rebuild(
        &self,
        host: &HostSpec,
        wipe_home: bool,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError>;
    /// Removes the container, its volume and the runtime's files for the host.
    async fn delete(&self, host: &HostSpec, progress: &dyn Progress) -> Result<(), RuntimeError>;
    /// Points a running host at its current egress (or none).
    async fn bind_egress(
        &self,
        host: &HostSpec,
        progress: &dyn Progress,
    ) -> Result<(), RuntimeError>;

    /// The hosts this Sluice has containers for, and whether each runs.
    async fn observe(&self) -> Result<Vec<Observed>, RuntimeError> {
        Ok(vec![])
    }

    /// Removes a container (and its volume) whose host no longer exists.
    async fn remove_orphan(&self, _host_id: Uuid) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// The last `tail` lines of a host's container output.
    async fn logs(&self, _host: &HostSpec, _tail: u32) -> Result<Vec<String>, RuntimeError> {
        Err(RuntimeError::Unsupported(
            "this runtime keeps no logs".into(),
        ))
    }

    /// The engine and image, for the status page.
    async fn status(&self) -> RuntimeStatus {
        RuntimeStatus::default()
    }

    /// The image new containers of `kind` are made from, if this runtime uses images.
    fn image(&self, _kind: image::Kind) -> Option<String> {
        None
    }

    /// Called when Sluice stops: data planes end with the process (hosts fail closed).
    async fn shutdown(&self) {}

    /// The egress engine, when this runtime has a data plane.
    fn engine(&self) -> Option<Arc<crate::egress::engine::Engine>> {
        None
    }

    /// Where the SSH proxy reaches a running host's sshd.
    async fn ssh_endpoint(&self, host: &HostSpec) -> Result<SshEndpoint, RuntimeError> {
        Err(RuntimeError::Unsupported(format!(
            "host {} has no SSH server in this runtime",
            host.short_id
        )))
    }

    /// Where Sluice reaches a running desktop host's VNC server.
    async fn desktop_endpoint(&self, host: &HostSpec) -> Result<DesktopEndpoint, RuntimeError> {
        Err(RuntimeError::Unsupported(format!(
            "host {} has no desktop in this runtime",
            host.short_id
        )))
    }

    /// The network namespace of a running host whose egress is attached: where its traffic
    /// takes its real path.
    async fn egress_netns(&self, _host: &HostSpec) -> Option<crate::netns::NetNs> {
        None
    }
}

/// Where and how the SSH proxy logs in to a running host's sshd.
#[derive(Clone)]
pub struct SshEndpoint {
    /// The container's network namespace; sshd listens on 127.0.0.1:22 inside it.
    pub netns: crate::netns::NetNs,
    /// The host key the container's sshd must present.
    pub host_key: russh::keys::ssh_key::PublicKey,
    /// The host's internal key, which the container's authorized_keys accepts.
    pub internal_key: russh::keys::ssh_key::PrivateKey,
    /// The owner's account inside the container.
    pub account: String,
}

impl std::fmt::Debug for SshEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshEndpoint")
            .field("netns", &self.netns)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// Where and how Sluice reaches a desktop host's VNC server.
#[derive(Clone)]
pub struct DesktopEndpoint {
    /// The container's network namespace; the VNC server listens on 127.0.0.1:5901 in it.
    pub netns: crate::netns::NetNs,
    /// The VNC server's password (VNC authentication); it never leaves Sluice.
    pub password: String,
}

impl std::fmt::Debug for DesktopEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesktopEndpoint")
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

/// The port the desktop's VNC server listens on, on 127.0.0.1 inside the container.
pub const VNC_PORT: u16 = 5901;

/// A container the runtime found.
#[derive(Debug, Clone)]
pub struct Observed {
    pub host_id: Uuid,
    pub running: bool,
    /// Whether the host's egress data plane is up in this process.
    pub egress_attached: bool,
}

/// The runtime's view of its engine and image.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct RuntimeStatus {
    /// Whether the container engine answers.
    pub reachable: bool,
    /// The engine's version, when it answers.
    pub version: Option<String>,
    /// Why the engine cannot be used, when it cannot.
    pub error: Option<String>,
    /// The image new hosts are built from.
    pub image: Option<String>,
    /// Whether that image is present in the engine.
    pub image_present: bool,
    /// Every managed image: the user image and the desktop image, with their sizes.
    pub images: Vec<ImageStatus>,
}

/// A managed image in the engine.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ImageStatus {
    pub kind: image::Kind,
    pub tag: String,
    /// Whether the engine has it (the desktop image is built on first use).
    pub present: bool,
    /// Its size in bytes, when present.
    pub size_bytes: Option<i64>,
}
