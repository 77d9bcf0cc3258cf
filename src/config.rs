//! Settings: every knob of `sluice serve`, read from the environment and command-line flags
//! through clap (so `--help` lists each with its variable and default), optionally overlaid
//! by a TOML file given with `--config`.
//!
//! Precedence, highest first: command-line flag, `--config` file, environment, default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

/// Where Sluice keeps its state.
#[derive(Debug, Clone, Args)]
pub struct StoreSettings {
    /// Directory for Sluice's own files: the SQLite database, the JWT secret, host keys.
    #[arg(
        long = "data-dir",
        env = "SLUICE_DATA_DIR",
        value_name = "SLUICE_DATA_DIR",
        default_value = "./data",
        value_parser = parse_dir
    )]
    pub data_dir: PathBuf,

    /// The uids (FIRST-LAST) Sluice gives hosts' accounts, one each, unique on the machine:
    /// keep it clear of the machine's own accounts and of any other install on this machine.
    /// Under a Docker daemon with `userns-remap` it must end below its subordinate range's size.
    #[arg(
        long = "host-uids",
        env = "SLUICE_HOST_UIDS",
        value_name = "SLUICE_HOST_UIDS",
        default_value = "20000-59999"
    )]
    pub host_uids: crate::hosts::account::UidRange,

    /// Database URL: `sqlite://PATH` or `postgres://USER:PASS@HOST/DB`. It may carry a
    /// password, so it is read from `DATABASE_URL` (or the `--config` file), never from a flag
    /// (flags show in `ps`). Default: `sluice.db` in the data directory.
    #[arg(skip)]
    pub database_url: Option<String>,
}

/// Settings that carry secrets: read from the environment (or the `--config` file, which
/// sets the environment), never from command-line flags, which any local user sees in `ps`.
/// (name in the TOML file, environment variable)
pub const SECRET_SETTINGS: &[(&str, &str)] = &[
    ("database_url", "DATABASE_URL"),
    ("admin_password", "ADMIN_PASSWORD"),
    ("admin_jwt_secret", "ADMIN_JWT_SECRET"),
    ("sealing_keys", "SLUICE_SEALING_KEYS"),
];

fn secret_from_env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

