//! The CLI's operator commands, on the domain layer: each parses its arguments into the
//! operation's input, calls the same function the API calls (as the local operator, who holds
//! every ability), and prints a table or, with `--json`, the API's shapes. Refusals become
//! exit codes in one place ([`CliError::exit_code`]).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use super::control::{self, ControlError};
use super::table::{self, Column};
use super::{
    BackupCommand, BindingCommand, Command, Common, EgressCommand, EventCommand, HostCommand,
    KeysCommand, PageArgs, RecordingCommand, SessionCommand, TaskCommand, TokenCommand,
    UserCommand,
};
use crate::ops::{self, Caller, Core, OpError};
use crate::runtime::docker::DockerRuntime;
use crate::store::events::EventFilter;
use crate::store::tasks::TaskFilter;
use crate::store::{PageRequest, Store, StoreError};
use crate::tasks::Kind;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Op(#[from] OpError),
    #[error("{0}")]
    Input(String),
    #[error("cannot open the database {url}: {source}")]
    Database { url: String, source: StoreError },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The command ran and its verdict is "failed" (an egress test).
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    /// Asking the running server (what only it holds) failed, or it refused.
    #[error(transparent)]
    Control(#[from] super::control::ControlError),
    /// The data directory does not exist: the command runs in the wrong place.
    #[error(
        "no Sluice data directory at {0}: run this where `sluice serve` keeps its state, or give \
         its directory with --data-dir (SLUICE_DATA_DIR) and its DATABASE_URL{hint}",
        hint = service_hint(.0)
    )]
    NoInstall(std::path::PathBuf),
}

/// Where the systemd unit keeps an install (deploy/sluice.service).
pub const SERVICE_DATA_DIR: &str = "/var/lib/sluice";

/// A pointer to the service's install when there is one and the operator is elsewhere.
pub fn service_hint(dir: &Path) -> String {
    let service = Path::new(SERVICE_DATA_DIR);
    if dir != service && service.join("lock").exists() {
        format!(
            " (the service's install is at {SERVICE_DATA_DIR}: `set -a; . /etc/sluice/sluice.env; \
             set +a; export SLUICE_DATA_DIR={SERVICE_DATA_DIR}`)"
        )
    } else {
        String::new()
    }
}

/// Refuses a data directory that does not exist, rather than failing on a file in it: the
/// operator is in the wrong directory, or forgot the server's settings.
pub fn require_data_dir(dir: &Path) -> Result<(), CliError> {
    if dir.is_dir() {
        return Ok(());
    }
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    Err(CliError::NoInstall(abs))
}

impl CliError {
    /// The process's exit code: 2 bad input, 3 not found, 4 conflict with the current state,
    /// 5 not allowed, 6 not possible here, 7 a check failed, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Input(_)
            | CliError::Op(OpError::Invalid(_))
            | CliError::Backup(crate::backup::BackupError::BadArchive(_)) => 2,
            CliError::Op(OpError::NotFound(_)) => 3,
            CliError::Op(OpError::Conflict(_))
            | CliError::Backup(crate::backup::BackupError::Conflict(_)) => 4,
            CliError::Op(OpError::Forbidden(_) | OpError::Auth(_)) => 5,
            CliError::Op(OpError::Unavailable(_) | OpError::ServerOnly(_))
            | CliError::Control(ControlError::NoServer { .. })
            | CliError::NoInstall(_)
            | CliError::Keys(crate::keys::KeyError::NotPossible(_)) => 6,
            CliError::Control(ControlError::Refused { exit_code, .. }) => *exit_code,
            CliError::Failed(_) => 7,
            _ => 1,
        }
    }

    /// What the operator reads: the message and, for bad input, every field.
    pub fn explain(&self) -> String {
        match self {
            CliError::Op(OpError::Invalid(fields)) => fields
                .0
                .iter()
                .map(|(f, m)| format!("{f}: {}", m.join("; ")))
                .collect::<Vec<_>>()
                .join("\n"),
            CliError::Op(OpError::Store(e)) => format!("database error: {e}"),
            other => other.to_string(),
        }
    }
}

type CliResult = Result<(), CliError>;

async fn core(
    common: &Common,
    probe: Option<&crate::config::ProbeSettings>,
) -> Result<Core, CliError> {
    require_data_dir(&common.store.store.data_dir)?;
    let url = common.store.store.effective_database_url();
    let keys = crate::keys::Keyring::open(&common.store.store.data_dir)?;
    let store = Store::connect(&url, Arc::new(keys))
        .await
        .map_err(|source| CliError::Database {
            url: crate::store::redact_url(&url),
            source,
        })?;
    let runtime = Arc::new(DockerRuntime::new(&common.store.store.data_dir)?);
    Ok(Core {
        store,
        queue: Default::default(),
        runtime,
        ssh_port: common.ssh_proxy_port,
        public_host: common.public_host.clone(),
        public_url: common.public_url.clone(),
        probe: probe.map(|p| p.targets()).unwrap_or_default(),
        events: None,
        attempts: Default::default(),
        sessions: None,
        desktop_tickets: Default::default(),
        recordings_dir: common.store.store.data_dir.join("recordings"),
        host_uids: common.store.store.host_uids,
    })
}

