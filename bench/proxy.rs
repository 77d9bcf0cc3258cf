//! SOCKS5 egress throughput: iperf3 through Sluice's proxy data plane (a TUN in a namespace,
//! ipstack, tokio-socks to microsocks) against tun2proxy on the same path, in the same run.
//! Each has its TUN in a namespace of its own and opens its sockets to the proxy in this host
//! namespace (tun2proxy in its `--unshare` mode, which hands the sockets in), and both dial
//! the same microsocks in the tests' lab, which reaches the same iperf3 server. Prints upload
//! and download for both, their ratios, and CPU seconds per Gbit (tun2proxy's whole process
//! tree).
//!
//! Run as root: `cargo install tun2proxy` (puts `tun2proxy-bin` in ~/.cargo/bin), then
//! `cargo bench --bench proxy`. Needs iperf3, microsocks, iproute2, iptables.

#[path = "../tests/lab/mod.rs"]
mod lab;
mod measure;

use measure::{cpu_self, cpu_tree, iperf};

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

/// The measurements of one data plane.
struct Run {
    up: f64,
    down: f64,
    cpu: f64,
}

impl Run {
    fn cpu_per_gbit(&self) -> f64 {
        self.cpu / ((self.up + self.down) * f64::from(SECONDS) / 1e9)
    }
}

#[tokio::main]
async fn main() {
    let peer = tun2proxy();
    let mut lab = lab::Lab::new();
    let server = lab.start_iperf3();
    let mut children = Children(vec![]);
    let (ip, port) = lab.start_socks(None);
    std::thread::sleep(Duration::from_millis(300));

    // Sluice.
    eprintln!("measuring Sluice's data plane…");
    let settings = EgressSettings::Proxy {
        proxy_config: ProxyConfig::Socks {
            server: ip.clone(),
            server_port: port,
            username: None,
            password: None,
        },
        dns_server: lab.dns(),
    };
    let engine = Engine::new();
    let session = engine.throwaway(&settings).await.expect("session");
    let ns_path = session.ns.path();
    std::thread::sleep(Duration::from_millis(500));
    let cpu0 = cpu_self();
    let (up, down) = tokio::task::spawn_blocking({
        let (ns_path, server) = (ns_path.clone(), server.clone());
        move || {
            (
                iperf(&ns_path, &server, SECONDS, false),
                iperf(&ns_path, &server, SECONDS, true),
            )
        }
    })
    .await
    .unwrap();
    let sluice = Run {
        up,
        down,
        cpu: cpu_self() - cpu0,
    };
    drop(session);

    // tun2proxy the way it is meant for this (its `--unshare` mode): the TUN and its stack in a
    // namespace of their own, the sockets to the proxy opened in this host namespace and
    // handed in.
    eprintln!("measuring tun2proxy…");
    let pidfile = std::env::temp_dir().join(format!("{}-tun2proxy.pid", lab.prefix));
    let _ = std::fs::remove_file(&pidfile);
    let child = Command::new(&peer)
        .args(["--unshare", "--tun", "t2p0", "--unshare-pidfile"])
        .arg(&pidfile)
        .args([
            "--proxy",
            &format!("socks5://{ip}:{port}"),
            "--mtu",
            &sluice::egress::tun::MTU.to_string(),
            "--dns",
            "over-tcp",
            "--dns-addr",
            &lab.dns(),
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
    let cpu0 = cpu_tree(peer_pid);
    let (up, down) = (
        iperf(&ns_path, &server, SECONDS, false),
        iperf(&ns_path, &server, SECONDS, true),
    );
    let tun2proxy = Run {
        up,
        down,
        cpu: cpu_tree(peer_pid) - cpu0,
    };
    drop(children);
    let _ = std::fs::remove_file(&pidfile);
    lab.stop_proxies();

    println!("SOCKS5 egress throughput, {SECONDS} s of iperf3 each way, same microsocks and path:");
    for (name, r) in [("sluice (ipstack)", &sluice), ("tun2proxy", &tun2proxy)] {
        println!(
            "  {name:<18} up {:8.1} Mbit/s   down {:8.1} Mbit/s   {:.2} CPU s per Gbit",
            r.up / 1e6,
            r.down / 1e6,
            r.cpu_per_gbit()
        );
    }
    println!(
        "  ratio sluice / tun2proxy: up {:.2}, down {:.2}, CPU per Gbit {:.2}",
        sluice.up / tun2proxy.up,
        sluice.down / tun2proxy.down,
        sluice.cpu_per_gbit() / tun2proxy.cpu_per_gbit()
    );
}