impl StoreSettings {
    /// The database URL in effect: the configured one (`DATABASE_URL`), or the SQLite file in
    /// the data dir.
    pub fn effective_database_url(&self) -> String {
        match self
            .database_url
            .clone()
            .or_else(|| secret_from_env("DATABASE_URL"))
        {
            Some(url) => url,
            None => format!("sqlite://{}", self.data_dir.join("sluice.db").display()),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `sluice serve` can be told.
#[derive(Debug, Clone, Args)]
pub struct ServeSettings {
    /// Address the HTTP API listens on.
    #[arg(
        long = "http-addr",
        env = "HTTP_ADDR",
        value_name = "HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,

    /// Most HTTP connections open at once (beyond it, new ones wait in the kernel's backlog).
    #[arg(
        long = "http-max-connections",
        env = "SLUICE_HTTP_MAX_CONNECTIONS",
        value_name = "SLUICE_HTTP_MAX_CONNECTIONS",
        default_value = "4096",
        value_parser = clap::value_parser!(u32).range(16..=1_000_000)
    )]
    pub http_max_connections: u32,

    /// Seconds a client has to send a request's headers; also the longest an HTTP keep-alive
    /// connection may sit idle.
    #[arg(
        long = "http-header-timeout",
        env = "SLUICE_HTTP_HEADER_TIMEOUT",
        value_name = "SLUICE_HTTP_HEADER_TIMEOUT",
        default_value = "10",
        value_parser = clap::value_parser!(u64).range(1..=300)
    )]
    pub http_header_timeout_secs: u64,

    /// Seconds a client may leave what Sluice sends it unread (a stalled download or event
    /// stream) before its connection is closed.
    #[arg(
        long = "http-write-timeout",
        env = "SLUICE_HTTP_WRITE_TIMEOUT",
        value_name = "SLUICE_HTTP_WRITE_TIMEOUT",
        default_value = "30",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub http_write_timeout_secs: u64,

    #[command(flatten)]
    pub store: StoreSettings,

    /// User name of the administrator account, created on first start.
    #[arg(
        long = "admin-username",
        env = "ADMIN_USERNAME",
        value_name = "ADMIN_USERNAME",
        default_value = "admin",
        value_parser = parse_username
    )]
    pub admin_username: String,

    /// Password of the administrator account on first start (`ADMIN_PASSWORD`, environment
    /// or config file only). If unset, one is generated and shown once; only its hash is
    /// stored.
    #[arg(skip)]
    pub admin_password: Option<String>,

    /// Secret that signs login tokens (HS256), at least 32 characters (`ADMIN_JWT_SECRET`,
    /// environment or config file only). If unset, one is generated and kept in the data
    /// directory (mode 0600).
    #[arg(skip)]
    pub admin_jwt_secret: Option<String>,

    /// Port of the SSH proxy, shown in access commands.
    #[arg(
        long = "ssh-proxy-port",
        env = "SSH_PROXY_PORT",
        value_name = "SSH_PROXY_PORT",
        default_value = "2222"
    )]
    pub ssh_proxy_port: u16,

    #[command(flatten)]
    pub ssh: SshSettings,

    /// Host name used in access commands. Default: the request's Host header without port.
    #[arg(
        long = "public-host",
        env = "SLUICE_PUBLIC_HOST",
        value_name = "SLUICE_PUBLIC_HOST",
        value_parser = parse_public_host
    )]
    pub public_host: Option<String>,

    /// Base URL of the web API as users reach it, for short links (e.g.
    /// `https://sluice.example.com`). Default: `http://` and the request's Host header.
    #[arg(
        long = "public-url",
        env = "SLUICE_PUBLIC_URL",
        value_name = "SLUICE_PUBLIC_URL",
        value_parser = parse_public_url
    )]
    pub public_url: Option<String>,

    /// PEM file with the certificate chain to serve HTTPS with (with `SLUICE_TLS_KEY`).
    /// Reloaded on SIGHUP and when the file changes.
    #[arg(
        long = "tls-cert",
        env = "SLUICE_TLS_CERT",
        value_name = "SLUICE_TLS_CERT",
        requires = "tls_key",
        value_parser = parse_file
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key of `SLUICE_TLS_CERT`.
    #[arg(
        long = "tls-key",
        env = "SLUICE_TLS_KEY",
        value_name = "SLUICE_TLS_KEY",
        requires = "tls_cert",
        value_parser = parse_file
    )]
    pub tls_key: Option<PathBuf>,

    /// Reverse proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed,
    /// comma-separated addresses or CIDRs. Nobody's by default, loopback included.
    #[arg(
        long = "trusted-proxies",
        env = "SLUICE_TRUSTED_PROXIES",
        value_name = "SLUICE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = crate::api::client::parse_trusted
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// A second address serving only `/metrics`, without credentials (keep it private). On
    /// the API's address `/metrics` takes a token with `metrics:read`.
    #[arg(
        long = "metrics-addr",
        env = "SLUICE_METRICS_ADDR",
        value_name = "SLUICE_METRICS_ADDR"
    )]
    pub metrics_addr: Option<SocketAddr>,

    /// Requests per minute allowed to one credential (or one source address when anonymous).
    #[arg(
        long = "api-rate-limit",
        env = "SLUICE_API_RATE_LIMIT",
        value_name = "SLUICE_API_RATE_LIMIT",
        default_value = "120",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub api_rate_limit: u32,

    #[command(flatten)]
    pub probe: ProbeSettings,

    #[command(flatten)]
    pub log: LogSettings,
}

