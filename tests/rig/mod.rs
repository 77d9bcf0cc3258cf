//! The rig of the tests that run hosts behind the lab (tests/lab): an in-process Sluice on
//! SQLite whose probes go to the lab, a WireGuard egress whose server runs in the lab, a
//! running host bound to it, commands run inside the host, and the leak matrix (every way
//! around the egress fails while a capture on the lab link sees only WireGuard). Used by the
//! test binaries that declare `mod common; mod lab; mod rig;`.
#![allow(dead_code)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::docker::{Cleanup, docker, ensure_desktop_image, ensure_image};
use crate::common::{self, RecordingRuntime, Server};
use crate::lab::{self, Lab};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice::runtime::HostRuntime;
use sluice::runtime::docker::{DockerRuntime, container_name};

/// Runs a command in the host's container (as root, on the container's network path).
pub fn exec(host: &Value, cmd: &str) -> (bool, String) {
    docker(&[
        "exec",
        &container_name(host["short_id"].as_str().unwrap()),
        "sh",
        "-c",
        cmd,
    ])
}

pub async fn start_server(
    dir: &std::path::Path,
    url: &str,
    lab: &Lab,
) -> (Server, Arc<DockerRuntime>) {
    start_server_probing(dir, url, &format!("http://{}/", lab.echo())).await
}

/// A server whose connectivity and exit-IP probes fetch `probe_url` (one of the lab's).
pub async fn start_server_probing(
    dir: &std::path::Path,
    url: &str,
    probe_url: &str,
) -> (Server, Arc<DockerRuntime>) {
    let mut settings = common::settings(dir, url.to_string());
    // The probes go to the lab's services only.
    settings.probe.probe_url = probe_url.to_string();
    settings.probe.probe_ip_urls = vec![probe_url.to_string()];
    settings.probe.probe_dns_name = "*.whoami.lab.test".into();
    let runtime = Arc::new(DockerRuntime::new(dir).unwrap());
    ensure_image(&runtime).await;
    let dynamic: Arc<dyn HostRuntime> = runtime.clone();
    let server = Server::start_on(
        settings,
        dynamic,
        RecordingRuntime::default(),
        dir.to_path_buf(),
        None,
    )
    .await;
    (server, runtime)
}

