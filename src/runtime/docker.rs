//! The Docker engine, through bollard: reachability and version, for health and status.

use std::time::Duration;

use bollard::Docker;

/// A handle on the local Docker engine (the socket named by `DOCKER_HOST`, or the default).
#[derive(Clone)]
pub struct Engine {
    client: Option<Docker>,
}

impl Engine {
    /// Connects lazily: a missing socket is reported by [`Engine::version`], not here.
    pub fn local() -> Self {
        Self {
            client: Docker::connect_with_local_defaults().ok(),
        }
    }

    /// The engine's version, or why it cannot be reached (within 3 seconds).
    pub async fn version(&self) -> Result<String, String> {
        let Some(client) = &self.client else {
            return Err("no Docker socket configured".into());
        };
        let v = tokio::time::timeout(Duration::from_secs(3), client.version())
            .await
            .map_err(|_| "Docker engine did not answer within 3 s".to_string())?
            .map_err(|e| format!("Docker engine unreachable: {e}"))?;
        Ok(v.version.unwrap_or_else(|| "unknown".into()))
    }
}
