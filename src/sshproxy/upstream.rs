//! The upstream side: the proxy's SSH client connection to a host's sshd. The TCP socket is
//! opened from inside the container's network namespace to 127.0.0.1:22 (no published port,
//! no bridge), the container's pinned host key is checked, and the proxy logs in with the
//! host's internal key as the owner's account. One upstream per client connection, made on
//! the first channel or forwarding request, whichever kind comes first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use russh::Channel;
use russh::client::{self, ChannelOpenHandle, Msg, Session};
use russh::keys::PrivateKeyWithHashAlg;
use russh::keys::PublicKeyOrCertificate;
use russh::keys::ssh_key::PublicKey;
use tokio::sync::OnceCell;

use super::channels::{agent, forwarded_tcpip};
use super::limits::ChannelBudget;
use super::registry::Meter;
use crate::runtime::SshEndpoint;

/// How long opening and logging in to a host's sshd may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel's bridge, as `open_channel` runs it.
pub type BoxedBridge = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A logged-in connection to the host's sshd.
pub struct Connected {
    pub handle: client::Handle<UpHandler>,
}

/// The upstream of one client connection, made on first use.
pub struct Upstream {
    endpoint: SshEndpoint,
    short_id: String,
    /// The SSH client's side, for channels the host opens towards it (none for a browser
    /// terminal, which takes no forwards and no agent).
    client: Option<russh::server::Handle>,
    pub meter: Arc<Meter>,
    pub agent_allowed: Arc<AtomicBool>,
    pub forwards: Arc<forwarded_tcpip::Requested>,
    cell: OnceCell<Arc<Connected>>,
    /// Cancelled when the client connection ends: every bridge of it stops then, even one
    /// waiting for window space a vanished client will never give.
    pub ended: tokio_util::sync::CancellationToken,
    /// Where and as whom its terminal channels are recorded, when the install records.
    pub recording:
        std::sync::OnceLock<(Arc<crate::recordings::Recorder>, crate::recordings::Subject)>,
    /// Channels this connection may still open, either way (limits.rs).
    pub budget: ChannelBudget,
}

impl Upstream {
    pub fn new(
        endpoint: SshEndpoint,
        short_id: String,
        client: Option<russh::server::Handle>,
        meter: Arc<Meter>,
        budget: ChannelBudget,
    ) -> Self {
        Self {
            budget,
            endpoint,
            short_id,
            client,
            meter,
            agent_allowed: Arc::new(AtomicBool::new(false)),
            forwards: Arc::default(),
            cell: OnceCell::new(),
            ended: tokio_util::sync::CancellationToken::new(),
            recording: std::sync::OnceLock::new(),
        }
    }

    /// The handle towards the client, for channels the host opens.
    pub fn client_handle(&self) -> Option<russh::server::Handle> {
        self.client.clone()
    }

    /// The connection, made now if this is the first use. The error's text is the sentence
    /// for the client.
    pub async fn get(&self) -> Result<Arc<Connected>, UpstreamError> {
        self.cell
            .get_or_try_init(|| async {
                tokio::time::timeout(CONNECT_TIMEOUT, self.connect_with_retries())
                    .await
                    .unwrap_or_else(|_| {
                        tracing::warn!(host = %self.short_id, "the host's sshd did not answer in time");
                        Err(UpstreamError::Timeout(self.short_id.clone()))
                    })
                    .map(Arc::new)
            })
            .await
            .cloned()
    }

    /// The connection, if one was made.
    pub fn connected(&self) -> Option<Arc<Connected>> {
        self.cell.get().cloned()
    }

    /// Connects, trying again briefly when sshd drops the connection before the login (it
    /// sheds load that way when many connections arrive at once).
    async fn connect_with_retries(&self) -> Result<Connected, UpstreamError> {
        let mut wait = Duration::from_millis(100);
        for _ in 0..4 {
            match self.connect().await {
                Err(Failure::Dropped(_)) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => return other.map_err(|f| f.into_message(&self.short_id)),
            }
        }
        self.connect()
            .await
            .map_err(|f| f.into_message(&self.short_id))
    }