impl ServeSettings {
    /// Reads the secret settings from the environment, checking each; the error names the
    /// variable.
    pub fn read_secrets(&mut self) -> Result<(), String> {
        // DATABASE_URL needs no check here: `effective_database_url` reads it for every command.
        if self.admin_password.is_none()
            && let Some(p) = secret_from_env("ADMIN_PASSWORD")
        {
            parse_password(&p).map_err(|e| format!("ADMIN_PASSWORD: {e}"))?;
            self.admin_password = Some(p);
        }
        if self.admin_jwt_secret.is_none()
            && let Some(s) = secret_from_env("ADMIN_JWT_SECRET")
        {
            parse_jwt_secret(&s).map_err(|e| format!("ADMIN_JWT_SECRET: {e}"))?;
            self.admin_jwt_secret = Some(s);
        }
        Ok(())
    }
}

/// How the SSH proxy treats connections.
#[derive(Debug, Clone, Args)]
pub struct SshSettings {
    /// Address the SSH proxy binds (its port is SSH_PROXY_PORT).
    #[arg(
        long = "ssh-proxy-addr",
        env = "SSH_PROXY_ADDR",
        value_name = "SSH_PROXY_ADDR",
        default_value = "0.0.0.0"
    )]
    pub listen_ip: std::net::IpAddr,

    /// Seconds a client has to connect and log in.
    #[arg(
        long = "ssh-handshake-timeout",
        env = "SLUICE_SSH_HANDSHAKE_TIMEOUT",
        value_name = "SLUICE_SSH_HANDSHAKE_TIMEOUT",
        default_value = "30",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub handshake_timeout_secs: u64,

    /// Seconds without traffic on any channel after which a session is ended (0: never).
    #[arg(
        long = "ssh-idle-timeout",
        env = "SLUICE_SSH_IDLE_TIMEOUT",
        value_name = "SLUICE_SSH_IDLE_TIMEOUT",
        default_value = "3600"
    )]
    pub idle_timeout_secs: u64,

    /// Longest a session may last, in seconds (0: no limit).
    #[arg(
        long = "ssh-max-session",
        env = "SLUICE_SSH_MAX_SESSION",
        value_name = "SLUICE_SSH_MAX_SESSION",
        default_value = "86400"
    )]
    pub max_session_secs: u64,

    /// Simultaneous connections allowed from one source address.
    #[arg(
        long = "ssh-max-connections-per-source",
        env = "SLUICE_SSH_MAX_CONNECTIONS_PER_SOURCE",
        value_name = "SLUICE_SSH_MAX_CONNECTIONS_PER_SOURCE",
        default_value = "64",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections_per_source: u32,

    /// Live SSH sessions one account may have at once (a login beyond is refused, saying so).
    #[arg(
        long = "ssh-max-sessions-per-account",
        env = "SLUICE_SSH_MAX_SESSIONS_PER_ACCOUNT",
        value_name = "SLUICE_SSH_MAX_SESSIONS_PER_ACCOUNT",
        default_value = "64",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_sessions_per_account: u32,

    /// Channels (shells, commands, `-L`, `-R` and agent connections) one SSH connection may
    /// have open at once; an open beyond is refused, saying why.
    #[arg(
        long = "ssh-max-channels",
        env = "SLUICE_SSH_MAX_CHANNELS",
        value_name = "SLUICE_SSH_MAX_CHANNELS",
        default_value = "32",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_channels: u32,

    /// Channels one account may have open at once across all its SSH connections. Each
    /// channel holds at most 256 KiB of unread data in Sluice, so this bounds what one account
    /// can make Sluice hold (64 MiB at the default).
    #[arg(
        long = "ssh-max-channels-per-account",
        env = "SLUICE_SSH_MAX_CHANNELS_PER_ACCOUNT",
        value_name = "SLUICE_SSH_MAX_CHANNELS_PER_ACCOUNT",
        default_value = "256",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_channels_per_account: u32,

    /// Whether users may forward their SSH agent into their host (`ssh -A`).
    #[arg(
        long = "ssh-agent-forwarding",
        env = "SLUICE_SSH_AGENT_FORWARDING",
        value_name = "SLUICE_SSH_AGENT_FORWARDING",
        default_value = "false",
        action = clap::ArgAction::Set
    )]
    pub agent_forwarding: bool,

    /// Record terminal sessions (SSH and the browser terminal) as asciicast v2.
    #[arg(
        long = "record-sessions",
        env = "SLUICE_RECORD_SESSIONS",
        value_name = "SLUICE_RECORD_SESSIONS",
        default_value = "false",
        action = clap::ArgAction::Set
    )]
    pub record_sessions: bool,

    /// Also record what users type (passwords typed at a prompt included).
    #[arg(
        long = "record-input",
        env = "SLUICE_RECORD_INPUT",
        value_name = "SLUICE_RECORD_INPUT",
        default_value = "false",
        action = clap::ArgAction::Set
    )]
    pub record_input: bool,

    /// Days a recording is kept after it ends.
    #[arg(
        long = "recording-retention-days",
        env = "SLUICE_RECORDING_RETENTION_DAYS",
        value_name = "SLUICE_RECORDING_RETENTION_DAYS",
        default_value = "30",
        value_parser = clap::value_parser!(u32).range(1..=3650)
    )]
    pub recording_retention_days: u32,

    /// Mebibytes of cast (uncompressed) a recording stops at; the session goes on unrecorded
    /// and the recording is marked truncated.
    #[arg(
        long = "recording-max-mb",
        env = "SLUICE_RECORDING_MAX_MB",
        value_name = "SLUICE_RECORDING_MAX_MB",
        default_value = "256",
        value_parser = clap::value_parser!(u64).range(1..=1_048_576)
    )]
    pub recording_max_mb: u64,

    /// Mebibytes on disk all ended recordings may take; past it, the ones that ended first are
    /// removed (each an event), before their retention.
    #[arg(
        long = "recordings-disk-budget-mb",
        env = "SLUICE_RECORDINGS_DISK_BUDGET_MB",
        value_name = "SLUICE_RECORDINGS_DISK_BUDGET_MB",
        default_value = "10240",
        value_parser = clap::value_parser!(u64).range(1..=1_073_741_824)
    )]
    pub recordings_disk_budget_mb: u64,
}

