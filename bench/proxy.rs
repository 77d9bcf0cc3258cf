//! Proxy egress throughput and CPU: iperf3 through Sluice's proxy data plane (a namespace whose
//! TCP the kernel hands to Sluice, which dials it through the proxy) against tun2proxy on the
//! same path, in the same run, for two kinds:
//! - SOCKS5: both dial the same microsocks in the tests' lab, then the same Dante (`danted`),
//!   since microsocks' 1 KiB copies make it the bottleneck for a client that keeps up;
//! - Shadowsocks: Sluice speaks it itself; the peer is tun2proxy in front of Debian's
//!   `ss-local` (SOCKS5 in, Shadowsocks out), and both reach the same `ss-server`.
//!
//! Each has its own namespace and opens its sockets to the proxy in this host namespace
//! (tun2proxy in its `--unshare` mode, which hands the sockets in), and the proxy reaches the
//! same iperf3 server. Prints upload and download for both, their ratios, client CPU seconds
//! per Gbit (Sluice's process; tun2proxy's whole process tree, with `ss-local`), and the proxy
//! server's CPU seconds per Gbit under each client (a proxy that copies in small pieces costs
//! more per byte when its client drains it at once, and it can be the one that sets the pace).
//!
//! Run as root: `cargo install tun2proxy` (puts `tun2proxy-bin` in ~/.cargo/bin), then
//! `cargo bench --bench proxy`. Needs iperf3, microsocks, dante-server, shadowsocks-libev,
//! iproute2, iptables.

#[path = "../tests/lab/mod.rs"]
mod lab;
mod measure;

use measure::{cpu_of, cpu_self, cpu_tree, iperf};

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use sluice::egress::EgressSettings;
use sluice::egress::engine::Engine;
use sluice::egress::settings::ProxyConfig;

const SECONDS: u32 = 8;

/// Where `cargo install tun2proxy` put its binary.
fn tun2proxy() -> std::path::PathBuf {
    let home = std::env::var("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let mut candidates: Vec<std::path::PathBuf> = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| std::path::Path::new(d).join("tun2proxy-bin"))
        .collect();
    candidates.push(home.join("bin/tun2proxy-bin"));
    candidates
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            eprintln!("tun2proxy-bin not found: run `cargo install tun2proxy` first");
            std::process::exit(2);
        })
}

/// Stops the helper processes, even when a measurement panics.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        // Each was started as the leader of its own process group: the group goes, with
        // whatever it forked (tun2proxy's unshare child and the command it runs).
        for c in &mut self.0 {
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// The measurements of one data plane: throughput, and the CPU seconds spent meanwhile by
/// the client and by the proxy server.
struct Run {
    up: f64,
    down: f64,
    cpu: f64,
    proxy_cpu: f64,
}

impl Run {
    fn per_gbit(&self, cpu: f64) -> f64 {
        cpu / ((self.up + self.down) * f64::from(SECONDS) / 1e9)
    }
}

/// CPU seconds of the processes `pids` and their descendants.
fn cpu_of_all(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| cpu_tree(p)).sum()
}

/// Upload and download from the namespace at `ns_path`, with the CPU `cpu` counts and that of
/// the proxy server's processes `proxy`.
fn measure(ns_path: &str, server: &str, cpu: &dyn Fn() -> f64, proxy: &[u32]) -> Run {
    let (cpu0, proxy0) = (cpu(), cpu_of_all(proxy));
    let up = iperf(ns_path, server, SECONDS, false);
    let down = iperf(ns_path, server, SECONDS, true);
    Run {
        up,
        down,
        cpu: cpu() - cpu0,
        proxy_cpu: cpu_of_all(proxy) - proxy0,
    }
}

/// Sluice's data plane on `settings`, in a namespace of its own.
async fn measure_sluice(settings: EgressSettings, server: &str, proxy: Vec<u32>) -> Run {
    let engine = Engine::new();
    let session = engine.throwaway(&settings).await.expect("session");
    let ns_path = session.ns.path();
    std::thread::sleep(Duration::from_millis(500));
    let server = server.to_string();
    let run = tokio::task::spawn_blocking(move || measure(&ns_path, &server, &cpu_self, &proxy))
        .await
        .unwrap();
    drop(session);
    run
}