    async fn connect(&self) -> Result<Connected, Failure> {
        let short = &self.short_id;
        let addr: SocketAddr = ([127, 0, 0, 1], 22).into();
        let tcp = self
            .endpoint
            .netns
            .connect_tcp(addr, Duration::from_secs(5))
            .await
            .map_err(|e| {
                Failure::Final(format!("cannot reach the SSH server of host {short}: {e}"))
            })?;
        let _ = tcp.set_nodelay(true);
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            nodelay: true,
            window_size: crate::sshproxy::channels::WINDOW,
            maximum_packet_size: crate::sshproxy::channels::MAX_PACKET,
            channel_buffer_size: crate::sshproxy::channels::BUFFERED_MESSAGES,
            preferred: upstream_algorithms(),
            ..Default::default()
        });
        let handler = UpHandler {
            ended: self.ended.clone(),
            pinned: self.endpoint.host_key.clone(),
            client: self.client.clone(),
            meter: self.meter.clone(),
            agent_allowed: self.agent_allowed.clone(),
            forwards: self.forwards.clone(),
            budget: self.budget.clone(),
        };
        let mut handle =
            client::connect_stream(config, tcp, handler)
                .await
                .map_err(|e| match e {
                    russh::Error::Disconnect | russh::Error::IO(_) => {
                        Failure::Dropped(format!("SSH with host {short} failed: {e}"))
                    }
                    e => Failure::Final(format!("SSH with host {short} failed: {e}")),
                })?;
        let key = PrivateKeyWithHashAlg::new(Arc::new(self.endpoint.internal_key.clone()), None);
        let auth = handle
            .authenticate_publickey(self.endpoint.account.clone(), key)
            .await
            .map_err(|e| Failure::Dropped(format!("login to host {short} failed: {e}")))?;
        if !auth.success() {
            return Err(Failure::Final(format!(
                "host {short} refused the proxy's login"
            )));
        }
        Ok(Connected { handle })
    }

    /// Runs a channel's bridge (opened by the client) if the budget has room for one more
    /// channel, holding its place until it ends; otherwise refuses the channel saying why.
    pub async fn open_channel(
        &self,
        reply: russh::server::ChannelOpenHandle,
        bridge: impl FnOnce(russh::server::ChannelOpenHandle) -> BoxedBridge + Send + 'static,
    ) {
        match self.budget.take() {
            Ok(slot) => self.spawn_bridge(async move {
                let _slot = slot;
                bridge(reply).await
            }),
            Err(reason) => {
                reply
                    .reject(russh::ChannelOpenFailure::Other { code: 4, reason })
                    .await
            }
        }
    }

    /// Runs a bridge of this connection until it finishes or the connection ends.
    pub fn spawn_bridge(&self, bridge: impl std::future::Future<Output = ()> + Send + 'static) {
        let ended = self.ended.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = bridge => {}
                _ = ended.cancelled() => {}
            }
        });
    }

    /// Ends the upstream connection, if one was made, and every bridge.
    pub async fn close(&self) {
        self.ended.cancel();
        if let Some(c) = self.cell.get() {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                c.handle
                    .disconnect(russh::Disconnect::ByApplication, "", "en"),
            )
            .await;
        }
    }
}

/// Why the SSH proxy could not reach a host's sshd, told to the client in these words (the
/// detail, socket and SSH errors, goes to the log only).
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("host {0} did not answer in time")]
    Timeout(String),
    #[error("host {0} cannot be reached now: try again, or ask your administrator")]
    Unreachable(String),
}

/// Why connecting failed: dropped early (worth another try) or for good.
enum Failure {
    Dropped(String),
    Final(String),
}

impl Failure {
    /// The client's error; the detail is logged here.
    fn into_message(self, short: &str) -> UpstreamError {
        let (Failure::Dropped(detail) | Failure::Final(detail)) = self;
        tracing::warn!(host = short, %detail, "cannot reach the host's sshd");
        UpstreamError::Unreachable(short.to_string())
    }
}

/// Callbacks of the upstream connection.
pub struct UpHandler {
    ended: tokio_util::sync::CancellationToken,
    pinned: PublicKey,
    client: Option<russh::server::Handle>,
    meter: Arc<Meter>,
    agent_allowed: Arc<AtomicBool>,
    forwards: Arc<forwarded_tcpip::Requested>,
    budget: ChannelBudget,
}

/// Refuses a channel the budget has no room for, telling the other side why.
async fn refuse_for_budget(reply: ChannelOpenHandle, reason: String) {
    reply
        .reject(russh::ChannelOpenFailure::Other {
            code: 4, // SSH_OPEN_RESOURCE_SHORTAGE
            reason,
        })
        .await;
}

impl client::Handler for UpHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.key_data() == self.pinned.key_data()
            }
            PublicKeyOrCertificate::Certificate(_) => false,
        })
    }

    // Channels the host opens towards the client go through a spawned task: this loop must
    // never wait on the client's.
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(client) = self
            .client
            .clone()
            .filter(|_| self.forwards.contains(connected_address, connected_port))
        else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let slot = match self.budget.take() {
            Ok(slot) => slot,
            Err(reason) => {
                refuse_for_budget(reply, reason).await;
                return Ok(());
            }
        };
        let ended = self.ended.clone();
        let bridge = forwarded_tcpip::open(
            client,
            channel,
            reply,
            (connected_address.to_string(), connected_port),
            (originator_address.to_string(), originator_port),
            self.meter.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! { _ = bridge => {}, _ = ended.cancelled() => {} }
        });
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(client) = self
            .client
            .clone()
            .filter(|_| self.agent_allowed.load(Ordering::SeqCst))
        else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let slot = match self.budget.take() {
            Ok(slot) => slot,
            Err(reason) => {
                refuse_for_budget(reply, reason).await;
                return Ok(());
            }
        };
        let ended = self.ended.clone();
        let bridge = agent::open(client, channel, reply, self.meter.clone());
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! { _ = bridge => {}, _ = ended.cancelled() => {} }
        });
        Ok(())
    }

    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        _reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(()) // dropping the reply refuses the channel
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        _reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        _reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// What the hop to the container's sshd negotiates: AES-GCM first, which the CPU does in
/// hardware (russh's default puts ChaCha20-Poly1305 first, several times the cost per byte on
/// both ends of a hop that carries every byte the user moves).
fn upstream_algorithms() -> russh::Preferred {
    use russh::cipher;
    const CIPHERS: &[cipher::Name] = &[
        cipher::AES_128_GCM,
        cipher::AES_256_GCM,
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_CTR,
        cipher::AES_128_CTR,
    ];
    russh::Preferred {
        cipher: std::borrow::Cow::Borrowed(CIPHERS),
        ..russh::Preferred::DEFAULT
    }
}
