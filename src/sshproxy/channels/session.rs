//! Session channels (shell, exec, sftp and other subsystems): every request the client makes
//! is passed to the container's sshd in order (pty-req, env, shell, exec, subsystem,
//! window-change, signal, auth-agent-req), and everything the program sends back (output,
//! stderr, exit status or signal, end of file, close) reaches the client.
//!
//! The proxy acknowledges the client's requests at once (russh's session loop must never wait
//! on the upstream); when the container's sshd then refuses a request the client relies on,
//! the client is told on stderr and the channel is closed, so nothing hangs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};

use crate::sshproxy::upstream::Upstream;

/// What a refused request means to the client.
#[derive(Debug, Clone, Copy)]
enum Asked {
    Pty,
    Start(&'static str),
    Quiet,
}

/// Opens a session channel upstream, accepts the client's and bridges the two.
pub async fn open(
    upstream: Arc<Upstream>,
    down: Channel<Msg>,
    reply: ChannelOpenHandle,
    agent_enabled: bool,
) {
    let up = match upstream.get().await {
        Ok(up) => up,
        Err(e) => {
            return reply
                .reject(ChannelOpenFailure::Other {
                    code: 2,
                    reason: e.to_string(),
                })
                .await;
        }
    };
    let up_ch = match up.handle.channel_open_session().await {
        Ok(ch) => ch,
        Err(e) => {
            let reason = format!("the host refused a session: {e}");
            return reply
                .reject(ChannelOpenFailure::Other { code: 2, reason })
                .await;
        }
    };
    reply.accept().await;
    let client = upstream.client_handle();
    let id = down.id();
    let meter = upstream.meter.clone();
    let (mut dr, dw) = down.split();
    let (mut ur, uw) = up_ch.split();
    let mut pending: VecDeque<Asked> = VecDeque::new();
    let (mut down_open, mut up_open) = (true, true);
    // A terminal (a PTY, then a shell or command) is recorded when the install records.
    let mut pty: Option<(String, u32, u32)> = None;
    let mut rec: Option<crate::recordings::Recording> = None;
    while down_open && up_open {
        tokio::select! {
            m = dr.wait() => {
                let Some(m) = m else { break };
                let sent = match m {
                    ChannelMsg::Data { data } => {
                        meter.touch();
                        if let Some(r) = &rec { r.input(&data); }
                        uw.data_bytes(data).await
                    }
                    ChannelMsg::ExtendedData { data, ext } => uw.extended_data_bytes(ext, data).await,
                    ChannelMsg::Eof => uw.eof().await,
                    ChannelMsg::Close => { down_open = false; uw.close().await }
                    ChannelMsg::RequestPty { term, col_width, row_height, pix_width, pix_height, terminal_modes, .. } => {
                        pty = Some((term.clone(), col_width, row_height));
                        pending.push_back(Asked::Pty);
                        uw.request_pty(true, &term, col_width, row_height, pix_width, pix_height, &terminal_modes).await
                    }
                    ChannelMsg::SetEnv { variable_name, variable_value, .. } => {
                        pending.push_back(Asked::Quiet);
                        uw.set_env(true, variable_name, variable_value).await
                    }
                    ChannelMsg::RequestShell { .. } => {
                        meter.touch();
                        rec = start_recording(&upstream, pty.as_ref(), rec).await;
                        pending.push_back(Asked::Start("shell"));
                        uw.request_shell(true).await
                    }
                    ChannelMsg::Exec { command, .. } => {
                        meter.touch();
                        rec = start_recording(&upstream, pty.as_ref(), rec).await;
                        pending.push_back(Asked::Start("command"));
                        uw.exec(true, command).await
                    }
                    ChannelMsg::RequestSubsystem { name, .. } => {
                        meter.touch();
                        pending.push_back(Asked::Start("subsystem"));
                        uw.request_subsystem(true, name).await
                    }
                    ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height } => {
                        if let Some(r) = &rec { r.resize(col_width, row_height); }
                        uw.window_change(col_width, row_height, pix_width, pix_height).await
                    }
                    ChannelMsg::Signal { signal } => uw.signal(signal).await,
                    ChannelMsg::AgentForward { .. } if agent_enabled => {
                        upstream.agent_allowed.store(true, Ordering::SeqCst);
                        pending.push_back(Asked::Quiet);
                        uw.agent_forward(true).await
                    }
                    _ => Ok(()),
                };
                if sent.is_err() { break; }
            }
            m = ur.wait() => {
                let Some(m) = m else { break };
                let sent = match m {
                    ChannelMsg::Data { data } => {
                        meter.touch();
                        if let Some(r) = &rec { r.output(&data); }
                        dw.data_bytes(data).await
                    }
                    ChannelMsg::ExtendedData { data, ext } => {
                        meter.touch();
                        if let Some(r) = &rec { r.output(&data); }
                        dw.extended_data_bytes(ext, data).await
                    }
                    ChannelMsg::Eof => dw.eof().await,
                    ChannelMsg::Close => { up_open = false; dw.close().await }
                    ChannelMsg::ExitStatus { exit_status } => dw.exit_status(exit_status).await,
                    ChannelMsg::ExitSignal { signal_name, core_dumped, error_message, lang_tag } => {
                        match &client {
                            Some(client) => client
                                .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                                .await
                                .map_err(|_| russh::Error::SendError),
                            None => Ok(()),
                        }
                    }
                    ChannelMsg::Success => { pending.pop_front(); Ok(()) }
                    ChannelMsg::Failure => match pending.pop_front() {
                        Some(Asked::Pty) => {
                            dw.extended_data_bytes(1, &b"PTY allocation request failed\r\n"[..]).await
                        }
                        Some(Asked::Start(what)) => {
                            let line = format!("sluice: the host refused to start the {what}\r\n");
                            let _ = dw.extended_data_bytes(1, line.into_bytes()).await;
                            let _ = dw.exit_status(1).await;
                            let _ = dw.eof().await;
                            up_open = false;
                            dw.close().await
                        }
                        _ => Ok(()),
                    },
                    _ => Ok(()),
                };
                if sent.is_err() { break; }
            }
        }
    }
    let _ = uw.close().await;
    let _ = dw.close().await;
}

/// Starts recording the channel's terminal, if it has one and the install records (once).
async fn start_recording(
    upstream: &Upstream,
    pty: Option<&(String, u32, u32)>,
    current: Option<crate::recordings::Recording>,
) -> Option<crate::recordings::Recording> {
    if current.is_some() {
        return current;
    }
    let ((recorder, subject), (term, cols, rows)) = (upstream.recording.get()?, pty?);
    recorder.start(subject, *cols, *rows, term).await
}