/// tun2proxy the way it is meant for this (its `--unshare` mode): the TUN and its stack in a
/// namespace of their own, the sockets to `proxy` (a SOCKS5 URL) opened in this host namespace
/// and handed in. `helper`: another process of the peer's (ss-local), whose CPU counts too.
fn measure_tun2proxy(
    binary: &std::path::Path,
    prefix: &str,
    proxy: &str,
    dns: &str,
    server: &str,
    helper: Option<u32>,
    proxy_pids: &[u32],
) -> Run {
    let mut children = Children(vec![]);
    let pidfile = std::env::temp_dir().join(format!("{prefix}-tun2proxy.pid"));
    let _ = std::fs::remove_file(&pidfile);
    let child = Command::new(binary)
        .args(["--unshare", "--tun", "t2p0", "--unshare-pidfile"])
        .arg(&pidfile)
        .args([
            "--proxy",
            proxy,
            "--mtu",
            &sluice::egress::tun::MTU.to_string(),
            "--dns",
            "over-tcp",
            "--dns-addr",
            dns,
            "--",
            "sleep",
            "3600",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("tun2proxy");
    let peer_pid = child.id();
    children.0.push(child);
    let mut inner = None;
    for _ in 0..100 {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            inner = Some(pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let inner = inner.expect("tun2proxy wrote no pidfile");
    let ns_path = format!("/proc/{inner}/ns/net");
    // Its own `--setup` refuses to run there (it looks for a route to the proxy inside the
    // namespace, where there is none): the TUN gets Sluice's address and route instead.
    let in_ns = |args: &[&str]| {
        Command::new("nsenter")
            .arg(format!("--net={ns_path}"))
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let mut up = false;
    for _ in 0..100 {
        if in_ns(&["ip", "link", "show", "t2p0"]) {
            up = in_ns(&["ip", "addr", "add", "10.255.255.2/24", "dev", "t2p0"])
                && in_ns(&["ip", "link", "set", "t2p0", "up"])
                && in_ns(&["ip", "route", "add", "default", "dev", "t2p0"]);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "tun2proxy's TUN did not come up");
    std::thread::sleep(Duration::from_millis(500));
    let cpu = || cpu_tree(peer_pid) + helper.map(cpu_of).unwrap_or(0.0);
    let run = measure(&ns_path, server, &cpu, proxy_pids);
    drop(children);
    let _ = std::fs::remove_file(&pidfile);
    run
}

fn report(kind: &str, peer: &str, sluice: &Run, other: &Run) {
    println!("{kind}, {SECONDS} s of iperf3 each way, same proxy server and path:");
    for (name, r) in [("sluice", sluice), (peer, other)] {
        println!(
            "  {name:<22} up {:8.1} Mbit/s   down {:8.1} Mbit/s   {:.2} CPU s per Gbit   proxy server {:.2}",
            r.up / 1e6,
            r.down / 1e6,
            r.per_gbit(r.cpu),
            r.per_gbit(r.proxy_cpu)
        );
    }
    println!(
        "  ratio sluice / {peer}: up {:.2}, down {:.2}, CPU per Gbit {:.2}",
        sluice.up / other.up,
        sluice.down / other.down,
        sluice.per_gbit(sluice.cpu) / other.per_gbit(other.cpu)
    );
}

/// A SOCKS5 egress to `ip:port` without credentials, resolving through the lab's DNS.
fn socks(ip: &str, port: u16, lab: &lab::Lab) -> EgressSettings {
    EgressSettings::Proxy {
        proxy_config: ProxyConfig::Socks {
            server: ip.to_string(),
            server_port: port,
            username: None,
            password: None,
        },
        dns_server: lab.dns(),
        allowed_ranges: vec![],
    }
}

#[tokio::main]
async fn main() {
    let peer = tun2proxy();
    let mut lab = lab::Lab::new();
    let server = lab.start_iperf3();

    // SOCKS5: the same microsocks for both.
    let (ip, port) = lab.start_socks(None);
    std::thread::sleep(Duration::from_millis(300));
    eprintln!("SOCKS5: measuring Sluice…");
    let sluice_socks = measure_sluice(socks(&ip, port, &lab), &server, lab.proxy_pids()).await;
    eprintln!("SOCKS5: measuring tun2proxy…");
    let peer_socks = measure_tun2proxy(
        &peer,
        &lab.prefix,
        &format!("socks5://{ip}:{port}"),
        &lab.dns(),
        &server,
        None,
        &lab.proxy_pids(),
    );
    lab.stop_proxies();

    // SOCKS5 again through Dante, whose relay moves large buffers: microsocks copies 1 KiB
    // per system call, and a client that drains it promptly (Sluice) keeps it sending small
    // segments until it saturates a core, so the proxy, not the client, sets the pace there.
    let ip = format!("198.18.{}.2", lab.k);
    let dante_port = 1081;
    let conf = std::env::temp_dir().join(format!("{}-danted.conf", lab.prefix));
    std::fs::write(
        &conf,
        format!(
            "logoutput: stderr\ninternal: {ip} port = {dante_port}\nexternal: {}x\n\
             socksmethod: none\nclientmethod: none\nuser.privileged: root\n\
             user.unprivileged: nobody\n\
             client pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 }}\n\
             socks pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 }}\n",
            lab.prefix
        ),
    )
    .expect("danted.conf");
    let dante = Children(vec![
        Command::new("ip")
            .args(["netns", "exec", &lab.exit_ns(), "danted", "-f"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("danted (Debian's dante-server)"),
    ]);
    lab::wait_listening(&ip, dante_port);
    eprintln!("SOCKS5 (Dante): measuring Sluice…");
    let dante_pids = vec![dante.0[0].id()];
    let sluice_dante =
        measure_sluice(socks(&ip, dante_port, &lab), &server, dante_pids.clone()).await;
    eprintln!("SOCKS5 (Dante): measuring tun2proxy…");
    let peer_dante = measure_tun2proxy(
        &peer,
        &lab.prefix,
        &format!("socks5://{ip}:{dante_port}"),
        &lab.dns(),
        &server,
        None,
        &dante_pids,
    );
    drop(dante);
    let _ = std::fs::remove_file(&conf);

    // Shadowsocks: the same ss-server; the peer reaches it through ss-local.
    let (method, password) = ("chacha20-ietf-poly1305", "bench-secret");
    let (ip, port) = lab.start_shadowsocks(method, password);
    eprintln!("Shadowsocks: measuring Sluice…");
    let shadowsocks = EgressSettings::Proxy {
        proxy_config: ProxyConfig::Shadowsocks {
            server: ip.clone(),
            server_port: port,
            method: method.into(),
            password: password.into(),
        },
        dns_server: lab.dns(),
        allowed_ranges: vec![],
    };
    let sluice_ss = measure_sluice(shadowsocks, &server, lab.proxy_pids()).await;
    eprintln!("Shadowsocks: measuring ss-local + tun2proxy…");
    let local_port = 41080 + u16::from(lab.k);
    let local = Children(vec![
        Command::new("ss-local")
            .args(["-s", &ip, "-p", &port.to_string(), "-l"])
            .arg(local_port.to_string())
            .args(["-b", "127.0.0.1", "-k", password, "-m", method])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("ss-local"),
    ]);
    lab::wait_listening("127.0.0.1", local_port);
    let local_pid = local.0[0].id();
    let peer_ss = measure_tun2proxy(
        &peer,
        &lab.prefix,
        &format!("socks5://127.0.0.1:{local_port}"),
        &lab.dns(),
        &server,
        Some(local_pid),
        &lab.proxy_pids(),
    );
    drop(local);
    lab.stop_proxies();

    report(
        "SOCKS5 egress through microsocks",
        "tun2proxy",
        &sluice_socks,
        &peer_socks,
    );
    report(
        "SOCKS5 egress through Dante",
        "tun2proxy",
        &sluice_dante,
        &peer_dante,
    );
    report(
        "Shadowsocks egress",
        "ss-local + tun2proxy",
        &sluice_ss,
        &peer_ss,
    );
}
