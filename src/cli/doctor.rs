//! `sluice doctor`: checks, with the settings `sluice serve` would use, everything an install
//! needs from its machine (Docker, the base and managed images, TUN, the data directory and
//! its key files, the database, the ports, the open-files limit, the TLS files, the clock) and
//! says what to do about each failure. Exit 7 when something fails; warnings alone pass.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::ServeSettings;
use crate::runtime::HostRuntime;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::image;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One check: what was looked at, what was found, and what to do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub found: String,
    /// What to do, for a warning or a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(name: &'static str, found: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Verdict::Ok,
        found: found.into(),
        fix: None,
    }
}

fn bad(
    name: &'static str,
    verdict: Verdict,
    found: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        name,
        verdict,
        found: found.into(),
        fix: Some(fix.into()),
    }
}

/// Runs every check.
pub async fn run(settings: &ServeSettings) -> Vec<Check> {
    let data_dir = &settings.store.data_dir;
    let mut checks = vec![data_dir_check(data_dir)];
    checks.extend(key_file_checks(data_dir));
    let server_running = server_running(data_dir);
    checks.extend(docker_checks(settings.store.host_uids).await);
    checks.push(host_uids_check(settings.store.host_uids));
    checks.push(tun_check());
    checks.push(redirect_check());
    checks.push(database_check(settings).await);
    checks.push(port_check("http port", settings.http_addr, server_running));
    checks.push(port_check(
        "ssh proxy port",
        SocketAddr::new(settings.ssh.listen_ip, settings.ssh_proxy_port),
        server_running,
    ));
    checks.push(open_files_check(u64::from(settings.http_max_connections)));
    checks.push(tls_check(settings));
    checks.push(clock_check());
    checks
}

fn data_dir_check(dir: &Path) -> Check {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const NAME: &str = "data directory";
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ok(
            NAME,
            format!(
                "{} does not exist yet; the first start makes it (0700)",
                dir.display()
            ),
        ),
        Err(e) => bad(
            NAME,
            Verdict::Fail,
            format!("{}: {e}", dir.display()),
            "make it readable by the user Sluice runs as, or set SLUICE_DATA_DIR",
        ),
        Ok(m) if !m.is_dir() => bad(
            NAME,
            Verdict::Fail,
            format!("{} is not a directory", dir.display()),
            "point SLUICE_DATA_DIR at a directory",
        ),
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if m.uid() != nix::unistd::geteuid().as_raw() {
                bad(
                    NAME,
                    Verdict::Fail,
                    format!(
                        "{} belongs to uid {}, not to this user",
                        dir.display(),
                        m.uid()
                    ),
                    format!("chown -R $(id -u) {}", dir.display()),
                )
            } else if mode & 0o077 != 0 {
                bad(
                    NAME,
                    Verdict::Warn,
                    format!("{} is mode {mode:o}: others can look inside", dir.display()),
                    format!("chmod 700 {}", dir.display()),
                )
            } else {
                ok(NAME, format!("{} (mode {mode:o})", dir.display()))
            }
        }
    }
}

fn key_file_checks(dir: &Path) -> Vec<Check> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = vec![];
    for (name, file, env) in [
        (
            "sealing keys",
            crate::keys::sealing::FILE,
            Some(crate::keys::sealing::ENV),
        ),
        (
            "jwt secret",
            crate::keys::jwt::FILE,
            Some("ADMIN_JWT_SECRET"),
        ),
    ] {
        let path = dir.join(file);
        if env.is_some_and(|v| std::env::var(v).is_ok_and(|v| !v.is_empty())) {
            out.push(ok(name, format!("given by {}", env.unwrap_or_default())));
            continue;
        }
        out.push(match std::fs::metadata(&path) {
            Err(_) => ok(
                name,
                format!(
                    "{} does not exist yet; the first start makes it (0600)",
                    path.display()
                ),
            ),
            Ok(m) if m.permissions().mode() & 0o077 != 0 => bad(
                name,
                Verdict::Fail,
                format!(
                    "{} is mode {:o}: others can read it",
                    path.display(),
                    m.permissions().mode() & 0o777
                ),
                format!("chmod 600 {}", path.display()),
            ),
            Ok(_) => ok(name, format!("{} (0600)", path.display())),
        });
    }
    // The sealing keys must open: a damaged file makes every egress unusable. (Only a
    // private file is opened: opening one that is not would change its mode.)
    let sealing = dir.join(crate::keys::sealing::FILE);
    let private = std::fs::metadata(&sealing).is_ok_and(|m| m.permissions().mode() & 0o077 == 0);
    if (std::env::var(crate::keys::sealing::ENV).is_ok_and(|v| !v.is_empty()) || private)
        && let Err(e) = crate::keys::Keyring::open(dir)
    {
        out.push(bad(
            "sealing keys",
            Verdict::Fail,
            e.to_string(),
            "restore sealing.keys (or SLUICE_SEALING_KEYS) from where you keep it apart from the backups",
        ));
    }
    out
}

