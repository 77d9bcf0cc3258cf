//! CLI: the `sluice` command line. `serve` runs the control plane; the other commands are the
//! operator at the machine acting on the same database through the same domain operations as
//! the API (`run.rs`), with tables for people (`table.rs`) and `--json` for scripts.

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use uuid::Uuid;

use crate::config::{ServeSettings, StoreSettings};

pub mod control;
pub mod doctor;
pub mod run;
pub mod table;

/// Sluice: containers for users, each pinned to the egress an operator chose.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML file whose settings override the environment (keys as in `serve --help`, with `_`
    /// for `-`, such as `http_addr = "0.0.0.0:8080"`).
    #[arg(long, global = true, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The settings that carry secrets, which have no flag (a flag shows in `ps`).
const SECRETS_HELP: &str = "Secrets, from the environment or the --config file only (no flags):
  [env: DATABASE_URL]      sqlite://PATH or postgres://USER:PASS@HOST/DB
                           (default: sluice.db in the data directory)
  [env: ADMIN_PASSWORD]    the administrator's password on first start, 8-128 characters
                           (default: generated, shown once on the terminal, or written to
                           admin-password (0600) in the data directory without one)
  [env: ADMIN_JWT_SECRET]  signs login tokens, at least 32 characters
                           (default: generated into jwt_secret (0600) in the data directory)
  [env: SLUICE_SEALING_KEYS]  base64 keys, newest last, sealing stored secrets
                           (default: generated into sealing.keys (0600) in the data directory)";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: HTTP API, task worker and housekeeping.
    #[command(after_help = SECRETS_HELP)]
    Serve(Box<ServeSettings>),
    /// Check this machine for what `serve` needs, with the same settings, and say what to do
    /// about each problem (exit 7 when something fails).
    #[command(after_help = SECRETS_HELP)]
    Doctor(Box<ServeSettings>),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Administrator account maintenance.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The managed user image.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Egresses: list, show, create, update, delete, test.
    #[command(subcommand)]
    Egress(EgressCommand),
    /// Hosts (users' containers): list, show, create, and their lifecycle.
    #[command(subcommand)]
    Host(HostCommand),
    /// User accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Which egress a host leaves through.
    #[command(subcommand)]
    Binding(BindingCommand),
    /// The queue of long operations.
    #[command(subcommand)]
    Task(TaskCommand),
    /// The audit trail.
    #[command(subcommand)]
    Event(EventCommand),
    /// Live SSH sessions: list, end (asks the running server through its control socket).
    #[command(subcommand)]
    Session(SessionCommand),
    /// Recorded terminal sessions (with SLUICE_RECORD_SESSIONS): list, show, and the cast.
    #[command(subcommand)]
    Recording(RecordingCommand),
    /// Counts of users, hosts by status, egresses and tasks.
    Stats(Common),
    /// Whether Docker answers (and its version), the managed images, hosts by status, the task
    /// backlog, and whether a server runs on this data directory.
    Status(Common),
    /// The install's own keys: the sealing keys of stored secrets, and the JWT secret.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Back the install up (database and data directory, online) or restore it.
    #[command(subcommand)]
    Backup(BackupCommand),
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Snapshot the database (SQLite VACUUM INTO, or pg_dump) and the data directory's files
    /// (keys included, unless --without-keys) into one archive (0600), while the server runs.
    Create {
        /// Where to write it. Default: sluice-backup-<UTC time>.tar.gz here.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        /// Leave the sealing keys and the JWT secret out (for a copy kept off-site): the
        /// archive alone then opens no egress secret; restoring it needs the keys put back.
        #[arg(long)]
        without_keys: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Restore an archive into SLUICE_DATA_DIR and DATABASE_URL, after checking every
    /// checksum. Refused while a server runs there; replacing an existing install needs --force.
    Restore {
        /// The archive `backup create` wrote.
        archive: std::path::PathBuf,
        /// Replace the install that is there.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The sealing keys (ids only), which one seals new secrets, and how many rows each seals.
    List(Common),
    /// Add a sealing key and seal every stored secret again under it, online; keys no row
    /// uses any more are dropped. With SLUICE_SEALING_KEYS, put the new key last there first.
    Rotate(Common),
    /// Replace the JWT secret: every login issued so far is refused at once, by the running
    /// server too (API tokens stay valid).
    RotateJwt(Common),
    /// Print a new random sealing key (base64) for SLUICE_SEALING_KEYS.
    Generate,
}

/// What every operator command takes: where the database is, how to print, and what access
/// commands show.
#[derive(Debug, Args)]
pub struct Common {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON (the API's shapes) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Port of the SSH proxy, shown in access commands.
    #[arg(
        long = "ssh-proxy-port",
        env = "SSH_PROXY_PORT",
        default_value = "2222",
        global = true
    )]
    pub ssh_proxy_port: u16,
    /// Host name shown in access commands.
    #[arg(long = "public-host", env = "SLUICE_PUBLIC_HOST", global = true)]
    pub public_host: Option<String>,
    /// Base URL of short links.
    #[arg(long = "public-url", env = "SLUICE_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
}