fn page(p: &PageArgs) -> PageRequest {
    PageRequest {
        page: p.page.max(1),
        per_page: p.per_page,
    }
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Prints one object: JSON, or its chosen fields.
fn show(common: &Common, v: &Value, columns: &[Column]) {
    if common.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", table::fields(v, columns));
    }
}

/// Prints a list: JSON (`{"data": [...], "total": N}`, as the API pages), or a table.
fn list(common: &Common, rows: Vec<Value>, total: i64, columns: &[Column]) {
    if common.json {
        let v = json!({"data": rows, "total": total});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("{}", table::render(&rows, columns));
        if total > rows.len() as i64 {
            eprintln!("({} of {total}; see --page)", rows.len());
        }
    }
}

const HOST_ROWS: &[Column] = &[
    ("ID", "/id"),
    ("SHORT ID", "/short_id"),
    ("USER", "/username"),
    ("STATUS", "/status"),
    ("EGRESS", "/egress_ip_id"),
    ("MEMORY MB", "/memory_mb"),
    ("CPUS", "/cpus"),
];
const HOST_FIELDS: &[Column] = &[
    ("id", "/id"),
    ("short id", "/short_id"),
    ("user", "/username"),
    ("user id", "/user_id"),
    ("status", "/status"),
    ("reason", "/status_reason"),
    ("egress", "/egress_ip_id"),
    ("binding", "/binding_id"),
    ("memory MB", "/memory_mb"),
    ("cpus", "/cpus"),
    ("pids limit", "/pids_limit"),
    ("image", "/image"),
    ("image outdated", "/image_outdated"),
    ("desktop", "/desktop"),
    ("entry command", "/access/entry_command"),
    ("ssh command", "/access/ssh_command"),
    ("created", "/created_at"),
];
const QUEUED: &[Column] = &[("task", "/task_id"), ("host", "/host_id")];
const USER_ROWS: &[Column] = &[
    ("ID", "/id"),
    ("USERNAME", "/username"),
    ("STATUS", "/status"),
    ("EXPIRES", "/expires_at"),
    ("CREATED", "/created_at"),
];
const USER_FIELDS: &[Column] = &[
    ("id", "/id"),
    ("username", "/username"),
    ("status", "/status"),
    ("expires", "/expires_at"),
    ("created", "/created_at"),
];
const KEY_ROWS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("TYPE", "/key_type"),
    ("FINGERPRINT", "/fingerprint"),
    ("ADDED", "/created_at"),
];
const KEY_FIELDS: &[Column] = &[
    ("id", "/id"),
    ("name", "/name"),
    ("type", "/key_type"),
    ("fingerprint", "/fingerprint"),
];
const EGRESS_ROWS: &[Column] = &[
    ("ID", "/id"),
    ("LABEL", "/label"),
    ("TYPE", "/tunnel_type"),
    ("EXIT IP", "/ip_address"),
    ("LAST TEST", "/last_test/status"),
];
const EGRESS_FIELDS: &[Column] = &[
    ("id", "/id"),
    ("label", "/label"),
    ("type", "/tunnel_type"),
    ("exit IP", "/ip_address"),
    ("provider", "/provider"),
    ("wg endpoint", "/wg_endpoint"),
    ("wg client public key", "/wg_client_public_key"),
    ("proxy type", "/proxy_config/type"),
    ("proxy server", "/proxy_config/server"),
    ("last test", "/last_test/status"),
];
const REPORT_FIELDS: &[Column] = &[
    ("status", "/status"),
    ("connectivity", "/checks/connectivity/passed"),
    ("exit IP", "/checks/exit_ip/observed"),
    ("exit IP matches", "/checks/exit_ip/passed"),
    ("DNS resolvers", "/checks/dns_leak/resolvers"),
    ("DNS leak free", "/checks/dns_leak/passed"),
    ("tested", "/tested_at"),
];
const TASK_ROWS: &[Column] = &[
    ("ID", "/id"),
    ("KIND", "/kind"),
    ("HOST", "/host_id"),
    ("STATUS", "/status"),
    ("BY", "/created_by"),
    ("CREATED", "/created_at"),
    ("ERROR", "/error"),
];
const TASK_FIELDS: &[Column] = &[
    ("id", "/id"),
    ("kind", "/kind"),
    ("host", "/host_id"),
    ("status", "/status"),
    ("progress", "/progress"),
    ("error", "/error"),
    ("attempts", "/attempts"),
    ("by", "/created_by"),
    ("created", "/created_at"),
    ("finished", "/finished_at"),
];
const EVENT_ROWS: &[Column] = &[
    ("TIME", "/created_at"),
    ("ACTOR", "/actor"),
    ("ACTION", "/action"),
    ("TARGET", "/target_id"),
    ("SOURCE", "/source_ip"),
];
const TOKEN_ROWS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("PREFIX", "/prefix"),
    ("ABILITIES", "/abilities"),
    ("EXPIRES", "/expires_at"),
    ("LAST USED", "/last_used_at"),
];
const RECORDING_ROWS: &[Column] = &[
    ("ID", "/id"),
    ("HOST", "/short_id"),
    ("USER", "/username"),
    ("KIND", "/kind"),
    ("STATUS", "/status"),
    ("STARTED", "/started_at"),
    ("ENDED", "/ended_at"),
];
const RECORDING_FIELDS: &[Column] = &[
    ("id", "/id"),
    ("session", "/session_id"),
    ("host", "/short_id"),
    ("user", "/username"),
    ("kind", "/kind"),
    ("status", "/status"),
    ("keystrokes", "/with_input"),
    ("bytes (compressed)", "/bytes"),
    ("stopped at its size cap", "/truncated"),
    ("started", "/started_at"),
    ("ended", "/ended_at"),
];
const SESSION_FIELDS: &[Column] = &[
    ("ended", "/id"),
    ("user", "/username"),
    ("host", "/short_id"),
    ("source", "/source"),
];
const SESSION_ROWS: &[Column] = &[
    ("ID", "/id"),
    ("USER", "/username"),
    ("HOST", "/short_id"),
    ("METHOD", "/method"),
    ("SOURCE", "/source"),
    ("SINCE", "/since"),
];

