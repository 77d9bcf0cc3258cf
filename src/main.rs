//! The `sluice` binary: parses the command line and settings, sets up logging, and hands over
//! to the library.

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;

use sluice::cli::{AdminCommand, Cli, Command, ImageCommand, StoreArgs};
use sluice::config::{LogFormat, LogSettings, overlay_from_file};
use sluice::runtime::docker::DockerRuntime;
use sluice::store::Store;
use sluice::{app, runtime, store, users};

fn main() -> anyhow::Result<()> {
    let cli = parse_cli()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(run(cli));
    // Tasks still ending (an egress test's data plane) get a moment, not a veto: dropping the
    // runtime would wait for them, and an ipstack TCP stream's drop can block for good.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

/// Parses the command line; with `--config`, the file's settings are laid over the environment
/// and the command line parsed again, so clap validates every value the same way and names
/// the variable in its errors.
fn parse_cli() -> anyhow::Result<Cli> {
    let cli = Cli::parse();
    let Some(path) = cli.config.clone() else {
        return Ok(cli);
    };
    let overlay = overlay_from_file(&path, &sluice::cli::config_keys())?;
    for (var, value) in overlay {
        // SAFETY: called before any other thread exists (the async runtime starts later).
        unsafe { std::env::set_var(var, value) };
    }
    Ok(Cli::parse())
}

fn init_logging(log: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(mut settings) => {
            settings.read_secrets().map_err(anyhow::Error::msg)?;
            serve(*settings).await
        }
        Command::Doctor(mut settings) => {
            settings.read_secrets().map_err(anyhow::Error::msg)?;
            let checks = sluice::cli::doctor::run(&settings).await;
            let mut failed = false;
            for c in &checks {
                let mark = match c.verdict {
                    sluice::cli::doctor::Verdict::Ok => "ok  ",
                    sluice::cli::doctor::Verdict::Warn => "warn",
                    sluice::cli::doctor::Verdict::Fail => {
                        failed = true;
                        "FAIL"
                    }
                };
                println!("{mark}  {:<16} {}", c.name, c.found);
                if let Some(fix) = &c.fix {
                    println!("      {:<16} -> {fix}", "");
                }
            }
            if failed {
                std::process::exit(7);
            }
            Ok(())
        }
        Command::Image(ImageCommand::Build { store, desktop }) => {
            init_logging(&LogSettings {
                log_format: LogFormat::Text,
                log_level: "info".into(),
            });
            let runtime = DockerRuntime::new(&store.store.data_dir)?;
            let kind = runtime::image::Kind::of(desktop);
            let tag = runtime::image::tag(kind);
            if build_image(&runtime, kind).await? {
                eprintln!("Built {tag}.");
            } else {
                eprintln!("{tag} is already present.");
            }
            Ok(())
        }
        Command::Admin(AdminCommand::ResetPassword {
            username,
            password_stdin,
            store,
        }) => reset_password(&username, password_stdin, &store).await,
        // The operator's commands, on the domain layer; refusals become exit codes there.
        operator => {
            if let Err(e) = sluice::cli::run::run(operator).await {
                eprintln!("error: {}", e.explain());
                std::process::exit(e.exit_code());
            }
            Ok(())
        }
    }
}

async fn serve(settings: sluice::config::ServeSettings) -> anyhow::Result<()> {
    init_logging(&settings.log);
    raise_open_files_limit(u64::from(settings.http_max_connections));
    let runtime = Arc::new(
        DockerRuntime::new(&settings.store.data_dir).with_context(|| {
            format!(
                "cannot use data directory {} (SLUICE_DATA_DIR)",
                settings.store.data_dir.display()
            )
        })?,
    );
    // The managed image is built on the first start, with a progress display; without a
    // reachable engine Sluice still serves, and host tasks say what is missing.
    if let Err(e) = build_image(&runtime, runtime::image::Kind::User).await {
        tracing::error!(error = %e, "the managed image is not available; hosts cannot start until it is");
    }
    let running = app::start(&settings, runtime, None).await?;
    if let Some(pw) = &running.generated_admin_password
        && let Err(e) = show_admin_password(&settings, &running, pw)
    {
        tracing::error!(
            error = %e,
            "the generated admin password could not be shown; set a new one with \
             `sluice admin reset-password`"
        );
    }
    let stop = running.stop_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
    });
    running.wait().await;
    Ok(())
}

/// Descriptors a busy Sluice wants: each host's data plane, each SSH session (two sockets),
/// each HTTP connection. Below this, it says so at start.
const WANTED_OPEN_FILES: u64 = 65_536;

