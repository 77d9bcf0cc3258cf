//! HTTPS as an operator sets it up: the real binary from an empty directory with
//! `SLUICE_TLS_CERT` and `SLUICE_TLS_KEY` from a test CA, driven with curl as a user's machine
//! would (the CA in curl's bundle, as a private CA would be in the system's). The short link
//! runs over https to a shell in a real host; a new pair is served after SIGHUP and after the
//! files change, a broken pair is refused while the old one goes on; plain http to the TLS
//! port gets nothing. Then the same install behind a reverse proxy: forwarded addresses and
//! schemes are believed from `SLUICE_TRUSTED_PROXIES` only, and the script warns before
//! asking for a password over plain http to another machine.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::{Cleanup, ensure_image};
use common::pty::Pty;
use serde_json::{Value, json};
use sluice::runtime::docker::DockerRuntime;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A P-256 private key in `path`.
fn genkey(path: &Path) {
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(path));
}

/// A test CA and leaf certificates it signs, made with openssl.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca_key = dir.join("ca.key");
        genkey(&ca_key);
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-new",
                "-days",
                "2",
                "-subj",
                "/CN=Sluice test CA",
                "-key",
            ])
            .arg(&ca_key)
            .arg("-out")
            .arg(dir.join("ca.pem")));
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A leaf for localhost and 127.0.0.1 named `cn`: (cert, key) paths.
    fn leaf(&self, cn: &str) -> (PathBuf, PathBuf) {
        let key = self.dir.join(format!("{cn}.key"));
        let csr = self.dir.join(format!("{cn}.csr"));
        let cert = self.dir.join(format!("{cn}.pem"));
        let ext = self.dir.join(format!("{cn}.ext"));
        std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        genkey(&key);
        run(Command::new("openssl")
            .args(["req", "-new", "-subj", &format!("/CN={cn}"), "-key"])
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(self.ca())
            .arg("-CAkey")
            .arg(self.dir.join("ca.key"))
            .arg("-CAcreateserial")
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        (cert, key)
    }
}

struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn start(cwd: &Path, envs: &[(&str, String)]) -> Serve {
        let log = cwd.join(format!("serve-{}.log", free_port()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Serve {
            child: cmd.spawn().expect("sluice serve starts"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl as a user's machine runs it, trusting `ca`: (HTTP status, body).
fn curl(ca: Option<&Path>, args: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-w", "\n%{http_code}"]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    let out = cmd.args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn api(
    ca: Option<&Path>,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let body = body.map(|b| b.to_string());
    let mut args = vec!["-X", method, "-H", "Content-Type: application/json", url];
    if let Some(a) = &auth {
        args.extend(["-H", a.as_str()]);
    }
    if let Some(b) = &body {
        args.extend(["--data-binary", b.as_str()]);
    }
    let (code, text) = curl(ca, &args);
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {url}: HTTP {code}: {text}"))
}

/// The subject CN of the certificate served at `port`, as curl reports it.
fn served_cn(ca: &Path, port: u16) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-v", "-o", "/dev/null", "--cacert"])
        .arg(ca)
        .arg(format!("https://localhost:{port}/healthz"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.split("subject: ").nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| format!("(no certificate: {err})"))
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: {}", log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn failed_login_source(ca: Option<&Path>, base: &str, token: &str, headers: &[&str]) -> String {
    let mut args = vec!["-X", "POST", "-H", "Content-Type: application/json"];
    for h in headers {
        args.extend(["-H", *h]);
    }
    let url = format!("{base}/v1/auth/login");
    args.extend([
        url.as_str(),
        "--data-binary",
        r#"{"username":"nobody-here","password":"not the password"}"#,
    ]);
    assert_eq!(curl(ca, &args).0, 401);
    let v = api(
        ca,
        "GET",
        &format!("{base}/v1/admin/events?action=auth.login_failed&limit=1"),
        Some(token),
        None,
    );
    v["data"][0]["source_ip"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_the_short_link_reloads_its_certificate_and_believes_only_trusted_proxies() {
    let cwd = tempfile::tempdir().unwrap();
    let probe = tempfile::tempdir().unwrap();
    ensure_image(&DockerRuntime::new(probe.path()).unwrap()).await;
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path());
    let (one_cert, one_key) = pki.leaf("sluice-one");
    let (two_cert, two_key) = pki.leaf("sluice-two");
    // The served files: copies the test replaces, as certbot's renewal would.
    let (cert, key) = (cwd.path().join("tls.pem"), cwd.path().join("tls.key"));
    std::fs::copy(&one_cert, &cert).unwrap();
    std::fs::copy(&one_key, &key).unwrap();
    let ca = pki.ca();

    let (http_port, ssh_port) = (free_port(), free_port());
    let serve = Serve::start(
        cwd.path(),
        &[
            ("HTTP_ADDR", format!("127.0.0.1:{http_port}")),
            ("SSH_PROXY_ADDR", "127.0.0.1".into()),
            ("SSH_PROXY_PORT", ssh_port.to_string()),
            ("SLUICE_TLS_CERT", cert.display().to_string()),
            ("SLUICE_TLS_KEY", key.display().to_string()),
        ],
    );
    let base = format!("https://localhost:{http_port}");
    wait_for(
        "no answer over https",
        Duration::from_secs(60),
        || curl(Some(&ca), &[&format!("{base}/healthz")]).0 == 200,
        || serve.log(),
    );
    assert_eq!(served_cn(&ca, http_port), "CN=sluice-one");
    // Plain http to the TLS port gets no answer; a client not trusting the CA is refused.
    let (code, _) = curl(None, &[&format!("http://127.0.0.1:{http_port}/healthz")]);
    assert_eq!(code, 0, "plain http answered on the TLS port");
    assert_eq!(curl(None, &[&format!("{base}/healthz")]).0, 0);

    let data = cwd.path().join("data");
    let instance = std::fs::read_to_string(data.join("instance_id")).unwrap();
    let _cleanup = Cleanup(instance.trim().to_string());
    wait_for(
        "no admin-password file",
        Duration::from_secs(10),
        || data.join("admin-password").exists(),
        || serve.log(),
    );
    let admin_pw = std::fs::read_to_string(data.join("admin-password")).unwrap();
    let v = api(
        Some(&ca),
        "POST",
        &format!("{base}/v1/auth/login"),
        None,
        Some(json!({"username": "admin", "password": admin_pw.trim()})),
    );
    let token = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    // Over https: every answer asks for https only from now on (HSTS), and the dashboard's
    // session cookie is the __Host- one, Secure; a plain-named cookie is no session here.
    let headers = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
            .arg(&ca)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    let h = headers(&[&format!("{base}/healthz")]);
    assert!(
        h.contains("strict-transport-security: max-age=31536000"),
        "{h}"
    );
    let h = headers(&[
        "-H",
        &format!("Origin: {base}"),
        "--data-urlencode",
        "username=admin",
        "--data-urlencode",
        &format!("password={}", admin_pw.trim()),
        &format!("{base}/login"),
    ]);
    let cookie = h
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("{h}"))
        .to_string();
    assert!(
        cookie.starts_with("__host-sluice_session=") && cookie.contains("; secure"),
        "{cookie}"
    );
    let (code, _) = curl(
        Some(&ca),
        &[
            "-H",
            &format!("Cookie: __Host-sluice_session={token}"),
            &format!("{base}/admin"),
        ],
    );
    assert_eq!(code, 200, "the __Host- session opens the dashboard");
    let (code, _) = curl(
        Some(&ca),
        &[
            "-H",
            &format!("Cookie: sluice_session={token}"),
            &format!("{base}/admin"),
        ],
    );
    assert_eq!(code, 303, "a plain-named cookie is no session over https");
    let v = api(
        Some(&ca),
        "POST",
        &format!("{base}/v1/admin/users"),
        Some(&token),
        Some(json!({"username": "alice"})),
    );
    let alice = v["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let v = api(
        Some(&ca),
        "POST",
        &format!("{base}/v1/admin/hosts"),
        Some(&token),
        Some(json!({"user_id": alice})),
    );
    let host_id = v["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let short = v["data"]["short_id"].as_str().unwrap().to_string();
    let password = v["data"]["ssh_password"].as_str().unwrap().to_string();
    let entry_command = v["data"]["access"]["entry_command"]
        .as_str()
        .unwrap()
        .to_string();
    // The access command names https, since the request came over TLS.
    assert!(
        entry_command.starts_with(&format!("curl -sSf {base}/entry/{short}")),
        "{entry_command}"
    );

    // A forwarded address from a source that is not a trusted proxy is not believed.
    assert_eq!(
        failed_login_source(
            Some(&ca),
            &base,
            &token,
            &["X-Forwarded-For: 198.51.100.7", "X-Forwarded-Proto: http"]
        ),
        "127.0.0.1"
    );
    let (_, script) = curl(
        Some(&ca),
        &[
            "-H",
            "X-Forwarded-Proto: http",
            &format!("{base}/entry/{short}"),
        ],
    );
    assert!(script.contains(&format!("SLUICE_URL='{base}'")), "{script}");

    wait_for(
        "the host is not running",
        Duration::from_secs(180),
        || {
            let v = api(
                Some(&ca),
                "GET",
                &format!("{base}/v1/admin/hosts/{host_id}"),
                Some(&token),
                None,
            );
            assert_ne!(v["data"]["status"], "error", "{v}");
            v["data"]["status"] == "running"
        },
        || serve.log(),
    );

    // The short link over https, as a user runs it.
    let home = tempfile::tempdir().unwrap();
    let mut term = Pty::spawn(
        Command::new("bash")
            .arg("-c")
            .arg(&entry_command)
            .env_remove("SSH_AUTH_SOCK")
            .env("CURL_CA_BUNDLE", &ca)
            .env("HOME", home.path()),
    );
    term.expect(&format!("Password for {short}: "), Duration::from_secs(20));
    assert!(
        !term.output().contains("plain http"),
        "warned over https: {}",
        term.output()
    );
    term.send(&format!("{password}\r"));
    term.expect("alice@", Duration::from_secs(60));
    term.send("echo landed-$((6 * 7)); exit 4\r");
    term.expect("landed-42", Duration::from_secs(10));
    assert_eq!(
        term.wait(Duration::from_secs(20)),
        Some(4),
        "{}",
        term.output()
    );

    // Renewal: the new pair is served after SIGHUP, with no restart...
    std::fs::copy(&two_key, &key).unwrap();
    std::fs::copy(&two_cert, &cert).unwrap();
    serve.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(
        "the new certificate is not served after SIGHUP",
        Duration::from_secs(5),
        || served_cn(&ca, http_port) == "CN=sluice-two",
        || serve.log(),
    );
    // ...and when the files change, without a signal.
    std::fs::copy(&one_key, &key).unwrap();
    std::fs::copy(&one_cert, &cert).unwrap();
    wait_for(
        "the changed files are not served",
        Duration::from_secs(20),
        || served_cn(&ca, http_port) == "CN=sluice-one",
        || serve.log(),
    );
    // A certificate with another pair's key is refused; the served one goes on.
    std::fs::copy(&two_cert, &cert).unwrap();
    serve.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(
        "the refused pair is not reported",
        Duration::from_secs(5),
        || serve.log().contains("TLS certificate not reloaded"),
        || serve.log(),
    );
    assert!(
        serve.log().contains("does not belong to the certificate"),
        "{}",
        serve.log()
    );
    assert_eq!(served_cn(&ca, http_port), "CN=sluice-one");
    assert_eq!(curl(Some(&ca), &[&format!("{base}/healthz")]).0, 200);
    drop(serve);

    // The same install behind a reverse proxy on this machine: plain http to Sluice, the
    // proxy's forwarding headers believed because it is listed.
    let serve = Serve::start(
        cwd.path(),
        &[
            ("HTTP_ADDR", format!("127.0.0.1:{http_port}")),
            ("SSH_PROXY_ADDR", "127.0.0.1".into()),
            ("SSH_PROXY_PORT", ssh_port.to_string()),
            ("SLUICE_TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1".into()),
        ],
    );
    let plain = format!("http://127.0.0.1:{http_port}");
    wait_for(
        "no answer over http",
        Duration::from_secs(60),
        || curl(None, &[&format!("{plain}/healthz")]).0 == 200,
        || serve.log(),
    );
    let v = api(
        None,
        "POST",
        &format!("{plain}/v1/auth/login"),
        None,
        Some(json!({"username": "admin", "password": admin_pw.trim()})),
    );
    let token = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    // The first address from the right that is not a proxy is the client; what the client
    // itself wrote further left is not.
    assert_eq!(
        failed_login_source(
            None,
            &plain,
            &token,
            &["X-Forwarded-For: 203.0.113.66, 198.51.100.7, 10.1.2.3"]
        ),
        "198.51.100.7"
    );
    let (_, script) = curl(
        None,
        &[
            "-H",
            "Host: sluice.example",
            "-H",
            "X-Forwarded-Proto: https",
            &format!("{plain}/entry/{short}"),
        ],
    );
    assert!(
        script.contains("SLUICE_URL='https://sluice.example'"),
        "{script}"
    );

    // Over plain http to another machine, the script warns before asking for the password
    // (it is not answered, so nothing is sent anywhere).
    let (_, script) = curl(
        None,
        &[
            "-H",
            "Host: sluice.example",
            &format!("{plain}/entry/{short}"),
        ],
    );
    assert!(
        script.contains("SLUICE_URL='http://sluice.example'"),
        "{script}"
    );
    let script_file = cwd.path().join("entry.sh");
    std::fs::write(&script_file, &script).unwrap();
    let term = Pty::spawn(
        Command::new("bash")
            .arg(&script_file)
            .env("HOME", home.path()),
    );
    term.expect(&format!("Password for {short}: "), Duration::from_secs(20));
    let out = term.output();
    let warned = out
        .find("sluice.example is plain http")
        .unwrap_or_else(|| panic!("no warning: {out}"));
    assert!(warned < out.find("Password for").unwrap(), "{out}");
    drop(term);
    // Over plain http to this machine, no warning.
    let (_, script) = curl(None, &[&format!("{plain}/entry/{short}")]);
    std::fs::write(&script_file, &script).unwrap();
    let term = Pty::spawn(
        Command::new("bash")
            .arg(&script_file)
            .env("HOME", home.path()),
    );
    term.expect(&format!("Password for {short}: "), Duration::from_secs(20));
    assert!(!term.output().contains("plain http"), "{}", term.output());
}
