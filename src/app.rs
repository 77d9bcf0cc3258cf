//! App: starts the control plane. Opens the store, makes sure the JWT secret and the admin
//! account exist, starts the task worker and housekeeping, and serves the API (and the CLI's
//! control socket) until shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{self, AppState, Shared, layers::RateLimits};
use crate::auth::{Authenticator, password};
use crate::config::ServeSettings;
use crate::events::{self, NewEvent};
use crate::keys::jwt::JwtSecret;
use crate::ops::Core;
use crate::runtime::HostRuntime;
use crate::sshproxy::{self, Proxy as SshProxy};
use crate::store::{self, Store, StoreError, users::UserRow};
use crate::tasks::{self, Queue, Worker};
use crate::users::{Role, UserStatus, generate_password};

/// How often accounts past their expiry are marked expired.
const EXPIRY_SWEEP: Duration = Duration::from_secs(20);
/// How often Docker is brought back in line with the database.
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// Why Sluice could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot use data directory {path} (SLUICE_DATA_DIR): {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data directory {0} (SLUICE_DATA_DIR) is in use by another `sluice serve`; \
         stop it or give this one its own SLUICE_DATA_DIR"
    )]
    DataDirInUse(PathBuf),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("ADMIN_USERNAME `{0}` belongs to a user account, not an administrator")]
    AdminNameTaken(String),
    #[error("cannot hash the admin password: {0}")]
    Hash(String),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    /// Hosts made before uids were per host could not be given one.
    #[error("cannot give hosts their account uids (SLUICE_HOST_UIDS): {0}")]
    AccountUids(String),
    #[error("cannot serve HTTPS (SLUICE_TLS_CERT, SLUICE_TLS_KEY): {0}")]
    Tls(#[from] api::tls::TlsError),
}

/// A started control plane.
pub struct Running {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// Where the SSH proxy listens.
    pub ssh_addr: SocketAddr,
    /// The SSH proxy (its live sessions, for tests and the admin API).
    pub ssh: Arc<SshProxy>,
    /// The generated admin password, when this start created the admin account without one.
    pub generated_admin_password: Option<String>,
    pub store: Store,
    runtime: Arc<dyn HostRuntime>,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    /// The data directory's lock, held while this control plane lives.
    _lock: DataDirLock,
}

impl Running {
    /// Waits until the server stops (after its stop token is cancelled or a fatal error),
    /// then ends the runtime's data planes.
    pub async fn wait(self) {
        let _ = self.server.await;
        self.runtime.shutdown().await;
    }

    /// Stops serving and the background work; the runtime's data planes end too.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.server.await;
        self.runtime.shutdown().await;
    }

    /// A token that stops everything when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Starts Sluice with `runtime` driving hosts, listening on `listener` (or on the configured
