//! A terminal in the browser, as a live session like any other: the web face hands over a
//! WebSocket whose viewer it has already checked (an administrator, or the host's owner), and
//! this bridges it into the host through the proxy's own upstream path (the socket opened in
//! the container's namespace, the pinned key, the internal-key login) as a pty and a shell.
//! The session is registered (listed, ended by an administrator, re-checked against its
//! account and host), follows the proxy's idle and maximum lengths, and is audited with its
//! source. On the socket: binary frames carry terminal bytes both ways; a text frame
//! `{"resize": [cols, rows]}` resizes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use russh::ChannelMsg;
use uuid::Uuid;

use super::Proxy;
use super::login::Proof;
use super::registry::{Meter, Registered, SessionInfo};
use super::upstream::Upstream;
use crate::events::NewEvent;
use crate::store;

/// Largest terminal the browser may ask for.
const MAX_COLS: u32 = 500;
const MAX_ROWS: u32 = 200;

/// A browser viewer's registered live session; dropping it removes it from the registry.
pub(crate) struct ViewerSession {
    pub(crate) info: SessionInfo,
    pub(crate) meter: Arc<Meter>,
    _registered: Registered,
}

/// Who opened the terminal, from where, at what size.
pub struct Viewer {
    /// How events name them (`admin:alice`, `user:bob`).
    pub actor: String,
    /// Who they signed in as: the terminal or desktop ends when that sign-in does.
    pub principal: crate::auth::Principal,
    pub source: Option<SocketAddr>,
    pub cols: u32,
    pub rows: u32,
}

async fn say(ws: &mut WebSocket, text: &str) {
    let _ = ws
        .send(Message::Binary(
            format!("\r\n{text}\r\n").into_bytes().into(),
        ))
        .await;
}

async fn close(mut ws: WebSocket, reason: &str) {
    say(&mut ws, &format!("sluice: {reason}")).await;
    let reason: String = reason.chars().take(100).collect();
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: reason.into(),
        })))
        .await;
}