/// Raises the open-files soft limit to the hard limit, and says so when even that is low.
fn raise_open_files_limit(http_max_connections: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let now = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = hard, "raised the open-files limit");
                hard
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-files limit");
                soft
            }
        }
    } else {
        soft
    };
    if now < WANTED_OPEN_FILES || now < http_max_connections * 2 {
        tracing::warn!(
            limit = now,
            wanted = WANTED_OPEN_FILES.max(http_max_connections * 2),
            "the open-files limit is low for a busy Sluice: raise it (systemd: LimitNOFILE; \
             shell: ulimit -Hn), or lower SLUICE_HTTP_MAX_CONNECTIONS"
        );
    }
}

/// Shows the first start's generated admin password once: on the terminal when stdout is one,
/// otherwise in a 0600 file in the data dir whose path the log names. Never in a log line.
fn show_admin_password(
    settings: &sluice::config::ServeSettings,
    running: &app::Running,
    password: &str,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let name = &settings.admin_username;
    let dashboard = if running.addr.ip().is_unspecified() {
        format!("http://localhost:{}", running.addr.port())
    } else {
        format!("http://{}", running.addr)
    };
    if std::io::stdout().is_terminal() {
        println!(
            "Administrator account `{name}` created with password: {password}\n\
             It is shown only this once; change it with `sluice admin reset-password`.\n\
             Dashboard: {dashboard}/  (sign in as `{name}`)\n\
             API: {dashboard}/v1  (reference: {dashboard}/docs)"
        );
        return Ok(());
    }
    let path = std::path::absolute(&settings.store.data_dir)?.join(app::ADMIN_PASSWORD_FILE);
    sluice::keys::replace_private_file(&path, format!("{password}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(
        file = %path.display(),
        username = %name,
        dashboard = %format!("{dashboard}/"),
        "administrator account created; its generated password is in this file (mode 0600): \
         read it, sign in to the dashboard, then delete the file"
    );
    Ok(())
}

/// Builds a managed image if missing (the user image under a desktop image first), showing the
/// build's steps: a progress bar on a terminal, log lines otherwise.
async fn build_image(
    runtime: &DockerRuntime,
    kind: runtime::image::Kind,
) -> Result<bool, runtime::RuntimeError> {
    use indicatif::{ProgressBar, ProgressStyle};
    use std::io::IsTerminal;
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(1);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} building {prefix} [{bar:30}] {pos}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_prefix(runtime::image::tag(kind));
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    let result = runtime
        .ensure_image(kind, |k, ev| match (&bar, ev) {
            (
                Some(b),
                runtime::image::BuildEvent::Step {
                    n,
                    total,
                    instruction,
                },
            ) => {
                b.set_prefix(runtime::image::tag(k));
                b.set_length(u64::from(total));
                b.set_position(u64::from(n));
                b.set_message(instruction);
            }
            (Some(b), runtime::image::BuildEvent::Output(line)) => {
                b.set_message(line.chars().take(100).collect::<String>());
            }
            (
                None,
                runtime::image::BuildEvent::Step {
                    n,
                    total,
                    instruction,
                },
            ) => {
                tracing::info!(
                    "building {}: step {n}/{total}: {instruction}",
                    runtime::image::tag(k)
                );
            }
            (None, runtime::image::BuildEvent::Output(_)) => {}
        })
        .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Ok(true) = result {
        tracing::info!(image = %runtime::image::tag(kind), "managed image built");
    }
    result
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

async fn open_store(args: &StoreArgs) -> anyhow::Result<Store> {
    sluice::cli::run::require_data_dir(&args.store.data_dir)?;
    let url = args.store.effective_database_url();
    let keys = sluice::keys::Keyring::open(&args.store.data_dir)
        .context("cannot open the sealing keys")?;
    Store::connect(&url, std::sync::Arc::new(keys))
        .await
        .with_context(|| format!("cannot open the database {}", store::redact_url(&url)))
}

async fn reset_password(username: &str, from_stdin: bool, args: &StoreArgs) -> anyhow::Result<()> {
    let (password, generated) = if from_stdin {
        let p = sluice::cli::read_stdin_line().context("cannot read the password from stdin")?;
        users::validate_password(&p).map_err(|m| anyhow::anyhow!("password from stdin {m}"))?;
        (p, false)
    } else {
        (users::generate_password(), true)
    };
    let store = open_store(args).await?;
    if !app::reset_admin_password(&store, username, &password).await? {
        bail!("no administrator named `{username}` (set --username or ADMIN_USERNAME)");
    }
    if generated {
        println!("{password}");
        eprintln!("New password for `{username}` printed above; it is shown only this once.");
    } else {
        eprintln!("Password for `{username}` changed.");
    }
    Ok(())
}