impl SshSettings {
    fn secs(n: u64) -> Option<std::time::Duration> {
        (n > 0).then(|| std::time::Duration::from_secs(n))
    }
    pub fn handshake_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.handshake_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        Self::secs(self.idle_timeout_secs)
    }
    pub fn max_session(&self) -> Option<std::time::Duration> {
        Self::secs(self.max_session_secs)
    }
}

/// What the egress checks probe.
#[derive(Debug, Clone, Args)]
pub struct ProbeSettings {
    /// URL fetched by the egress test's connectivity check (http://).
    #[arg(
        long = "probe-url",
        env = "SLUICE_PROBE_URL",
        value_name = "SLUICE_PROBE_URL",
        default_value = "http://api.ipify.org/",
        value_parser = parse_http_url
    )]
    pub probe_url: String,

    /// IP echo services for the exit-IP check, comma-separated (http://).
    #[arg(
        long = "probe-ip-urls",
        env = "SLUICE_PROBE_IP_URLS",
        value_name = "SLUICE_PROBE_IP_URLS",
        default_value = "http://api.ipify.org/,http://ifconfig.me/ip",
        value_delimiter = ',',
        value_parser = parse_http_url
    )]
    pub probe_ip_urls: Vec<String>,

    /// Whoami name for the DNS-leak check (answered with the resolver's address); a leading
    /// `*.` is replaced by a random label per test.
    #[arg(
        long = "probe-dns-name",
        env = "SLUICE_PROBE_DNS_NAME",
        value_name = "SLUICE_PROBE_DNS_NAME",
        default_value = "o-o.myaddr.l.google.com"
    )]
    pub probe_dns_name: String,
}

impl ProbeSettings {
    /// The targets of the egress checks.
    pub fn targets(&self) -> crate::probe::Targets {
        crate::probe::Targets {
            url: self.probe_url.clone(),
            ip_urls: self.probe_ip_urls.clone(),
            dns_name: self.probe_dns_name.clone(),
        }
    }
}

fn parse_http_url(s: &str) -> Result<String, String> {
    match s.trim().strip_prefix("http://") {
        Some(rest) if !rest.is_empty() => Ok(s.trim().to_string()),
        _ => Err("expected an http:// URL".into()),
    }
}