/// Reads a JSON request body from a file, or stdin for `-`.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CliError> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Input(format!("--from {}: {e}", path.display())))?
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::Input(format!(
            "--from {}: not the expected JSON: {e}",
            path.display()
        ))
    })
}

/// Asks the server running on this data directory to perform what only it can.
async fn server(common: &Common, me: &Caller, op: control::Op) -> Result<Value, CliError> {
    let operator = match &me.principal {
        crate::auth::Principal::Local { user } => user.clone(),
        other => other.actor(),
    };
    Ok(control::call(&common.store.store.data_dir, &operator, op).await?)
}

/// An account named by id or user name, as its id.
async fn user_id(core: &Core, caller: &Caller, key: &str) -> Result<uuid::Uuid, CliError> {
    Ok(ops::users::lookup(core, caller, key).await?.id)
}

/// A host filter named by id or short id, as its id.
async fn any_host_id(
    core: &Core,
    caller: &Caller,
    key: Option<String>,
) -> Result<Option<uuid::Uuid>, CliError> {
    match key {
        Some(k) => Ok(Some(host_id(core, caller, &k).await?)),
        None => Ok(None),
    }
}

/// A host named by id or short id, as its id.
async fn host_id(core: &Core, caller: &Caller, key: &str) -> Result<uuid::Uuid, CliError> {
    Ok(ops::hosts::lookup(core, caller, key).await?.id)
}

/// Runs an operator command (anything but `serve`, `admin` and `image`).
pub async fn run(command: Command) -> CliResult {
    let me = Caller::local();
    match command {
        Command::Host(cmd) => host(cmd, &me).await,
        Command::User(cmd) => user(cmd, &me).await,
        Command::Egress(cmd) => egress(cmd, &me).await,
        Command::Binding(cmd) => binding(cmd, &me).await,
        Command::Task(cmd) => task(cmd, &me).await,
        Command::Event(cmd) => event(cmd, &me).await,
        Command::Session(cmd) => session(cmd, &me).await,
        Command::Recording(cmd) => recording(cmd, &me).await,
        Command::Token(cmd) => token(cmd, &me).await,
        Command::Stats(common) => {
            let core = core(&common, None).await?;
            let stats = to_json(&ops::overview::stats(&core, &me).await?);
            show(
                &common,
                &stats,
                &[
                    ("users", "/users"),
                    ("hosts", "/hosts/total"),
                    ("running", "/hosts/by_status/running"),
                    ("stopped", "/hosts/by_status/stopped"),
                    ("error", "/hosts/by_status/error"),
                    ("egresses", "/egress_ips"),
                    ("tasks queued", "/tasks/queued"),
                    ("tasks running", "/tasks/running"),
                    ("failed in 24 h", "/tasks/failed_last_24h"),
                ],
            );
            Ok(())
        }
        Command::Status(common) => {
            let core = core(&common, None).await?;
            let mut v = to_json(&ops::overview::status(&core, &me).await?);
            // The data directory's lock says it, as for `doctor`.
            v["server_running"] =
                json!(super::doctor::server_running(&common.store.store.data_dir));
            show(
                &common,
                &v,
                &[
                    ("server running", "/server_running"),
                    ("docker", "/docker/reachable"),
                    ("docker version", "/docker/version"),
                    ("docker error", "/docker/error"),
                    ("image", "/docker/image"),
                    ("image present", "/docker/image_present"),
                    ("hosts", "/hosts/total"),
                    ("running", "/hosts/by_status/running"),
                    ("error", "/hosts/by_status/error"),
                    ("tasks queued", "/tasks/queued"),
                    ("tasks running", "/tasks/running"),
                    ("failed in 24 h", "/tasks/failed_last_24h"),
                ],
            );
            Ok(())
        }
        Command::Keys(cmd) => keys(cmd, &me).await,
        Command::Backup(cmd) => backup(cmd, &me).await,
        Command::Serve(_) | Command::Doctor(_) | Command::Admin(_) | Command::Image(_) => Err(
            CliError::Input("this command is not an operator command".into()),
        ),
    }
}

