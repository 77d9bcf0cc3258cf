//! The client side: one [`ClientConn`] per TCP connection to :2222. It checks logins (with
//! the source's lockout), tells a user with the right credentials why they cannot go in
//! (then disconnects), registers the live session, and hands each channel to its module in
//! `channels/`. It never waits on the upstream from a channel-open callback (those spawn),
//! so neither side's session loop can block the other.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use russh::keys::ssh_key::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Pty};
use serde_json::json;

use super::Proxy;
use super::channels::{direct_tcpip, session};
use super::login::{self, Check, Credential, Entrant, Refusal};
use super::registry::{Meter, Registered, SessionInfo};
use super::upstream::Upstream;
use crate::auth::attempts::{Attempt, Target};
use crate::events::{self, NewEvent};

/// One client connection.
pub struct ClientConn {
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    meter: Arc<Meter>,
    /// Who logged in, once someone did.
    entrant: Option<Entrant>,
    /// The SSH user name of the last login attempt.
    login: String,
    /// What to tell a client whose credentials were right but who cannot go in.
    refusal: Option<String>,
    registered: Option<Registered>,
    /// The upstream, set once the login succeeded (shared with the connection task, which
    /// closes it at the end).
    pub upstream: Arc<OnceLock<Arc<Upstream>>>,
    /// The session, once registered (the connection task records its end).
    pub session: Arc<OnceLock<SessionInfo>>,
    /// Public keys offered and refused on this connection.
    refused_offers: u32,
    /// The key a key login used.
    login_key: Option<PublicKey>,
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        if self.refused_offers > 0
            && self.entrant.is_none()
            && let Ok(a) = self
                .proxy
                .attempts
                .begin(Some(self.peer.ip()), Self::target(&self.login))
        {
            a.failed();
        }
    }
}

impl ClientConn {
    pub fn new(proxy: Arc<Proxy>, peer: SocketAddr, meter: Arc<Meter>) -> Self {
        Self {
            proxy,
            peer,
            meter,
            entrant: None,
            login: String::new(),
            refusal: None,
            registered: None,
            upstream: Arc::new(OnceLock::new()),
            session: Arc::new(OnceLock::new()),
            refused_offers: 0,
            login_key: None,
        }
    }

    fn locked(&self) -> bool {
        self.proxy.attempts.source_locked(self.peer.ip()).is_some()
    }

    /// What a login name tries: a host by short id, or an account by user name.
    fn target(login: &str) -> Target {
        if crate::hosts::is_short_id(login) {
            Target::host(login)
        } else {
            Target::account(login)
        }
    }

    async fn event(
        &self,
        action: &'static str,
        login: &str,
        entrant: Option<&Entrant>,
        details: serde_json::Value,
    ) {
        let mut e = NewEvent::new(format!("ssh:{login}"), action, "host")
            .source(Some(self.peer.ip().to_string()))
            .details(details);
        if let Some(en) = entrant {
            e = e.target(en.host.id).host(en.host.id).user(Some(en.user.id));
        }
        events::record_alone(&self.proxy.store, e).await;
    }

    /// Turns a credential check into the answer russh gives the client, settling the
    /// attempt (a password's; key logins take none, their offers are counted instead).
    async fn decide(
        &mut self,
        login: &str,
        check: Check,
        method: &'static str,
        attempt: Option<Attempt<'_>>,
    ) -> Auth {
        self.login = login.to_string();
        if !matches!(check, Check::Denied)
            && let Some(a) = attempt
        {
            a.succeeded();
            return self.accept(check);
        }
        match check {
            Check::Denied => {
                let locked_for = match attempt {
                    Some(a) => a.failed(),
                    None => self
                        .proxy
                        .attempts
                        .begin(Some(self.peer.ip()), Self::target(login))
                        .ok()
                        .and_then(|a| a.failed()),
                };
                self.event(
                    "ssh.login_failed",
                    login,
                    None,
                    json!({"login": login, "method": method, "locked_out": locked_for.is_some()}),
                )
                .await;
                if locked_for.is_some() {
                    tracing::warn!(source = %self.peer.ip(), "too many failed SSH logins: source locked out");
                }
                login_outcome("refused");
                Auth::reject()
            }
            other => self.accept(other),
        }
    }