/// A page of a list.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Page number, from 1.
    #[arg(long, default_value = "1")]
    pub page: u32,
    /// Rows per page, 1-100.
    #[arg(long, default_value = "100", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub per_page: u32,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List hosts.
    List {
        /// Only the hosts of this user (id or user name).
        #[arg(long)]
        user: Option<String>,
        /// Only hosts in this status (pending, running, stopped, suspended, error, ...).
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Show one host (by id or short id).
    Show {
        host: String,
        #[command(flatten)]
        common: Common,
    },
    /// Create a host for a user; prints its SSH password once.
    Create {
        /// The owner: a user id or user name.
        #[arg(long)]
        user: String,
        /// Bind it to this egress (id or label) at once.
        #[arg(long)]
        egress: Option<String>,
        /// Memory limit in MiB, 64-65536.
        #[arg(long)]
        memory_mb: Option<i64>,
        /// CPU limit, 0.1-64.
        #[arg(long)]
        cpus: Option<f64>,
        /// Process limit, 32-65536.
        #[arg(long)]
        pids_limit: Option<i64>,
        /// Run the desktop image: a desktop opened in the browser, besides SSH.
        #[arg(long)]
        desktop: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Start a host.
    Start {
        host: String,
        #[command(flatten)]
        common: Common,
    },
    /// Stop a host.
    Stop {
        host: String,
        #[command(flatten)]
        common: Common,
    },
    /// Rebuild a host's container; the home survives unless --wipe-home.
    Rebuild {
        host: String,
        #[arg(long)]
        wipe_home: bool,
        /// Rebuild it into desktop mode (the desktop image).
        #[arg(long, conflicts_with = "no_desktop")]
        desktop: bool,
        /// Rebuild it out of desktop mode (the plain user image).
        #[arg(long)]
        no_desktop: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Stop a host and refuse starts and logins until it is unsuspended.
    Suspend {
        host: String,
        #[command(flatten)]
        common: Common,
    },
    /// Lift a suspension (the host becomes stopped).
    Unsuspend {
        host: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a host with its container and home.
    Delete {
        host: String,
        #[command(flatten)]
        common: Common,
    },
    /// Replace a host's SSH password; prints the new one once.
    RotateSshPassword {
        host: String,
        #[command(flatten)]
        common: Common,
    },
    /// Check a running host's egress from inside it, through its real path (connectivity,
    /// exit IP, DNS leak; asks the running server); exits 7 when a check fails.
    EgressCheck {
        host: String,
        #[command(flatten)]
        common: Common,
    },
    /// The last lines the host's container printed.
    Logs {
        host: String,
        /// How many lines, 1-1000.
        #[arg(long, default_value = "100")]
        tail: u32,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List user accounts.
    List {
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Show one account.
    Show {
        /// The account: its id or user name.
        user: String,
        #[command(flatten)]
        common: Common,
    },
    /// Create an account; without --password-stdin a password is generated and printed once.
    Create {
        username: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        /// Expiry, RFC 3339.
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Disable an account: its logins stop and its sessions end.
    Disable {
        /// The account: its id or user name.
        user: String,
        #[command(flatten)]
        common: Common,
    },
    /// Enable a disabled account.
    Enable {
        /// The account: its id or user name.
        user: String,
        #[command(flatten)]
        common: Common,
    },
    /// Replace an account's password; prints the new one once.
    RotatePassword {
        /// The account: its id or user name.
        user: String,
        #[command(flatten)]
        common: Common,
    },
    /// Set or clear an account's expiry; past it, logins stop and its hosts are stopped.
    SetExpiry {
        /// The account: its id or user name.
        user: String,
        /// The new expiry, RFC 3339 (such as 2030-01-31T12:00:00Z).
        #[arg(long, conflicts_with = "never", required_unless_present = "never")]
        expires_at: Option<String>,
        /// No expiry.
        #[arg(long)]
        never: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Delete an account; its hosts are deleted by tasks.
    Delete {
        /// The account: its id or user name.
        user: String,
        #[command(flatten)]
        common: Common,
    },
    /// List an account's SSH public keys.
    Keys {
        /// The account: its id or user name.
        user: String,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Add an SSH public key (one OpenSSH line) to an account.
    AddKey {
        /// The account: its id or user name.
        user: String,
        /// The key line, such as `ssh-ed25519 AAAA... laptop`.
        public_key: String,
        /// A name for it (default: the key's comment).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Remove an SSH key from an account.
    DeleteKey {
        /// The account: its id or user name.
        user: String,
        key_id: Uuid,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum BindingCommand {
    /// Bind a host (id or short id) to an egress.
    Create {
        #[arg(long)]
        host: String,
        /// The egress: its id or label.
        #[arg(long)]
        egress: String,
        #[command(flatten)]
        common: Common,
    },
    /// Remove a binding: the host loses all outside traffic.
    Delete {
        id: Uuid,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// List tasks, newest first.
    List {
        /// queued, running, succeeded or failed.
        #[arg(long)]
        status: Option<String>,
        /// Only this host's tasks (id or short id).
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Show one task.
    Show {
        id: Uuid,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// List events, newest first.
    List {
        /// Only this action, such as `host.created`.
        #[arg(long)]
        action: Option<String>,
        /// Only events about this host (id or short id).
        #[arg(long)]
        host: Option<String>,
        /// Only events about this user (id, or the user name of an account that exists).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Print events as they happen, whichever process writes them (the server, the API, other
    /// commands), until interrupted; with --json one object per line.
    Follow {
        /// Only this action, such as `host.created`.
        #[arg(long)]
        action: Option<String>,
        /// Only events about this host (id or short id).
        #[arg(long)]
        host: Option<String>,
        /// Only events about this user (id, or the user name of an account that exists).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecordingCommand {
    /// List recordings, newest first.
    List {
        /// Only the recordings of this host (id or short id).
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Show one recording's record.
    Show {
        id: Uuid,
        #[command(flatten)]
        common: Common,
    },
    /// Write one ended recording's cast (asciicast v2, for `asciinema play`) to a file, or to
    /// stdout with `-`.
    Cast {
        id: Uuid,
        /// Where to write it (default: `<id>.cast` here; refuses to overwrite a file).
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List live SSH sessions.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// End a live session.
    End {
        id: Uuid,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum EgressCommand {
    /// List egresses (secrets masked).
    List {
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Show one egress (secrets masked).
    Show {
        /// The egress: its id or label.
        egress: String,
        #[command(flatten)]
        common: Common,
    },
    /// Add an egress from a JSON file shaped as the API's request (`-` reads stdin).
    Create {
        #[arg(long = "from", value_name = "FILE")]
        from: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Change an egress from a JSON file of the fields to replace (`-` reads stdin).
    Update {
        /// The egress: its id or label.
        egress: String,
        #[arg(long = "from", value_name = "FILE")]
        from: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Delete an egress (refused while hosts are bound to it).
    Delete {
        /// The egress: its id or label.
        egress: String,
        #[command(flatten)]
        common: Common,
    },
    /// Test an egress (connectivity, exit IP, DNS leak) through a data plane of its own in a
    /// throwaway namespace; exits 7 when a check fails. An egress carrying a running host is
    /// tested by the running server (asked through its control socket) in that host's session.
    Test {
        /// The egress: its id or label.
        egress: String,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        probe: crate::config::ProbeSettings,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the managed user image (from images/managed-user, compiled into this binary) if
    /// it is missing. Needs the base image debian:bookworm-slim (scripts/base-image.sh).
    Build {
        #[command(flatten)]
        store: StoreArgs,
        /// Build the desktop image too (images/managed-desktop, on the user image); otherwise
        /// it is built when the first desktop host is created.
        #[arg(long)]
        desktop: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once.
    Create(TokenCreate),
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Revoke a token by id, with every token it minted.
    Revoke {
        /// The token's id, as `token list` shows it.
        id: Uuid,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
pub struct TokenCreate {
    /// A name saying what the token is for.
    #[arg(long)]
    pub name: String,
    /// An ability such as `host:read`, or `*`; repeat for several.
    #[arg(long = "ability", required = true)]
    pub abilities: Vec<String>,
    /// Expiry, RFC 3339 (default: none).
    #[arg(long)]
    pub expires_at: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set a new password for the administrator and revoke its login tokens. Reads the new
    /// password from stdin with `--password-stdin`, otherwise generates and prints one.
    ResetPassword {
        /// The administrator's user name.
        #[arg(long, env = "ADMIN_USERNAME", default_value = "admin")]
        username: String,
        /// Read the new password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub store: StoreSettings,
}

/// The (TOML key, environment variable) pairs of `serve`'s settings, for `--config`.
pub fn config_keys() -> Vec<(String, String)> {
    let cmd = Cli::command();
    let Some(serve) = cmd.find_subcommand("serve") else {
        return vec![];
    };
    serve
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            let env = a.get_env()?.to_str()?;
            Some((long.replace('-', "_"), env.to_string()))
        })
        .chain(
            crate::config::SECRET_SETTINGS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .collect()
}

/// Reads one line of stdin (the terminal echo is the caller's concern).
pub fn read_stdin_line() -> std::io::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