async fn step(common: &Common, me: &Caller, host: &str, kind: Kind, payload: Value) -> CliResult {
    let core = core(common, None).await?;
    let id = host_id(&core, me, host).await?;
    let queued = ops::hosts::step(&core, me, id, kind, payload).await?;
    show(common, &to_json(&queued), QUEUED);
    Ok(())
}

async fn host(cmd: HostCommand, me: &Caller) -> CliResult {
    match cmd {
        HostCommand::List {
            user,
            status,
            page: p,
            common,
        } => {
            let core = core(&common, None).await?;
            let public = core.public();
            let filter = ops::hosts::HostFilter {
                user_id: match user {
                    Some(u) => Some(user_id(&core, me, &u).await?),
                    None => None,
                },
                status,
            };
            let (rows, total) = ops::hosts::list(&core, me, filter, page(&p)).await?;
            let rows = rows
                .into_iter()
                .map(|h| to_json(&ops::hosts::Host::view(&core, h, &public)))
                .collect();
            list(&common, rows, total, HOST_ROWS);
        }
        HostCommand::Show { host, common } => {
            let core = core(&common, None).await?;
            let row = ops::hosts::lookup(&core, me, &host).await?;
            let view = ops::hosts::Host::view(&core, row, &core.public());
            show(&common, &to_json(&view), HOST_FIELDS);
        }
        HostCommand::Create {
            user,
            egress,
            memory_mb,
            cpus,
            pids_limit,
            desktop,
            common,
        } => {
            let core = core(&common, None).await?;
            let req = ops::hosts::CreateHost {
                user_id: Some(user_id(&core, me, &user).await?.to_string()),
                egress_ip_id: match egress {
                    Some(e) => Some(ops::egress::lookup(&core, me, &e).await?.to_string()),
                    None => None,
                },
                memory_mb,
                cpus,
                pids_limit,
                desktop: Some(desktop),
            };
            let made = ops::hosts::create(&core, me, req).await?;
            let mut v = to_json(&ops::hosts::Host::view(&core, made.host, &core.public()));
            v["task_id"] = json!(made.task_id);
            v["ssh_password"] = json!(made.ssh_password);
            let mut columns = HOST_FIELDS.to_vec();
            columns.extend([("task", "/task_id"), ("ssh password", "/ssh_password")]);
            show(&common, &v, &columns);
            if !common.json {
                eprintln!("The SSH password is shown only this once.");
            }
        }
        HostCommand::Start { host, common } => {
            step(&common, me, &host, Kind::Start, json!({})).await?
        }
        HostCommand::Stop { host, common } => {
            step(&common, me, &host, Kind::Stop, json!({})).await?
        }
        HostCommand::Suspend { host, common } => {
            step(&common, me, &host, Kind::Suspend, json!({})).await?
        }
        HostCommand::Delete { host, common } => {
            step(&common, me, &host, Kind::Delete, json!({})).await?
        }
        HostCommand::Rebuild {
            host,
            wipe_home,
            desktop,
            no_desktop,
            common,
        } => {
            let mut options = json!({"wipe_home": wipe_home});
            if desktop || no_desktop {
                options["desktop"] = json!(desktop);
            }
            step(&common, me, &host, Kind::Rebuild, options).await?
        }
        HostCommand::Unsuspend { host, common } => {
            let core = core(&common, None).await?;
            let id = host_id(&core, me, &host).await?;
            let row = ops::hosts::unsuspend(&core, me, id).await?;
            let view = ops::hosts::Host::view(&core, row, &core.public());
            show(&common, &to_json(&view), HOST_FIELDS);
        }
        HostCommand::RotateSshPassword { host, common } => {
            let core = core(&common, None).await?;
            let id = host_id(&core, me, &host).await?;
            let pw = ops::hosts::rotate_ssh_password(&core, me, id).await?;
            show(&common, &to_json(&pw), &[("ssh password", "/ssh_password")]);
        }
        HostCommand::EgressCheck { host, common } => {
            let report = server(&common, me, control::Op::CheckHost { host: host.clone() }).await?;
            show(&common, &report, REPORT_FIELDS);
            if report["status"] != "passed" {
                return Err(CliError::Failed(format!(
                    "host {host} failed its egress check"
                )));
            }
        }
        HostCommand::Logs { host, tail, common } => {
            let core = core(&common, None).await?;
            let id = host_id(&core, me, &host).await?;
            let logs = ops::hosts::logs(&core, me, id, tail).await?;
            if common.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&logs).unwrap_or_default()
                );
            } else {
                for line in logs.lines {
                    println!("{}", line.escape_debug());
                }
            }
        }
    }
    Ok(())
}