impl Proxy {
    /// Runs a browser terminal into `host_id` until either side ends it.
    pub async fn browser_terminal(self: Arc<Self>, ws: WebSocket, host_id: Uuid, viewer: Viewer) {
        let host = {
            let Ok(mut db) = self.store.acquire().await else {
                return close(ws, "the database is unavailable").await;
            };
            store::hosts::get(db.conn(), host_id).await.ok().flatten()
        };
        let Some(host) = host else {
            return close(ws, "no such host").await;
        };
        let (Some(user_id), Some(username)) = (host.user_id, host.username.clone()) else {
            return close(ws, "the host has no owner").await;
        };
        if host.status != crate::hosts::HostStatus::Running {
            return close(
                ws,
                &format!("host {} is {}: start it first", host.short_id, host.status),
            )
            .await;
        }
        let spec = match crate::tasks::host_spec(&self.store, host_id).await {
            Ok(Some(spec)) => spec,
            _ => return close(ws, "no such host").await,
        };
        let endpoint = match self.runtime.ssh_endpoint(&spec).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(host = %host.short_id, error = %e, "no SSH endpoint for a browser terminal");
                return close(ws, &e.summary()).await;
            }
        };
        let live = self
            .open_viewer_session(
                &host,
                user_id,
                username,
                "browser",
                &viewer,
                "ssh.browser_session_opened",
            )
            .await;
        let live = match live {
            Ok(live) => live,
            Err(reason) => return close(ws, &reason).await,
        };
        // One channel, the terminal's, counted in the account's budget like an SSH one.
        let upstream = Upstream::new(
            endpoint,
            host.short_id.clone(),
            None,
            live.meter.clone(),
            self.channel_budget(user_id),
        );
        let _slot = match upstream.budget.take() {
            Ok(slot) => slot,
            Err(reason) => {
                self.close_viewer_session(live, reason.clone(), "ssh.session_closed")
                    .await;
                return close(ws, &reason).await;
            }
        };
        if let Some(recorder) = self.recorder() {
            let _ = upstream.recording.set((
                recorder.clone(),
                crate::recordings::Subject {
                    session_id: live.info.id,
                    host_id: host.id,
                    short_id: host.short_id.clone(),
                    username: live.info.username.clone(),
                    kind: "browser",
                },
            ));
        }
        let reason = self.bridge(ws, &upstream, &live.meter, &viewer).await;
        upstream.close().await;
        self.close_viewer_session(live, reason, "ssh.session_closed")
            .await;
    }

    /// Registers a browser viewer's session (a terminal or a desktop) into `host` as a live
    /// session resting on the account, the host and the viewer's sign-in, and records its
    /// opening (`opened`) with the viewer and their source. Counted with the account's SSH
    /// sessions: past `SLUICE_SSH_MAX_SESSIONS_PER_ACCOUNT`, the sentence why it is refused.
    pub(crate) async fn open_viewer_session(
        &self,
        host: &crate::store::hosts::HostRow,
        user_id: Uuid,
        username: String,
        method: &str,
        viewer: &Viewer,
        opened: &'static str,
    ) -> Result<ViewerSession, String> {
        let meter = Meter::new();
        meter.authenticated();
        let info = SessionInfo {
            id: Uuid::now_v7(),
            username,
            user_id,
            host_id: host.id,
            short_id: host.short_id.clone(),
            method: method.into(),
            source: viewer
                .source
                .map(|s| s.to_string())
                .unwrap_or_else(|| "0.0.0.0:0".into()),
            since: crate::clock::now(),
            bytes_in: 0,
            bytes_out: 0,
        };
        let max = self.settings.max_sessions_per_account as usize;
        let registered = self.sessions.register_within(
            info.clone(),
            meter.clone(),
            Proof::Browser {
                viewer: viewer.principal.clone(),
            },
            max,
        )?;
        crate::events::record_alone(
            &self.store,
            NewEvent::new(viewer.actor.clone(), opened, "host")
                .target(host.id)
                .host(host.id)
                .user(Some(user_id))
                .source(viewer.source.map(|s| s.ip().to_string()))
                .details(serde_json::json!({"session_id": info.id, "short_id": info.short_id})),
        )
        .await;
        Ok(ViewerSession {
            info,
            meter,
            _registered: registered,
        })
    }

    /// Ends a viewer's session with `reason` (unless it was ended already), removes it from
    /// the live ones and records its end (`closed`: seconds, bytes, reason).
    pub(crate) async fn close_viewer_session(
        &self,
        live: ViewerSession,
        reason: String,
        closed: &'static str,
    ) {
        if live.meter.end_reason().is_none() {
            live.meter.end(reason);
        }
        let ViewerSession { info, meter, .. } = live;
        self.record_end(&info, &meter, closed).await;
    }

    /// Moves bytes until one side ends; answers why it ended.
    async fn bridge(
        &self,
        mut ws: WebSocket,
        upstream: &Upstream,
        meter: &Meter,
        viewer: &Viewer,
    ) -> String {
        let conn = match upstream.get().await {
            Ok(c) => c,
            Err(e) => {
                let reason = e.to_string();
                close(ws, &reason).await;
                return reason;
            }
        };
        let mut ch = match conn.handle.channel_open_session().await {
            Ok(ch) => ch,
            Err(e) => {
                let reason = format!("the host refused a session: {e}");
                close(ws, &reason).await;
                return reason;
            }
        };
        let (cols, rows) = (
            viewer.cols.clamp(10, MAX_COLS),
            viewer.rows.clamp(3, MAX_ROWS),
        );
        let started = ch
            .request_pty(false, "xterm-256color", cols, rows, 0, 0, &[])
            .await
            .and(ch.request_shell(false).await);
        if let Err(e) = started {
            let reason = format!("the host refused a shell: {e}");
            close(ws, &reason).await;
            return reason;
        }
        let rec = match upstream.recording.get() {
            Some((recorder, subject)) => {
                recorder.start(subject, cols, rows, "xterm-256color").await
            }
            None => None,
        };
        let authed = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                reason = meter.ended() => {
                    close(ws, &reason).await;
                    return reason;
                }
                _ = tick.tick() => {
                    let settings = &self.settings;
                    let overdue = if settings.max_session().is_some_and(|l| authed.elapsed() >= l) {
                        Some("session reached its maximum length; open it again".to_string())
                    } else if settings.idle_timeout().is_some_and(|l| meter.idle_for() >= l) {
                        Some("session idle too long; open it again".to_string())
                    } else {
                        None
                    };
                    if let Some(reason) = overdue {
                        meter.end(reason);
                    }
                }
                msg = ws.recv() => match msg {
                    Some(Ok(Message::Binary(bytes))) => {
                        meter.touch();
                        meter.bytes_in.fetch_add(bytes.len() as u64, Relaxed);
                        if let Some(r) = &rec { r.input(&bytes); }
                        if ch.data_bytes(bytes).await.is_err() {
                            return "the host closed the session".into();
                        }
                    }
                    Some(Ok(Message::Text(text))) => {
                        let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                        if let (Some(c), Some(r)) = (v["resize"][0].as_u64(), v["resize"][1].as_u64()) {
                            let (c, r) = ((c as u32).clamp(10, MAX_COLS), (r as u32).clamp(3, MAX_ROWS));
                            if let Some(rec) = &rec { rec.resize(c, r); }
                            let _ = ch.window_change(c, r, 0, 0).await;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        return "the browser closed the terminal".into();
                    }
                    Some(Ok(_)) => {}
                },
                msg = ch.wait() => match msg {
                    Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                        meter.touch();
                        meter.bytes_out.fetch_add(data.len() as u64, Relaxed);
                        if let Some(r) = &rec { r.output(&data); }
                        if ws.send(Message::Binary(data.to_vec().into())).await.is_err() {
                            return "the browser went away".into();
                        }
                    }
                    Some(ChannelMsg::ExitStatus { .. }) | Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => {
                        close(ws, "the shell ended").await;
                        return "the shell ended".into();
                    }
                    Some(_) => {}
                },
            }
        }
    }
}