/// How Sluice logs.
#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// Log format: text or json.
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log level or filter, e.g. `info` or `sluice=debug,tower_http=info`.
    #[arg(
        long = "log-level",
        env = "LOG_LEVEL",
        value_name = "LOG_LEVEL",
        default_value = "info",
        value_parser = parse_log_level
    )]
    pub log_level: String,
}

/// A directory setting, made absolute against the working directory once, at start: Docker
/// refuses relative bind-mount sources, and nothing later should depend on the cwd.
fn parse_dir(s: &str) -> Result<PathBuf, String> {
    absolute(s, "a directory path")
}

/// A file setting, made absolute like a directory.
fn parse_file(s: &str) -> Result<PathBuf, String> {
    absolute(s, "a file path")
}

fn absolute(s: &str, expected: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err(format!("expected {expected}"));
    }
    std::path::absolute(s).map_err(|e| format!("cannot resolve against the working directory: {e}"))
}

fn parse_username(s: &str) -> Result<String, String> {
    crate::users::validate_username(s).map(|_| s.to_string())
}

fn parse_password(s: &str) -> Result<String, String> {
    crate::users::validate_password(s).map(|_| s.to_string())
}

fn parse_jwt_secret(s: &str) -> Result<String, String> {
    if s.len() < 32 {
        return Err("expected at least 32 characters".into());
    }
    Ok(s.to_string())
}

fn parse_public_host(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if ok {
        Ok(s.to_string())
    } else {
        Err("expected a host name or IP address, without scheme or path".into())
    }
}

fn parse_public_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or("expected an http:// or https:// URL")?;
    let ok = !rest.is_empty()
        && rest.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '/' | '_')
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err("expected a URL such as https://sluice.example.com".into())
    }
}

fn parse_log_level(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("expected a level (error, warn, info, debug, trace) or filter: {e}"))
}

/// A problem with the configuration, naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: unknown setting `{key}` (known: {known})")]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("config file {path}: `{key}` must be a string, number or boolean")]
    BadValue { path: PathBuf, key: String },
}

/// Reads a TOML config file and maps each key to the environment variable that carries the
/// same setting. Keys are the flag names with `_` for `-` (for example `http_addr`).
///
/// `settings` is the list of (key, variable) pairs that the serve command knows.
pub fn overlay_from_file(
    path: &Path,
    settings: &[(String, String)],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let Some((_, var)) = settings.iter().find(|(k, _)| *k == key) else {
            let known = settings
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key,
                known,
            });
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError::BadValue {
                    path: path.to_path_buf(),
                    key,
                });
            }
        };
        out.insert(var.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_data_dir_becomes_absolute_against_the_working_directory() {
        let got = parse_dir("./data").unwrap();
        assert!(got.is_absolute(), "{}", got.display());
        assert_eq!(got, std::env::current_dir().unwrap().join("data"));
        assert_eq!(
            parse_dir("/var/lib/sluice").unwrap(),
            PathBuf::from("/var/lib/sluice")
        );
        assert!(parse_dir("").is_err());
    }

    #[test]
    fn file_keys_map_to_variables_and_unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sluice.toml");
        std::fs::write(
            &p,
            "http_addr = \"127.0.0.1:9000\"\nssh_proxy_port = 2022\n",
        )
        .unwrap();
        let known = vec![
            ("http_addr".to_string(), "HTTP_ADDR".to_string()),
            ("ssh_proxy_port".to_string(), "SSH_PROXY_PORT".to_string()),
        ];
        let got = overlay_from_file(&p, &known).unwrap();
        assert_eq!(got["HTTP_ADDR"], "127.0.0.1:9000");
        assert_eq!(got["SSH_PROXY_PORT"], "2022");

        std::fs::write(&p, "htp_addr = \"x\"\n").unwrap();
        let err = overlay_from_file(&p, &known).unwrap_err().to_string();
        assert!(
            err.contains("htp_addr") && err.contains("http_addr"),
            "{err}"
        );
    }
}