/// Creates a WireGuard egress for lab server `i`; answers (egress id, client public key).
pub async fn wg_egress(
    s: &Server,
    admin: &str,
    lab: &Lab,
    i: u8,
    server_public: Option<&str>,
) -> (String, String) {
    let exit = if i == 0 { lab::EXIT_WG0 } else { lab::EXIT_WG1 };
    let (st, v) = s
        .post("/v1/admin/egress-ips", admin, json!({
            "label": format!("lab-wg{i}"),
            "ip_address": exit,
            "tunnel_type": "wireguard",
            "wg_endpoint": lab.endpoint(i),
            // The server key is set below once the server runs (it needs the client's key).
            "wg_public_key": server_public.unwrap_or("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="),
            "wg_dns_server": lab.dns(),
            "wg_peer_address": format!("10.{}.0.2/32", 64 + i),
        }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    (
        v["data"]["id"].as_str().unwrap().to_string(),
        v["data"]["wg_client_public_key"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// An egress whose WireGuard server runs in the lab.
pub async fn lab_egress(s: &Server, admin: &str, lab: &mut Lab, i: u8) -> String {
    let (id, client) = wg_egress(s, admin, lab, i, None).await;
    let server_public = lab.start_wireguard(i, &client);
    let (st, v) = s
        .call(
            reqwest::Method::PUT,
            &format!("/v1/admin/egress-ips/{id}"),
            Some(admin),
            Some(json!({"wg_public_key": server_public})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    id
}

/// A running host bound to the lab's first WireGuard server, served by an in-process Sluice
/// on SQLite: the starting point of most tests here. Fields drop in order: containers, then
/// the server, then the lab.
pub struct Rig {
    pub _cleanup: Cleanup,
    pub s: Server,
    pub runtime: Arc<DockerRuntime>,
    pub admin: String,
    pub egress: String,
    pub host: Value,
    pub url: String,
    pub lab: Lab,
    pub tmp: tempfile::TempDir,
}

pub async fn rig(username: &str, memory_mb: u32) -> Rig {
    rig_with(username, json!({"memory_mb": memory_mb})).await
}

/// A rig whose host is made with `options` (its creation fields, such as `desktop`).
pub async fn rig_with(username: &str, options: Value) -> Rig {
    let mut lab = Lab::new();
    let tmp = tempfile::tempdir().unwrap();
    let url = common::database_url(common::Backend::Sqlite, tmp.path()).await;
    let (s, runtime) = start_server(tmp.path(), &url, &lab).await;
    let cleanup = Cleanup(runtime.instance().to_string());
    let admin = s.admin().await;
    let egress = lab_egress(&s, &admin, &mut lab, 0).await;
    let (uid, _) = s.user(&admin, username).await;
    if options["desktop"] == json!(true) {
        ensure_desktop_image(&runtime).await;
    }
    let mut options = options;
    options["egress_ip_id"] = json!(egress);
    let host = s.host(&admin, &uid, options).await;
    Rig {
        _cleanup: cleanup,
        s,
        runtime,
        admin,
        egress,
        host,
        url,
        lab,
        tmp,
    }
}

/// Polls `cmd` in the host until its output (trimmed) is `want`, within `limit`.
pub fn wait_output(host: &Value, cmd: &str, want: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (_, out) = exec(host, cmd);
        if out.trim() == want {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "`{cmd}` gave {out:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Ways out of a host that no egress may let through: UDP DNS to a resolver of its own
/// choosing, IPv6, a raw socket, ICMP, and rewriting its resolver.
pub fn ways_around() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "plain DNS to another resolver",
            "dig +time=2 +tries=1 @192.0.2.53 example.com A | grep -q 'ANSWER SECTION'",
        ),
        ("IPv6", "curl -s -6 --max-time 3 'http://[2001:db8::1]/'"),
        (
            "raw socket",
            "perl -e 'use Socket; socket(my $s, PF_INET, SOCK_RAW, 1) or die qq{$!\\n}; print qq{opened\\n}'",
        ),
        (
            "ICMP echo",
            "perl -e 'use Socket; socket(my $s, PF_INET, SOCK_DGRAM, 1) or die qq{$!\\n}; send($s, qq{\\x08\\0\\xf7\\xff\\0\\0\\0\\0}, 0, pack_sockaddr_in(0, inet_aton(q{192.0.2.1}))) or die qq{$!\\n}; my $b; vec(my $r = q{}, fileno($s), 1) = 1; select($r, undef, undef, 3) or die qq{timeout\\n}; recv($s, $b, 100, 0); print qq{reply\\n}'",
        ),
        (
            "rewrite resolv.conf",
            "echo nameserver 192.0.2.53 > /etc/resolv.conf",
        ),
    ]
}

/// A packet capture on an interface of the host namespace.
pub struct Capture {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl Capture {
    pub fn start(iface: &str, dir: &std::path::Path) -> Capture {
        let file = dir.join(format!("{iface}.pcap"));
        let child = Command::new("tcpdump")
            // Immediate mode: packets reach the file as they come, not a buffer block later (a
            // block not yet handed over when the capture stops is lost).
            .args(["-i", iface, "-n", "-U", "--immediate-mode", "-w"])
            .arg(&file)
            .arg("ip or ip6")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{iface}.tcpdump.log"))).unwrap())
            .spawn()
            .expect("tcpdump");
        std::thread::sleep(Duration::from_millis(1500));
        let mut c = Capture { child, file };
        // A capture that is not running would see "nothing" and prove nothing.
        assert!(
            c.child.try_wait().unwrap().is_none(),
            "tcpdump exited at once"
        );
        assert!(c.file.exists(), "tcpdump wrote no capture file");
        c
    }

    /// Stops the capture and answers one line per packet.
    pub fn stop(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(500));
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let out = Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&self.file)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The leak matrix on a host bound to the lab's first WireGuard server: while a capture runs
/// on the lab link, every way around the tunnel fails (`ways_around`, DNS over TLS, cloud
/// metadata, UDP straight to the endpoint), raw sockets and IPv6 are off, `during` runs
/// (traffic of the test's own, such as a browser), and the host's own traffic still flows;
/// then every packet that left was WireGuard to the endpoint.
pub fn only_wireguard_leaves(
    host: &Value,
    lab: &Lab,
    dir: &std::path::Path,
    during: impl FnOnce(),
) {
    let curl = format!("curl -s --max-time 5 http://{}/", lab.echo());
    let capture = Capture::start(&lab.host_link(), dir);
    // Through a tunnel even TCP to odd places must fail: nothing but the tunnel exists.
    let mut must_fail: Vec<(&str, String)> = ways_around()
        .into_iter()
        .map(|(what, cmd)| (what, cmd.to_string()))
        .collect();
    must_fail.extend([
        (
            "DNS over TLS",
            "timeout 4 bash -c 'exec 3<>/dev/tcp/192.0.2.53/853'".to_string(),
        ),
        (
            "cloud metadata",
            "curl -s --max-time 3 http://169.254.169.254/latest/meta-data/".to_string(),
        ),
        (
            "UDP straight to the endpoint",
            format!(
                "timeout 4 bash -c 'echo x > /dev/udp/{}' && sleep 1 && exit 1",
                lab.endpoint(0).replace(':', "/")
            ),
        ),
    ]);
    for (what, cmd) in &must_fail {
        let (ok, out) = exec(host, cmd);
        assert!(!ok, "{what} did not fail: {out}");
    }
    let (_, raw) = exec(
        host,
        "perl -e 'use Socket; socket(my $s, PF_INET, SOCK_RAW, 1) or die qq{$!\\n}'",
    );
    assert!(raw.contains("Operation not permitted"), "raw socket: {raw}");
    let (_, v6) = exec(host, "cat /proc/sys/net/ipv6/conf/all/disable_ipv6");
    assert_eq!(v6.trim(), "1");
    during();
    // While the tunnel carries the host's own traffic, the capture still sees only WireGuard.
    wait_output(host, &curl, lab::EXIT_WG0, Duration::from_secs(10));
    let packets = capture.stop();
    let endpoint = lab.endpoint(0).replace(':', ".");
    let k = lab.k;
    assert!(
        !packets.is_empty(),
        "the capture saw nothing at all (not even the tunnel)"
    );
    for p in &packets {
        let wireguard = p.contains(" UDP")
            && (p.contains(&format!("198.18.{k}.1.")) && p.contains(&format!("> {endpoint}:"))
                || p.contains(&format!("{endpoint} > 198.18.{k}.1.")));
        assert!(
            wireguard,
            "a packet other than WireGuard to the endpoint left the host: {p}\nall: {packets:#?}"
        );
    }
}