/// address when `None`).
pub async fn start(
    settings: &ServeSettings,
    runtime: Arc<dyn HostRuntime>,
    listener: Option<TcpListener>,
) -> Result<Running, StartError> {
    let data_dir =
        &std::path::absolute(&settings.store.data_dir).map_err(|source| StartError::DataDir {
            path: settings.store.data_dir.clone(),
            source,
        })?;
    create_private_dir(data_dir)?;
    let lock = DataDirLock::take(data_dir)?;
    let keys = Arc::new(crate::keys::Keyring::open(data_dir)?);
    let store = Store::connect(&settings.store.effective_database_url(), keys).await?;
    seal_clear_rows(&store).await?;
    let assigned = crate::ops::hosts::assign_account_uids(&store, settings.store.host_uids)
        .await
        .map_err(|e| StartError::AccountUids(e.to_string()))?;
    if assigned > 0 {
        tracing::info!(
            hosts = assigned,
            "hosts made before per-host uids got their own; each home is re-owned at its next start"
        );
    }
    let secret = jwt_secret(settings, data_dir)?;
    let jwt_source = secret.source();
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(api::tls::Tls::load(cert, key)?),
        _ => None,
    };
    let generated_admin_password = ensure_admin(&store, settings).await?;

    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(settings.http_addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: settings.http_addr,
                source,
            })?,
    };
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: settings.http_addr,
        source,
    })?;

    let ssh_bind = SocketAddr::new(settings.ssh.listen_ip, settings.ssh_proxy_port);
    let ssh_listener = TcpListener::bind(ssh_bind)
        .await
        .map_err(|source| StartError::Listen {
            addr: ssh_bind,
            source,
        })?;
    let ssh_addr = ssh_listener
        .local_addr()
        .map_err(|source| StartError::Listen {
            addr: ssh_bind,
            source,
        })?;
    let host_key =
        sshproxy::hostkey::load_or_create(data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.join(sshproxy::hostkey::FILE),
            source,
        })?;

    let stop = CancellationToken::new();
    let queue = Queue::default();
    let worker = Arc::new(Worker::new(store.clone(), runtime.clone(), queue.clone()));
    let requeued = worker.recover().await?;
    if requeued > 0 {
        tracing::warn!(
            count = requeued,
            "tasks interrupted by the last shutdown were queued again"
        );
    }
    tokio::spawn(worker.run(stop.clone()));
    tokio::spawn(tasks::expiry_sweep(
        store.clone(),
        EXPIRY_SWEEP,
        stop.clone(),
    ));
    tokio::spawn(tasks::reconcile::run(
        store.clone(),
        runtime.clone(),
        queue.clone(),
        RECONCILE_EVERY,
        stop.clone(),
    ));

    let attempts = Arc::new(crate::auth::attempts::Attempts::default());
    let ssh = SshProxy::new(
        store.clone(),
        runtime.clone(),
        settings.ssh.clone(),
        host_key,
        settings.public_url.clone(),
        attempts.clone(),
    );
    if settings.ssh.record_sessions {
        let recorder = crate::recordings::Recorder::new(
            data_dir.join("recordings"),
            store.clone(),
            crate::recordings::Policy {
                input: settings.ssh.record_input,
                retention: Duration::from_secs(
                    u64::from(settings.ssh.recording_retention_days) * 86_400,
                ),
                max_bytes: settings.ssh.recording_max_mb.saturating_mul(1024 * 1024),
                disk_budget: settings
                    .ssh
                    .recordings_disk_budget_mb
                    .saturating_mul(1024 * 1024),
            },
        );
        recorder.recover().await;
        recorder.clone().sweep(stop.clone());
        ssh.record_with(recorder);
        tracing::info!(
            input = settings.ssh.record_input,
            "terminal sessions are recorded"
        );
    }
    tokio::spawn(ssh.clone().serve(ssh_listener, stop.clone()));
    tokio::spawn(ssh.clone().revalidate(stop.clone()));

    let auth = Authenticator::new(store.clone(), Arc::new(secret));
    // Browser terminals and desktops end with the viewer's sign-in.
    ssh.check_viewers_with(auth.clone());
    let limits = Arc::new(RateLimits::new(settings.api_rate_limit));
    api::layers::spawn_shrinker(limits.clone());
    let state = AppState(Arc::new(Shared {
        core: Core {
            store: store.clone(),
            queue,
            runtime: runtime.clone(),
            ssh_port: ssh_addr.port(),
            public_host: settings.public_host.clone(),
            public_url: settings.public_url.clone(),
            probe: settings.probe.targets(),
            events: Some(crate::events::live::Hub::start(store.clone(), stop.clone())),
            attempts,
            sessions: Some(ssh.sessions.clone()),
            desktop_tickets: Default::default(),
            recordings_dir: data_dir.join("recordings"),
            host_uids: settings.store.host_uids,
        },
        auth,
        limits,
        ssh: ssh.clone(),
        streams: Arc::new(tokio::sync::Semaphore::new(api::events::MAX_STREAMS)),
        entry: Default::default(),
    }));
    // The CLI's door to what only this process holds (live sessions, running data planes).
    match crate::cli::control::listen(data_dir) {
        Ok(l) => {
            tokio::spawn(crate::cli::control::serve(
                l,
                state.core.clone(),
                crate::cli::control::ServerFacts { jwt: jwt_source },
                stop.clone(),
            ));
        }
        Err(e) => tracing::warn!(
            error = %e,
            dir = %data_dir.display(),
            "no control socket in the data directory: `sluice session` and tests of running \
             hosts' egress from the CLI will not reach this server"
        ),
    }
    if let Some(maddr) = settings.metrics_addr {
        let l = TcpListener::bind(maddr)
            .await
            .map_err(|source| StartError::Listen {
                addr: maddr,
                source,
            })?;
        tracing::info!(addr = %maddr, "metrics listening (no credentials: keep this address private)");
        tokio::spawn(api::server::serve(
            l,
            api::metrics::open_router(state.clone()),
            api::server::ServerLimits {
                max_connections: 64,
                header_timeout: Duration::from_secs(settings.http_header_timeout_secs),
                write_stall: Duration::from_secs(settings.http_write_timeout_secs),
            },
            api::server::Frontend::default(),
            stop.clone(),
        ));
    }
    let app = api::router(state);
    let limits = api::server::ServerLimits {
        max_connections: settings.http_max_connections as usize,
        header_timeout: Duration::from_secs(settings.http_header_timeout_secs),
        write_stall: Duration::from_secs(settings.http_write_timeout_secs),
    };
    if let Some(tls) = &tls {
        tls.clone().watch(stop.clone());
    }
    let https = tls.is_some();
    let frontend = api::server::Frontend {
        tls,
        trusted: api::client::TrustedProxies::new(settings.trusted_proxies.clone()),
    };
    let server = tokio::spawn(api::server::serve(
        listener,
        app,
        limits,
        frontend,
        stop.clone(),
    ));
    tracing::info!(%addr, https, database = ?store.backend(), "Sluice API listening");
    tracing::info!(addr = %ssh_addr, "SSH proxy listening");
    Ok(Running {
        addr,
        ssh_addr,
        ssh,
        generated_admin_password,
        store,
        runtime,
        stop,
        server,
        _lock: lock,
    })
}

