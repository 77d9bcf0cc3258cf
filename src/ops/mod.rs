//! The domain layer: one function per operation an operator or a user can perform. Each takes
//! the [`Caller`] and typed input, checks the caller's abilities and the rules, writes rows,
//! tasks and events in one transaction, and answers typed results or an [`OpError`]. The faces
//! (REST in `api/`, the CLI in `cli/`, MCP in `mcp/`, the web pages in `web/`) only translate to and from
//! these functions; none of them holds a rule of its own.

use std::sync::Arc;

use uuid::Uuid;

use crate::auth::{Ability, AuthError, Principal};
use crate::runtime::HostRuntime;
use crate::store::{Store, StoreError};
use crate::tasks::Queue;
use crate::validation::FieldErrors;

pub mod account;
pub mod bindings;
pub mod desktop;
pub mod egress;
pub mod entry;
pub mod events;
pub mod hosts;
pub mod keys;
pub mod overview;
pub mod recordings;
pub mod sessions;
pub mod ssh_keys;
pub mod tasks;
pub mod tokens;
pub mod users;

/// What the operations act on: the database, the task queue, the runtime, and what access
/// commands and egress checks need to know.
#[derive(Clone)]
pub struct Core {
    pub store: Store,
    pub queue: Queue,
    pub runtime: Arc<dyn HostRuntime>,
    /// The port the SSH proxy listens on.
    pub ssh_port: u16,
    /// Host name for access commands; `None` lets a face say (the HTTP Host header).
    pub public_host: Option<String>,
    /// Base URL of short links; `None` lets a face say.
    pub public_url: Option<String>,
    /// What the egress checks probe.
    pub probe: crate::probe::Targets,
    /// New events as they happen, where this process follows them (the server).
    pub events: Option<crate::events::live::Hub>,
    /// Password-attempt budgets, shared by every door that checks a password (the SSH proxy's
    /// too).
    pub attempts: Arc<crate::auth::attempts::Attempts>,
    /// Live SSH sessions, where the SSH proxy runs in this process.
    pub sessions: Option<Arc<crate::sshproxy::registry::Sessions>>,
    /// Outstanding desktop tickets (in memory: they open connections to this process).
    pub desktop_tickets: Arc<crate::desktop::tickets::Tickets>,
    /// Where session recordings are kept (`<data dir>/recordings`).
    pub recordings_dir: std::path::PathBuf,
    /// The uids hosts' accounts are given from (`SLUICE_HOST_UIDS`).
    pub host_uids: crate::hosts::account::UidRange,
}

impl Core {
    /// Where users reach Sluice when no request says: the configured public host and URL, or
    /// `localhost`.
    pub fn public(&self) -> Public {
        let ssh_host = self
            .public_host
            .clone()
            .unwrap_or_else(|| "localhost".into());
        let base_url = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{ssh_host}"));
        Public { ssh_host, base_url }
    }
}

/// Where users reach Sluice, as access commands show it: the SSH host name and the base URL of
/// short links.
#[derive(Debug, Clone)]
pub struct Public {
    pub ssh_host: String,
    pub base_url: String,
}

/// Through which face a caller came; events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    Api,
    Cli,
    Mcp,
    Web,
}

impl Face {
    pub fn as_str(self) -> &'static str {
        match self {
            Face::Api => "api",
            Face::Cli => "cli",
            Face::Mcp => "mcp",
            Face::Web => "web",
        }
    }
}

/// Who asks for an operation, from where, through which face.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The client's address, where there is one.
    pub source: Option<String>,
    pub face: Face,
}

impl Caller {
    pub fn new(principal: Principal, source: Option<String>, face: Face) -> Self {
        Self {
            principal,
            source,
            face,
        }
    }

    /// The operator at the server's shell (the CLI): every ability.
    pub fn local() -> Self {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "root".into());
        Self::new(Principal::Local { user }, None, Face::Cli)
    }

    /// How the caller appears in events.
    pub fn actor(&self) -> String {
        self.principal.actor()
    }

    /// Refuses anyone but the operator at the server's shell: what acts on the install's own
    /// files (its keys, its backups) is done there, never through the API.
    pub fn require_local(&self) -> Result<(), OpError> {
        match self.principal {
            Principal::Local { .. } => Ok(()),
            _ => Err(OpError::Forbidden(
                "this is done with the sluice command on the install's machine".into(),
            )),
        }
    }

    /// Refuses a caller without `ability`.
    pub fn require(&self, ability: Ability) -> Result<(), OpError> {
        if self.principal.can(ability) {
            return Ok(());
        }
        Err(OpError::Forbidden(match &self.principal {
            Principal::Token { .. } => format!("this token lacks the ability {ability}"),
            _ => "administrators only".into(),
        }))
    }
}

/// Why an operation did not happen. Each face maps it in one place: `api/error.rs` to HTTP,
/// `main.rs` to exit codes, `mcp/` to tool errors.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{}", .0.summary())]
    Invalid(FieldErrors),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// Something this install lacks or cannot do now (no data plane, Docker unreachable).
    #[error("{0}")]
    Unavailable(String),
    /// Only the running server can do this: it holds what the operation needs (the live
    /// sessions, a running host's data plane). The CLI asks it through the control socket.
    #[error("{0}")]
    ServerOnly(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Too many attempts: try again after this many seconds.
    #[error("too many attempts; retry in {0} s")]
    Busy(u64),
    /// A fault of Sluice's own (logged; callers see only that it failed).
    #[error("internal error: {0}")]
    Internal(String),
}

impl OpError {
    /// A refusal naming one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        OpError::Invalid(FieldErrors::one(field, message))
    }
}

impl From<FieldErrors> for OpError {
    fn from(e: FieldErrors) -> Self {
        OpError::Invalid(e)
    }
}

pub type OpResult<T> = Result<T, OpError>;

/// Parses an id given in a path or a tool argument; an id that is not a UUID names no object.
pub fn parse_id(raw: &str, what: &'static str) -> OpResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| OpError::NotFound(what))
}

/// A required UUID field of an input.
pub fn uuid_field(errs: &mut FieldErrors, field: &str, v: Option<&str>) -> Option<Uuid> {
    match v.map(Uuid::parse_str) {
        None => {
            errs.add(field, "is required");
            None
        }
        Some(Err(_)) => {
            errs.add(field, "must be a UUID");
            None
        }
        Some(Ok(id)) => Some(id),
    }
}

/// An optional UUID field of an input.
pub fn optional_uuid(errs: &mut FieldErrors, field: &str, v: Option<&str>) -> Option<Uuid> {
    match v.map(Uuid::parse_str) {
        None => None,
        Some(Err(_)) => {
            errs.add(field, "must be a UUID");
            None
        }
        Some(Ok(id)) => Some(id),
    }
}