async fn user(cmd: UserCommand, me: &Caller) -> CliResult {
    match cmd {
        UserCommand::List { page: p, common } => {
            let core = core(&common, None).await?;
            let (rows, total) = ops::users::list(&core, me, page(&p)).await?;
            list(
                &common,
                rows.iter().map(to_json).collect(),
                total,
                USER_ROWS,
            );
        }
        UserCommand::Show { user, common } => {
            let core = core(&common, None).await?;
            show(
                &common,
                &to_json(&ops::users::lookup(&core, me, &user).await?),
                USER_FIELDS,
            );
        }
        UserCommand::Create {
            username,
            password_stdin,
            expires_at,
            common,
        } => {
            let password = if password_stdin {
                Some(super::read_stdin_line()?)
            } else {
                None
            };
            let core = core(&common, None).await?;
            let req = ops::users::CreateUser {
                username: Some(username),
                password,
                expires_at,
            };
            let made = ops::users::create(&core, me, req).await?;
            let mut columns = USER_FIELDS.to_vec();
            columns.push(("password", "/password"));
            show(&common, &to_json(&made), &columns);
            if made.password.is_some() && !common.json {
                eprintln!("The generated password is shown only this once.");
            }
        }
        UserCommand::Disable { user, common } => set_status(&common, me, &user, "disabled").await?,
        UserCommand::Enable { user, common } => set_status(&common, me, &user, "active").await?,
        UserCommand::SetExpiry {
            user,
            expires_at,
            never: _,
            common,
        } => {
            let core = core(&common, None).await?;
            let id = user_id(&core, me, &user).await?;
            let req = ops::users::SetExpiry {
                expires_at: Some(expires_at),
            };
            let changed = ops::users::set_expiry(&core, me, id, req).await?;
            show(&common, &to_json(&changed), USER_FIELDS);
        }
        UserCommand::RotatePassword { user, common } => {
            let core = core(&common, None).await?;
            let id = user_id(&core, me, &user).await?;
            let pw = ops::users::rotate_password(&core, me, id).await?;
            show(&common, &to_json(&pw), &[("password", "/password")]);
        }
        UserCommand::Keys {
            user,
            page: p,
            common,
        } => {
            let core = core(&common, None).await?;
            let id = user_id(&core, me, &user).await?;
            let (rows, total) = ops::ssh_keys::list(&core, me, id, page(&p)).await?;
            list(&common, rows.iter().map(to_json).collect(), total, KEY_ROWS);
        }
        UserCommand::AddKey {
            user,
            public_key,
            name,
            common,
        } => {
            let core = core(&common, None).await?;
            let id = user_id(&core, me, &user).await?;
            let req = ops::ssh_keys::AddKey {
                public_key: Some(public_key),
                name,
            };
            let key = ops::ssh_keys::add(&core, me, id, req).await?;
            show(&common, &to_json(&key), KEY_FIELDS);
        }
        UserCommand::DeleteKey {
            user,
            key_id,
            common,
        } => {
            let core = core(&common, None).await?;
            let id = user_id(&core, me, &user).await?;
            ops::ssh_keys::delete(&core, me, id, key_id).await?;
            show(
                &common,
                &json!({"deleted": key_id}),
                &[("deleted", "/deleted")],
            );
        }
        UserCommand::Delete { user, common } => {
            let core = core(&common, None).await?;
            let id = user_id(&core, me, &user).await?;
            let tasks = ops::users::delete(&core, me, id).await?;
            show(
                &common,
                &json!({"deleted": id, "task_ids": tasks}),
                &[("deleted", "/deleted"), ("host deletions", "/task_ids")],
            );
        }
    }
    Ok(())
}

async fn set_status(common: &Common, me: &Caller, user: &str, status: &str) -> CliResult {
    let core = core(common, None).await?;
    let id = user_id(&core, me, user).await?;
    let req = ops::users::UpdateUser {
        status: Some(status.into()),
    };
    let user = ops::users::set_status(&core, me, id, req).await?;
    show(common, &to_json(&user), USER_FIELDS);
    Ok(())
}

