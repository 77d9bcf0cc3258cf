//! The control socket: how `sluice` commands on the server's machine reach the running
//! `sluice serve` for what only that process holds (its live sessions, and the data planes of
//! running hosts). A Unix socket in the data directory (`control.sock`, mode 0600, and a
//! connection from any other user is dropped), one JSON request and one JSON reply per
//! connection. Each request is a domain operation called as the local operator, exactly as
//! the CLI calls the others, so its rules, events and exit codes are the CLI's own.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::run::CliError;
use crate::auth::Principal;
use crate::ops::{self, Caller, Core, Face, OpResult};

/// The socket's file name in the data directory.
pub const FILE: &str = "control.sock";
/// Largest request the server reads, and largest reply the client reads.
const MAX_REQUEST: u64 = 64 * 1024;
const MAX_REPLY: u64 = 64 * 1024 * 1024;
/// Requests served at once; more wait for a turn.
const MAX_CONCURRENT: usize = 16;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client waits for an answer (an egress test takes up to about a minute).
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// What the CLI asks of the server.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The operator's login name, for the audit trail (`cli:<name>`).
    pub operator: String,
    #[serde(flatten)]
    pub op: Op,
}

/// The operations only the running server can do.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    ListSessions,
    EndSession {
        id: Uuid,
    },
    TestEgress {
        id: Uuid,
    },
    CheckHost {
        host: String,
    },
    /// Where the server's login-signing secret comes from.
    JwtSource,
}

/// The server's answer: the operation's result in the API's shape, or its refusal as the CLI
/// would have reported it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Done(Value),
    Refused { exit_code: i32, message: String },
}

/// Why the server's answer could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no `sluice serve` answers on data directory {dir} ({source}); this needs the running \
         server: start it, or give the --data-dir it runs with{hint}",
        hint = super::run::service_hint(dir)
    )]
    NoServer { dir: PathBuf, source: io::Error },
    #[error("the server's control socket {path} failed: {message}")]
    Broken { path: PathBuf, message: String },
    /// The operation ran on the server and was refused there.
    #[error("{message}")]
    Refused { exit_code: i32, message: String },
}

/// Binds the control socket of the data directory this process has locked. A socket left by
/// an earlier process is replaced (the lock proves none serves it).
pub fn listen(data_dir: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What the server tells about itself, beside the operations on its core.
#[derive(Debug, Clone, Copy)]
pub struct ServerFacts {
    pub jwt: crate::keys::jwt::Source,
}

/// Answers requests until `stop`, then removes the socket.
pub async fn serve(
    listener: UnixListener,
    core: Core,
    facts: ServerFacts,
    stop: CancellationToken,
) {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let turns = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == me => {}
            Ok(cred) => {
                tracing::warn!(uid = cred.uid(), "control socket: refused another user");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket: cannot tell who connected");
                continue;
            }
        }
        let (core, turns) = (core.clone(), turns.clone());
        tokio::spawn(async move {
            let Ok(_turn) = turns.acquire_owned().await else {
                return;
            };
            if let Err(e) = answer(stream, &core, facts).await {
                tracing::debug!(error = %e, "control socket: connection ended early");
            }
        });
    }
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
}

async fn answer(mut stream: UnixStream, core: &Core, facts: ServerFacts) -> io::Result<()> {
    let mut raw = Vec::new();
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        (&mut stream).take(MAX_REQUEST).read_to_end(&mut raw),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request not sent in time"))??;
    let reply = match serde_json::from_slice::<Request>(&raw) {
        Ok(req) => {
            let result = perform(core, facts, req).await;
            match result {
                Ok(v) => Reply::Done(v),
                Err(e) => {
                    let e = CliError::Op(e);
                    Reply::Refused {
                        exit_code: e.exit_code(),
                        message: e.explain(),
                    }
                }
            }
        }
        Err(e) => Reply::Refused {
            exit_code: 2,
            message: format!("the control request is not understood: {e}"),
        },
    };
    let out = serde_json::to_vec(&reply).map_err(io::Error::other)?;
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// Runs one request as the local operator.
async fn perform(core: &Core, facts: ServerFacts, req: Request) -> OpResult<Value> {
    let operator: String = req
        .operator
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    let caller = Caller::new(
        Principal::Local {
            user: if operator.is_empty() {
                "root".into()
            } else {
                operator
            },
        },
        None,
        Face::Cli,
    );
    Ok(match req.op {
        Op::ListSessions => json(&ops::sessions::list(core, &caller)?),
        Op::EndSession { id } => json(&ops::sessions::end(core, &caller, id).await?),
        Op::TestEgress { id } => json(&ops::egress::test(core, &caller, id).await?),
        Op::CheckHost { host } => {
            let id = ops::hosts::lookup(core, &caller, &host).await?.id;
            json(&ops::egress::check_host(core, &caller, id).await?)
        }
        Op::JwtSource => {
            caller.require_local()?;
            json(&facts.jwt)
        }
    })
}

fn json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Asks the server running on `data_dir` to perform `op` for `operator`.
pub async fn call(data_dir: &Path, operator: &str, op: Op) -> Result<Value, ControlError> {
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let path = dir.join(FILE);
    let mut stream = UnixStream::connect(&path)
        .await
        .map_err(|source| ControlError::NoServer {
            dir: dir.clone(),
            source,
        })?;
    let broken = |message: String| ControlError::Broken {
        path: path.clone(),
        message,
    };
    let req = Request {
        operator: operator.to_string(),
        op,
    };
    let body = serde_json::to_vec(&req).map_err(|e| broken(e.to_string()))?;
    let mut raw = Vec::new();
    let exchange = async {
        stream.write_all(&body).await?;
        stream.shutdown().await?;
        (&mut stream).take(MAX_REPLY).read_to_end(&mut raw).await
    };
    tokio::time::timeout(REPLY_TIMEOUT, exchange)
        .await
        .map_err(|_| broken(format!("no answer in {} s", REPLY_TIMEOUT.as_secs())))?
        .map_err(|e| broken(e.to_string()))?;
    match serde_json::from_slice::<Reply>(&raw).map_err(|e| broken(e.to_string()))? {
        Reply::Done(v) => Ok(v),
        Reply::Refused { exit_code, message } => Err(ControlError::Refused { exit_code, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_keep_their_shape_on_the_wire() {
        let req = Request {
            operator: "ops".into(),
            op: Op::EndSession { id: Uuid::nil() },
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["op"], "end_session");
        assert_eq!(v["operator"], "ops");
        let back: Request = serde_json::from_value(v).unwrap();
        assert!(matches!(back.op, Op::EndSession { id } if id.is_nil()));
        let reply = Reply::Refused {
            exit_code: 3,
            message: "session not found".into(),
        };
        let text = serde_json::to_string(&reply).unwrap();
        assert!(matches!(
            serde_json::from_str::<Reply>(&text).unwrap(),
            Reply::Refused { exit_code: 3, .. }
        ));
    }
}