    /// A right credential: accepted, with the reason to refuse it afterwards if there is one.
    fn accept(&mut self, check: Check) -> Auth {
        match check {
            Check::Denied => Auth::reject(),
            Check::Ambiguous { username, hosts } => {
                self.refusal = Some(format!(
                    "account {username} has {} hosts: log in with a host's short id as the user name ({})",
                    hosts.len(),
                    hosts.join(", ")
                ));
                login_outcome("turned_away");
                Auth::Accept
            }
            Check::Verified(entrant) => {
                let now = crate::clock::now();
                if let Some(r) = entrant.refusal(now) {
                    let hint = (r == Refusal::HostStopped)
                        .then(|| self.proxy.entry_command(&entrant.host.short_id))
                        .flatten();
                    self.refusal = Some(entrant.explain(&r, hint.as_deref()));
                }
                login_outcome(if self.refusal.is_some() {
                    "turned_away"
                } else {
                    "entered"
                });
                self.entrant = Some(*entrant);
                Auth::Accept
            }
        }
    }
}

impl russh::server::Handler for ClientConn {
    type Error = russh::Error;

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        Ok(self.proxy.attempts.source_locked(self.peer.ip()).map(|d| {
            format!(
                "Too many failed logins from {}: refused for another {} s.\r\n",
                self.peer.ip(),
                d.as_secs() + 1
            )
        }))
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        // The failure slot is taken before the password is checked.
        let proxy = self.proxy.clone();
        let Ok(attempt) = proxy
            .attempts
            .begin(Some(self.peer.ip()), Self::target(user))
        else {
            return Ok(Auth::reject());
        };
        let check = login::check(
            &self.proxy.store,
            &self.proxy.credentials,
            user,
            Credential::Password(password),
        )
        .await;
        let check = match check {
            Ok(c) => c,
            Err(e) => {
                // Not a verdict on the password (busy, database): the slot goes back.
                tracing::warn!(error = %e, "SSH password check failed");
                attempt.succeeded();
                return Ok(Auth::reject());
            }
        };
        Ok(self.decide(user, check, "password", Some(attempt)).await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.locked() {
            return Ok(Auth::reject());
        }
        if !login::offers_owner_key(
            &self.proxy.store,
            &self.proxy.credentials,
            user,
            offer.public_key,
        )
        .await
        {
            // Counted: a connection that ends unauthenticated after refused offers costs its
            // source one failure (see Drop), so keys cannot be enumerated without limit.
            self.refused_offers += 1;
            self.login = user.to_string();
            return Ok(Auth::reject());
        }
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.locked() {
            return Ok(Auth::reject());
        }
        let public: PublicKey = key.public_key.clone();
        self.login_key = Some(public.clone());
        let check = login::check(
            &self.proxy.store,
            &self.proxy.credentials,
            user,
            Credential::PublicKey(&public),
        )
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "SSH login check failed");
            Check::Denied
        });
        Ok(self.decide(user, check, "publickey", None).await)
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let login = self.login.clone();
        if self.refusal.is_none()
            && let Some(entrant) = &self.entrant
        {
            let spec = crate::tasks::host_spec(&self.proxy.store, entrant.host.id).await;
            match spec {
                Ok(Some(spec)) => match self.proxy.runtime.ssh_endpoint(&spec).await {
                    Ok(endpoint) => {
                        let up = Upstream::new(
                            endpoint,
                            entrant.host.short_id.clone(),
                            Some(session.handle()),
                            self.meter.clone(),
                            self.proxy.channel_budget(entrant.user.id),
                        );
                        let _ = self.upstream.set(Arc::new(up));
                    }
                    Err(e) => {
                        tracing::warn!(host = %entrant.host.short_id, error = %e, "no SSH endpoint for the host");
                        self.refusal = Some(format!(
                            "host {} cannot be reached now: ask your administrator",
                            entrant.host.short_id
                        ))
                    }
                },
                Ok(None) => self.refusal = Some("the host no longer exists".into()),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the host");
                    self.refusal = Some("Sluice cannot read the host now; try again".into());
                }
            }
        }
        if let Some(message) = self.refusal.clone() {
            let entrant = self.entrant.clone();
            self.event(
                "ssh.login_refused",
                &login,
                entrant.as_ref(),
                json!({"reason": message}),
            )
            .await;
            session.disconnect(russh::Disconnect::ByApplication, &message, "en")?;
            return Ok(());
        }
        let Some(entrant) = self.entrant.clone() else {
            return Ok(());
        };
        self.meter.authenticated();
        let info = SessionInfo {
            id: uuid::Uuid::now_v7(),
            username: entrant.user.username.clone(),
            user_id: entrant.user.id,
            host_id: entrant.host.id,
            short_id: entrant.host.short_id.clone(),
            method: entrant.method.as_str().into(),
            source: self.peer.to_string(),
            since: crate::clock::now(),
            bytes_in: 0,
            bytes_out: 0,
        };
        let session_id = info.id;
        let proof = match (&self.login_key, entrant.method) {
            (Some(key), login::Method::PublicKey) => login::Proof::Key(key.key_data().clone()),
            _ => login::Proof::HostPassword {
                hash: entrant.host.ssh_password_hash.clone(),
            },
        };
        let max = self.proxy.settings.max_sessions_per_account as usize;
        let registered =
            match self
                .proxy
                .sessions
                .register_within(info.clone(), self.meter.clone(), proof, max)
            {
                Ok(r) => r,
                Err(message) => {
                    self.event(
                        "ssh.login_refused",
                        &login,
                        Some(&entrant),
                        json!({"reason": message}),
                    )
                    .await;
                    session.disconnect(russh::Disconnect::ByApplication, &message, "en")?;
                    return Ok(());
                }
            };
        self.registered = Some(registered);
        if let (Some(recorder), Some(up)) = (self.proxy.recorder(), self.upstream.get()) {
            let _ = up.recording.set((
                recorder.clone(),
                crate::recordings::Subject {
                    session_id,
                    host_id: info.host_id,
                    short_id: info.short_id.clone(),
                    username: info.username.clone(),
                    kind: "ssh",
                },
            ));
        }
        let _ = self.session.set(info);
        self.event(
            "ssh.login_succeeded",
            &login,
            Some(&entrant),
            json!({"short_id": entrant.host.short_id, "method": entrant.method.as_str(), "session_id": session_id}),
        )
        .await;
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(up) = self.upstream.get() {
            let (bridge_up, agent) = (up.clone(), self.proxy.settings.agent_forwarding);
            up.open_channel(reply, move |reply| {
                Box::pin(session::open(bridge_up, channel, reply, agent))
            })
            .await;
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(up) = self.upstream.get() {
            let bridge_up = up.clone();
            let target = (host_to_connect.to_string(), port_to_connect);
            let origin = (originator_address.to_string(), originator_port);
            up.open_channel(reply, move |reply| {
                Box::pin(direct_tcpip::open(
                    bridge_up, channel, reply, target, origin,
                ))
            })
            .await;
        }
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(up) = self.upstream.get().cloned() else {
            return Ok(false);
        };
        let Ok(conn) = up.get().await else {
            return Ok(false);
        };
        match conn.handle.tcpip_forward(address, *port).await {
            Ok(bound) => {
                if *port == 0 {
                    *port = bound;
                }
                up.forwards.add(address, *port);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(up) = self.upstream.get().cloned() else {
            return Ok(false);
        };
        up.forwards.remove(address, port);
        let Some(conn) = up.connected() else {
            return Ok(false);
        };
        Ok(conn
            .handle
            .cancel_tcpip_forward(address, port)
            .await
            .is_ok())
    }

    // Channel requests: acknowledged here (the client may be waiting for the answer), and
    // passed upstream by the channel's bridge, which sees them too.
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.proxy.settings.agent_forwarding)
    }
}

/// Counts a login's outcome for `/metrics`.
fn login_outcome(outcome: &'static str) {
    crate::metrics::METRICS
        .ssh_logins
        .get_or_create(&crate::metrics::OutcomeLabels { outcome })
        .inc();
}