/// Whether a `sluice serve` holds the data directory (its ports are then in use by it).
pub(crate) fn server_running(dir: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .open(dir.join("lock"))
    else {
        return false;
    };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock).is_err()
}

/// Whether the machine's own accounts leave `SLUICE_HOST_UIDS` to Sluice: an account of the
/// machine in it would share per-user budgets with a tenant and could signal their processes.
fn host_uids_check(range: crate::hosts::account::UidRange) -> Check {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let inside: Vec<String> = passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid: u32 = f.nth(1)?.parse().ok()?;
            range.contains(uid).then(|| format!("{name} ({uid})"))
        })
        .collect();
    if inside.is_empty() {
        ok(
            "host uids",
            format!(
                "{range}: no account of this machine is in it ({} hosts at most)",
                range.len()
            ),
        )
    } else {
        bad(
            "host uids",
            Verdict::Warn,
            format!("accounts of this machine in {range}: {}", inside.join(", ")),
            "set SLUICE_HOST_UIDS to a range no account of the machine uses",
        )
    }
}

async fn docker_checks(host_uids: crate::hosts::account::UidRange) -> Vec<Check> {
    let fix = "install and start a Docker engine (scripts/ensure-docker.sh does), and run Sluice as root or in the docker group";
    let runtime = DockerRuntime::observer();
    let status = runtime.status().await;
    if !status.reachable {
        return vec![bad(
            "docker",
            Verdict::Fail,
            status
                .error
                .unwrap_or_else(|| "the engine does not answer".into()),
            fix,
        )];
    }
    let mut out = vec![ok(
        "docker",
        format!("engine {}", status.version.unwrap_or_default()),
    )];
    out.push(match runtime.remap().await {
        Ok(None) => ok(
            "user namespaces",
            "not remapped: a container's root is the machine's root (each host's account still has a uid of its own)",
        ),
        Ok(Some(m)) if m.maps(host_uids.last) => ok(
            "user namespaces",
            format!(
                "remapped (userns-remap=default): a container's uid N is the machine's {} + N; a container's root is unprivileged on the machine",
                m.uid_base
            ),
        ),
        Ok(Some(m)) => bad(
            "user namespaces",
            Verdict::Fail,
            format!(
                "remapped with {} uids, but SLUICE_HOST_UIDS ({host_uids}) reaches past them",
                m.size
            ),
            format!("give SLUICE_HOST_UIDS a range below {}", m.size),
        ),
        Err(e) => bad(
            "user namespaces",
            Verdict::Fail,
            e.summary(),
            "run the engine with --userns-remap=default, or without remapping",
        ),
    });
    if let Ok(docker) = runtime.docker().await {
        out.push(match image::exists(docker, image::BASE_IMAGE).await {
            Ok(true) => ok("base image", image::BASE_IMAGE),
            Ok(false) => bad(
                "base image",
                Verdict::Fail,
                format!(
                    "{} is missing and no registry may be reachable",
                    image::BASE_IMAGE
                ),
                "run scripts/base-image.sh (debootstrap + docker import)",
            ),
            Err(e) => bad("base image", Verdict::Fail, e.to_string(), fix),
        });
    }
    for img in status.images {
        let name = match img.kind {
            image::Kind::User => "managed image",
            image::Kind::Desktop => "desktop image",
        };
        out.push(match (img.present, img.kind) {
            (true, _) => ok(
                name,
                format!(
                    "{} ({} MB)",
                    img.tag,
                    img.size_bytes.unwrap_or(0) / 1_000_000
                ),
            ),
            (false, image::Kind::User) => bad(
                name,
                Verdict::Warn,
                format!("{} is not built", img.tag),
                "sluice image build (serve builds it on first start, with progress)",
            ),
            (false, image::Kind::Desktop) => ok(
                name,
                format!(
                    "{} not built; made on the first desktop host, or sluice image build --desktop",
                    img.tag
                ),
            ),
        });
    }
    out
}

