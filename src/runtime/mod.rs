//! Runtime: what makes a host real. The task worker drives hosts through the [`HostRuntime`]
//! trait; the Docker implementation lives behind it, and tests use a recording double.

use async_trait::async_trait;
use uuid::Uuid;

use crate::egress::EgressSettings;

pub mod docker;

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
    /// The egress the host is bound to, if any.
    pub egress: Option<EgressSpec>,
}

#[derive(Debug, Clone)]
pub struct EgressSpec {
    pub id: Uuid,
    pub ip_address: String,
    pub settings: EgressSettings,
}

/// A runtime failure. Transient ones (the engine was briefly unreachable, say) are retried
/// with backoff; the others fail the task at once.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    pub message: String,
    pub transient: bool,
}

impl RuntimeError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
        }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
        }
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
}

/// The runtime of a build without container support: every operation fails with a clear
/// reason, so hosts end in `error` rather than pretending to run.
pub struct Unavailable {
    pub reason: String,
}

#[async_trait]
impl HostRuntime for Unavailable {
    async fn create(&self, _: &HostSpec, _: &dyn Progress) -> Result<(), RuntimeError> {
        Err(RuntimeError::permanent(&self.reason))
    }
    async fn start(&self, _: &HostSpec, _: &dyn Progress) -> Result<(), RuntimeError> {
        Err(RuntimeError::permanent(&self.reason))
    }
    async fn stop(&self, _: &HostSpec, _: &dyn Progress) -> Result<(), RuntimeError> {
        Err(RuntimeError::permanent(&self.reason))
    }
    async fn rebuild(&self, _: &HostSpec, _: bool, _: &dyn Progress) -> Result<(), RuntimeError> {
        Err(RuntimeError::permanent(&self.reason))
    }
    async fn delete(&self, _: &HostSpec, _: &dyn Progress) -> Result<(), RuntimeError> {
        // Nothing was ever created, so there is nothing to remove.
        Ok(())
    }
    async fn bind_egress(&self, _: &HostSpec, _: &dyn Progress) -> Result<(), RuntimeError> {
        Err(RuntimeError::permanent(&self.reason))
    }
}