async fn egress(cmd: EgressCommand, me: &Caller) -> CliResult {
    match cmd {
        EgressCommand::List { page: p, common } => {
            let core = core(&common, None).await?;
            let (rows, total) = ops::egress::list(&core, me, page(&p)).await?;
            list(
                &common,
                rows.iter().map(to_json).collect(),
                total,
                EGRESS_ROWS,
            );
        }
        EgressCommand::Show { egress, common } => {
            let core = core(&common, None).await?;
            let id = ops::egress::lookup(&core, me, &egress).await?;
            show(
                &common,
                &to_json(&ops::egress::get(&core, me, id).await?),
                EGRESS_FIELDS,
            );
        }
        EgressCommand::Create { from, common } => {
            let input = read_json(&from)?;
            let core = core(&common, None).await?;
            show(
                &common,
                &to_json(&ops::egress::create(&core, me, input).await?),
                EGRESS_FIELDS,
            );
        }
        EgressCommand::Update {
            egress,
            from,
            common,
        } => {
            let input = read_json(&from)?;
            let core = core(&common, None).await?;
            let id = ops::egress::lookup(&core, me, &egress).await?;
            show(
                &common,
                &to_json(&ops::egress::update(&core, me, id, input).await?),
                EGRESS_FIELDS,
            );
        }
        EgressCommand::Delete { egress, common } => {
            let core = core(&common, None).await?;
            let id = ops::egress::lookup(&core, me, &egress).await?;
            ops::egress::delete(&core, me, id).await?;
            show(&common, &json!({"deleted": id}), &[("deleted", "/deleted")]);
        }
        EgressCommand::Test {
            egress,
            common,
            probe,
        } => {
            let core = core(&common, Some(&probe)).await?;
            let id = ops::egress::lookup(&core, me, &egress).await?;
            // Through a data plane of its own, unless a running host's session carries the
            // egress: then the server, which holds that session, tests it.
            let report = match ops::egress::test(&core, me, id).await {
                Ok(report) => to_json(&report),
                Err(OpError::ServerOnly(_)) => {
                    server(&common, me, control::Op::TestEgress { id }).await?
                }
                Err(e) => return Err(e.into()),
            };
            show(&common, &report, REPORT_FIELDS);
            if report["status"] != "passed" {
                return Err(CliError::Failed(format!("egress {id} failed its test")));
            }
        }
    }
    Ok(())
}

async fn binding(cmd: BindingCommand, me: &Caller) -> CliResult {
    match cmd {
        BindingCommand::Create {
            host,
            egress,
            common,
        } => {
            let core = core(&common, None).await?;
            let id = host_id(&core, me, &host).await?;
            let req = ops::bindings::CreateBinding {
                host_id: Some(id.to_string()),
                egress_ip_id: Some(ops::egress::lookup(&core, me, &egress).await?.to_string()),
            };
            let b = ops::bindings::bind(&core, me, req).await?;
            show(
                &common,
                &to_json(&b),
                &[
                    ("binding", "/id"),
                    ("host", "/host_id"),
                    ("egress", "/egress_ip_id"),
                    ("task", "/task_id"),
                ],
            );
        }
        BindingCommand::Delete { id, common } => {
            let core = core(&common, None).await?;
            let v = match ops::bindings::unbind(&core, me, id).await? {
                Some(queued) => to_json(&queued),
                None => json!({"deleted": id}),
            };
            show(
                &common,
                &v,
                &[("deleted", "/deleted"), ("task", "/task_id")],
            );
        }
    }
    Ok(())
}

async fn task(cmd: TaskCommand, me: &Caller) -> CliResult {
    match cmd {
        TaskCommand::List {
            status,
            host,
            page: p,
            common,
        } => {
            let core = core(&common, None).await?;
            let host_id = any_host_id(&core, me, host).await?;
            let filter = TaskFilter {
                status,
                host_id,
                kind: None,
            };
            let (rows, total) = ops::tasks::list(&core, me, &filter, page(&p)).await?;
            list(
                &common,
                rows.iter().map(to_json).collect(),
                total,
                TASK_ROWS,
            );
        }
        TaskCommand::Show { id, common } => {
            let core = core(&common, None).await?;
            show(
                &common,
                &to_json(&ops::tasks::get(&core, me, id).await?),
                TASK_FIELDS,
            );
        }
    }
    Ok(())
}

