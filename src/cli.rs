//! CLI: the `sluice` command line. `serve` runs the control plane; the other commands act on
//! the same database directly, for the operator at the machine (tokens, admin password).

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use uuid::Uuid;

use crate::config::{ServeSettings, StoreSettings};

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
                           (default: generated into jwt_secret (0600) in the data directory)";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: HTTP API, task worker and housekeeping.
    #[command(after_help = SECRETS_HELP)]
    Serve(Box<ServeSettings>),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Administrator account maintenance.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The managed user image.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Egress operations.
    #[command(subcommand)]
    Egress(EgressCommand),
}

#[derive(Debug, Subcommand)]
pub enum EgressCommand {
    /// Test an egress (connectivity, exit IP, DNS leak) through a data plane of its own in a
    /// throwaway namespace. Prints the report as JSON; exits 1 when a check fails. An egress
    /// carrying a running host is tested through the API instead, which uses that host's
    /// session.
    Test {
        /// The egress's id.
        id: Uuid,
        #[command(flatten)]
        store: StoreArgs,
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
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once.
    Create(TokenCreate),
    /// List tokens (never their secrets).
    List(StoreArgs),
    /// Revoke a token by id.
    Revoke {
        /// The token's id, as `token list` shows it.
        id: Uuid,
        #[command(flatten)]
        store: StoreArgs,
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
    pub store: StoreArgs,
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