fn tun_check() -> Check {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => ok("tun", "/dev/net/tun opens"),
        Err(e) => bad(
            "tun",
            Verdict::Fail,
            format!("/dev/net/tun: {e}"),
            "load the tun module (modprobe tun); in a container, pass --device /dev/net/tun and CAP_NET_ADMIN",
        ),
    }
}

/// Proxy egress TCP runs on the kernel's stack when Sluice can write the redirect rule.
fn redirect_check() -> Check {
    if crate::egress::proxy::redirect::available() {
        ok(
            "proxy redirect",
            "iptables-restore runs: proxy egress TCP goes through the kernel's stack",
        )
    } else {
        bad(
            "proxy redirect",
            Verdict::Warn,
            "iptables-restore is missing: proxy egress TCP runs on the slower userspace stack",
            "install iptables (apt-get install iptables)",
        )
    }
}

async fn database_check(settings: &ServeSettings) -> Check {
    let url = settings.store.effective_database_url();
    let shown = crate::store::redact_url(&url);
    match crate::store::Store::probe(&url).await {
        Ok(None) => ok("database", format!("{shown} is made on the first start")),
        Ok(Some(pending)) if pending > 0 => ok(
            "database",
            format!("{shown} answers; the next start applies {pending} migrations"),
        ),
        Ok(Some(_)) => ok("database", format!("{shown} answers, schema current")),
        Err(e) => bad(
            "database",
            Verdict::Fail,
            format!("{shown}: {e}"),
            "check DATABASE_URL (sqlite://PATH or postgres://USER:PASS@HOST/DB) and that the server is up",
        ),
    }
}

fn port_check(name: &'static str, addr: SocketAddr, server_running: bool) -> Check {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => ok(name, format!("{addr} is free")),
        Err(_) if server_running => ok(name, format!("{addr} is held by the running sluice serve")),
        Err(e) => bad(
            name,
            Verdict::Fail,
            format!("{addr}: {e}"),
            "stop what listens there (ss -ltnp), or choose another address (HTTP_ADDR, SSH_PROXY_ADDR/SSH_PROXY_PORT)",
        ),
    }
}

fn open_files_check(http_max_connections: u64) -> Check {
    use nix::sys::resource::{Resource, getrlimit};
    let wanted = 65_536u64.max(http_max_connections * 2);
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) if hard >= wanted => ok(
            "open files",
            format!("hard limit {hard} (serve raises its soft limit to it)"),
        ),
        Ok((_, hard)) => bad(
            "open files",
            Verdict::Warn,
            format!("hard limit {hard}, below {wanted}"),
            "raise it: systemd LimitNOFILE=1048576 (deploy/sluice.service has it), or ulimit -Hn; or lower SLUICE_HTTP_MAX_CONNECTIONS",
        ),
        Err(e) => bad(
            "open files",
            Verdict::Warn,
            e.to_string(),
            "check ulimit -n",
        ),
    }
}

fn tls_check(settings: &ServeSettings) -> Check {
    match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => match crate::api::tls::Tls::load(cert, key) {
            Ok(_) => ok("tls", format!("{} and its key load", cert.display())),
            Err(e) => bad(
                "tls",
                Verdict::Fail,
                e.to_string(),
                "give SLUICE_TLS_CERT the full chain (PEM) and SLUICE_TLS_KEY its private key",
            ),
        },
        _ if settings.trusted_proxies.is_empty() => bad(
            "tls",
            Verdict::Warn,
            "plain http: logins and one-time passwords cross the network unencrypted",
            "set SLUICE_TLS_CERT and SLUICE_TLS_KEY, or serve behind a TLS proxy listed in SLUICE_TRUSTED_PROXIES (README: HTTPS)",
        ),
        _ => ok("tls", "behind the trusted proxies, which terminate TLS"),
    }
}

/// Whether the kernel's clock is disciplined (NTP): VMess refuses requests whose time is more
/// than two minutes from the server's.
fn clock_check() -> Check {
    // SAFETY: adjtimex with modes 0 only reads the kernel's clock state into `tx`.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0 {
        bad(
            "clock",
            Verdict::Warn,
            format!("not synchronized (UTC now {})", crate::clock::now()),
            "run an NTP client (systemd-timesyncd, chrony): VMess egresses fail when the clock is off by more than two minutes",
        )
    } else {
        ok(
            "clock",
            format!("synchronized, error estimate {} µs", tx.esterror),
        )
    }
}