async fn event(cmd: EventCommand, me: &Caller) -> CliResult {
    match cmd {
        EventCommand::List {
            action,
            host,
            user,
            page: p,
            common,
        } => {
            let core = core(&common, None).await?;
            let filter = event_filter(&core, me, action, host, user).await?;
            let (rows, total) = ops::events::list(&core, me, &filter, page(&p)).await?;
            list(
                &common,
                rows.iter().map(to_json).collect(),
                total,
                EVENT_ROWS,
            );
        }
        EventCommand::Follow {
            action,
            host,
            user,
            common,
        } => {
            let mut core = core(&common, None).await?;
            let filter = event_filter(&core, me, action, host, user).await?;
            // The same follower the server runs: it reads what any process commits.
            let stop = tokio_util::sync::CancellationToken::new();
            core.events = Some(crate::events::live::Hub::start(
                core.store.clone(),
                stop.clone(),
            ));
            if !common.json {
                println!("TIME                  ACTOR  ACTION  TARGET  SOURCE");
            }
            let mut last = None;
            loop {
                let stream = ops::events::live(&core, me, filter.clone(), last).await?;
                let mut stream = std::pin::pin!(stream);
                let mut behind = false;
                while let Some(item) = futures::StreamExt::next(&mut stream).await {
                    match item {
                        ops::events::Live::Event(e) => {
                            last = Some(e.id);
                            print_event(&common, &to_json(&*e));
                        }
                        ops::events::Live::FellBehind => behind = true,
                    }
                }
                // Fell behind: resume from the last one printed. Otherwise the follower ended.
                if !behind {
                    stop.cancel();
                    return Err(CliError::Failed("the event follower stopped".into()));
                }
            }
        }
    }
    Ok(())
}

/// The event filters as the operator gives them: a host by id or short id, a user by id (as
/// given, so a deleted account's events stay findable) or by user name.
async fn event_filter(
    core: &Core,
    me: &Caller,
    action: Option<String>,
    host: Option<String>,
    user: Option<String>,
) -> Result<EventFilter, CliError> {
    let host_id = any_host_id(core, me, host).await?;
    let user_id = match user {
        Some(u) => match uuid::Uuid::parse_str(u.trim()) {
            Ok(id) => Some(id),
            Err(_) => Some(user_id(core, me, &u).await?),
        },
        None => None,
    };
    Ok(EventFilter {
        user_id,
        host_id,
        action,
        ..Default::default()
    })
}