/// An exclusive `flock` on `<data dir>/lock`: two control planes on one data directory would
/// fight over the same containers. The kernel drops it when the process ends, however it ends.
struct DataDirLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl DataDirLock {
    fn take(data_dir: &Path) -> Result<Self, StartError> {
        let path = data_dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StartError::DataDir {
                path: path.clone(),
                source,
            })?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                Err(StartError::DataDirInUse(data_dir.to_path_buf()))
            }
            Err((_, errno)) => Err(StartError::DataDir {
                path,
                source: errno.into(),
            }),
        }
    }
}

fn create_private_dir(path: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| StartError::DataDir {
            path: path.to_path_buf(),
            source,
        })
}

/// Where the first start leaves a generated admin password when no terminal shows it.
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// The configured JWT secret, or the one kept in the data directory (created on first use,
/// mode 0600, followed as `sluice keys rotate-jwt` replaces it).
fn jwt_secret(settings: &ServeSettings, data_dir: &Path) -> Result<JwtSecret, StartError> {
    match &settings.admin_jwt_secret {
        Some(s) => Ok(JwtSecret::fixed(s.as_bytes())),
        None => Ok(JwtSecret::in_data_dir(data_dir)?),
    }
}

/// Seals the egress settings an older version stored in clear, and leaves no clear copy in
/// SQLite's write-ahead log.
async fn seal_clear_rows(store: &Store) -> Result<(), StartError> {
    let mut db = store.acquire().await?;
    let n = store::egress::seal_clear_rows(db.conn(), store.keys()).await?;
    drop(db);
    if n > 0 {
        store.checkpoint().await?;
        tracing::info!(rows = n, "egress settings stored in clear are now sealed");
    }
    Ok(())
}

/// Creates the admin account on first start. Returns the password when it was generated.
async fn ensure_admin(
    store: &Store,
    settings: &ServeSettings,
) -> Result<Option<String>, StartError> {
    let mut db = store.acquire().await?;
    let name = &settings.admin_username;
    if let Some(existing) = store::users::get_by_username(db.conn(), name).await? {
        if existing.role != Role::Admin.as_str() {
            return Err(StartError::AdminNameTaken(name.clone()));
        }
        return Ok(None);
    }
    drop(db);
    let (plain, generated) = match &settings.admin_password {
        Some(p) => (p.clone(), false),
        None => (generate_password(), true),
    };
    let hash = password::hash(&plain)
        .await
        .map_err(|e| StartError::Hash(e.to_string()))?;
    let now = crate::clock::now();
    let row = UserRow {
        id: Uuid::now_v7(),
        username: name.clone(),
        role: Role::Admin.as_str().into(),
        password_hash: hash,
        status: UserStatus::Active.as_str().into(),
        expires_at: None,
        token_version: 0,
        created_at: now,
        updated_at: now,
    };
    let mut tx = store.begin().await?;
    store::users::insert(tx.conn(), &row).await?;
    events::record(
        tx.conn(),
        NewEvent::new(events::SYSTEM, "admin.created", "user")
            .target(row.id)
            .user(Some(row.id))
            .details(json!({"username": name, "password_generated": generated})),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(username = %name, "administrator account created");
    Ok(generated.then_some(plain))
}

/// Sets a new password for the administrator `username` (creating nothing), revoking its
/// login tokens. Returns false when there is no such administrator.
pub async fn reset_admin_password(
    store: &Store,
    username: &str,
    new_password: &str,
) -> Result<bool, StartError> {
    let hash = password::hash(new_password)
        .await
        .map_err(|e| StartError::Hash(e.to_string()))?;
    let mut tx = store.begin().await?;
    let Some(user) = store::users::get_by_username(tx.conn(), username).await? else {
        return Ok(false);
    };
    if user.role != Role::Admin.as_str() {
        return Ok(false);
    }
    store::users::set_password(tx.conn(), user.id, &hash, crate::clock::now()).await?;
    events::record(
        tx.conn(),
        NewEvent::new("cli", "admin.password_reset", "user")
            .target(user.id)
            .user(Some(user.id))
            .details(json!({"username": username})),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