/// One followed event: a JSON line, or a line of the list's columns.
fn print_event(common: &Common, e: &Value) {
    if common.json {
        println!("{e}");
        return;
    }
    let field = |k: &str| match &e[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!(
        "{}  {}  {}  {}  {}",
        field("created_at"),
        field("actor"),
        field("action"),
        field("target_id"),
        field("source_ip")
    );
}

async fn session(cmd: SessionCommand, me: &Caller) -> CliResult {
    match cmd {
        SessionCommand::List { common } => {
            let rows = match server(&common, me, control::Op::ListSessions).await? {
                Value::Array(rows) => rows,
                _ => vec![],
            };
            let total = rows.len() as i64;
            list(&common, rows, total, SESSION_ROWS);
        }
        SessionCommand::End { id, common } => {
            let ended = server(&common, me, control::Op::EndSession { id }).await?;
            show(&common, &ended, SESSION_FIELDS);
        }
    }
    Ok(())
}

async fn recording(cmd: RecordingCommand, me: &Caller) -> CliResult {
    match cmd {
        RecordingCommand::List {
            host,
            page: p,
            common,
        } => {
            let core = core(&common, None).await?;
            let host_id = any_host_id(&core, me, host).await?;
            let (rows, total) = ops::recordings::list(&core, me, host_id, page(&p)).await?;
            list(
                &common,
                rows.iter().map(to_json).collect(),
                total,
                RECORDING_ROWS,
            );
        }
        RecordingCommand::Show { id, common } => {
            let core = core(&common, None).await?;
            let rec = ops::recordings::get(&core, me, id).await?;
            show(&common, &to_json(&rec), RECORDING_FIELDS);
        }
        RecordingCommand::Cast { id, output, common } => {
            use std::os::unix::fs::OpenOptionsExt;
            let core = core(&common, None).await?;
            let mut cast = ops::recordings::cast(&core, me, id).await?;
            let path = output.unwrap_or_else(|| format!("{id}.cast").into());
            if path == Path::new("-") {
                std::io::copy(&mut cast, &mut std::io::stdout().lock())?;
                return Ok(());
            }
            // What a terminal showed may be private: the file is the operator's alone, and an
            // existing one is never overwritten.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| CliError::Input(format!("cannot write {}: {e}", path.display())))?;
            // Streamed: a cast is decompressed a chunk at a time, never whole into memory.
            let bytes = std::io::copy(&mut cast, &mut file)?;
            show(
                &common,
                &json!({"file": path, "bytes": bytes}),
                &[("written", "/file"), ("bytes", "/bytes")],
            );
        }
    }
    Ok(())
}

async fn token(cmd: TokenCommand, me: &Caller) -> CliResult {
    match cmd {
        TokenCommand::Create(c) => {
            let core = core(&c.common, None).await?;
            let req = ops::tokens::CreateToken {
                name: Some(c.name),
                abilities: Some(c.abilities),
                expires_at: c.expires_at,
            };
            let made = ops::tokens::create(&core, me, req).await?;
            if c.common.json {
                show(&c.common, &to_json(&made), &[]);
            } else {
                eprintln!(
                    "Token `{}` ({}) created; it is shown only this once:",
                    made.info.name, made.info.id
                );
                println!("{}", made.token);
            }
        }
        TokenCommand::List { page: p, common } => {
            let core = core(&common, None).await?;
            let (rows, total) = ops::tokens::list(&core, me, page(&p)).await?;
            list(
                &common,
                rows.iter().map(to_json).collect(),
                total,
                TOKEN_ROWS,
            );
        }
        TokenCommand::Revoke { id, common } => {
            let core = core(&common, None).await?;
            ops::tokens::revoke(&core, me, id).await?;
            if !common.json {
                eprintln!("Token {id} revoked, with every token it minted.");
            }
        }
    }
    Ok(())
}

async fn keys(cmd: KeysCommand, me: &Caller) -> CliResult {
    match cmd {
        KeysCommand::Generate => {
            println!("{}", crate::keys::sealing::generate());
            Ok(())
        }
        KeysCommand::List(common) => {
            let core = core(&common, None).await?;
            let keys = ops::keys::list(&core, me).await?;
            if common.json {
                println!("{}", to_json(&keys));
            } else {
                for k in keys {
                    println!(
                        "{}  {:>6} rows{}",
                        k.key_id,
                        k.rows,
                        if k.current {
                            "  (seals new secrets)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Ok(())
        }
        KeysCommand::Rotate(common) => {
            let core = core(&common, None).await?;
            let r = ops::keys::rotate(&core, me).await?;
            if common.json {
                println!("{}", to_json(&r));
            } else {
                println!(
                    "Sealing key {} now seals stored secrets; {} rows sealed again under it.",
                    r.key_id, r.resealed
                );
                if !r.dropped.is_empty() {
                    println!("Dropped keys no row uses: {}.", r.dropped.join(", "));
                }
            }
            Ok(())
        }
        KeysCommand::RotateJwt(common) => {
            let core = core(&common, None).await?;
            // A server running on this install may sign with its own ADMIN_JWT_SECRET.
            let running = match server(&common, me, control::Op::JwtSource).await {
                Ok(v) => serde_json::from_value(v).ok(),
                Err(CliError::Control(control::ControlError::NoServer { .. })) => None,
                Err(e) => return Err(e),
            };
            ops::keys::rotate_jwt(&core, me, &common.store.store.data_dir, running).await?;
            println!(
                "New JWT secret in place: every login issued before is refused from now on; API tokens are unaffected."
            );
            Ok(())
        }
    }
}

async fn backup(cmd: BackupCommand, me: &Caller) -> CliResult {
    match cmd {
        BackupCommand::Create {
            output,
            without_keys,
            common,
        } => {
            let data_dir = &common.store.store.data_dir;
            let url = common.store.store.effective_database_url();
            let output = output.unwrap_or_else(|| {
                let now = crate::clock::now();
                std::path::PathBuf::from(format!(
                    "sluice-backup-{:04}{:02}{:02}T{:02}{:02}{:02}Z.tar.gz",
                    now.year(),
                    u8::from(now.month()),
                    now.day(),
                    now.hour(),
                    now.minute(),
                    now.second()
                ))
            });
            let made = crate::backup::create(data_dir, &url, &output, !without_keys).await?;
            let core = core(&common, None).await?;
            ops::events::record_local(
                &core,
                me,
                "backup.created",
                json!({"file": made.path.file_name().map(|f| f.to_string_lossy().into_owned()), "bytes": made.bytes, "backend": made.backend, "keys_included": made.keys_included}),
            )
            .await?;
            if common.json {
                println!("{}", to_json(&made));
            } else {
                println!(
                    "Backed up the {} database and {} files into {} ({} bytes). {}",
                    made.backend,
                    made.files - 1,
                    made.path.display(),
                    made.bytes,
                    if made.keys_included {
                        "It holds the sealing keys: keep it as safe as they are."
                    } else {
                        "The sealing keys and the JWT secret are not in it: keep them elsewhere, a restore needs the sealing keys."
                    }
                );
            }
            Ok(())
        }
        BackupCommand::Restore {
            archive,
            force,
            common,
        } => {
            let data_dir = &common.store.store.data_dir;
            let url = common.store.store.effective_database_url();
            let restored = crate::backup::restore(&archive, data_dir, &url, force).await?;
            let core = core(&common, None).await?;
            ops::events::record_local(
                &core,
                me,
                "backup.restored",
                json!({"created_at": restored.created_at, "backend": restored.backend}),
            )
            .await?;
            if common.json {
                println!("{}", to_json(&restored));
            } else {
                println!(
                    "Restored the backup of {} ({} database, {} files). Start sluice serve: it re-attaches the hosts.{}",
                    restored.created_at,
                    restored.backend,
                    restored.files,
                    if restored.keys_included {
                        ""
                    } else {
                        " The backup held no JWT secret: unless you put the install's jwt_secret back, everyone signs in again (API tokens keep working)."
                    }
                );
            }
            Ok(())
        }
    }
}
