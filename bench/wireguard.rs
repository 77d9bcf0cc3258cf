//! WireGuard throughput and CPU: iperf3 from inside a real host container (a Docker container
//! with no network of its own, as Sluice makes them) through Sluice's data plane, against the
//! same container with Debian's wireguard-go as its client, in the same run, to the same
//! server; and the same path without a tunnel (the veth ceiling). Both clients have the same
//! shape: the TUN inside the container's namespace, the UDP socket in this (the host's)
//! namespace. Prints upload and download for each, the ratios, CPU seconds per Gbit of each
//! client and of the server, and Sluice's share of the ceiling.
//!
//! Each pair is measured against two servers in the tests' lab: Debian's wireguard-go (as the
//! tests use it), whose cost on these same cores caps both clients alike, and Sluice's own
//! data plane as the responder (this binary again, in a process of its own), which costs less
//! per packet and so leaves more of the machine to the clients.
//!
//! Run as root: `cargo bench --bench wireguard`. Needs Docker with the base image
//! (scripts/base-image.sh), iperf3, wireguard-go, wg, iproute2.

#[path = "../tests/lab/mod.rs"]
mod lab;
mod measure;

use measure::{cpu_of, cpu_self, iperf};

use std::process::Command;
use std::time::Duration;

use sluice::egress::EgressSettings;
use sluice::egress::engine::Engine;
use sluice::egress::settings::{WireguardSettings, generate_private_key, public_key_of};
use sluice::egress::wireguard::{self, Peer};
use sluice::netns::NetNs;

const SECONDS: u32 = 8;
/// The image scripts/base-image.sh makes; hosts' images are built on it.
const IMAGE: &str = "debian:bookworm-slim";

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("command runs");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A container with no network but its own namespace, removed on drop (even on a panic).
struct Container {
    name: String,
    pid: u32,
}

impl Container {
    fn start(name: &str) -> Container {
        let _ = Command::new("docker").args(["rm", "-f", name]).output();
        run(&[
            "docker",
            "run",
            "-d",
            "--rm",
            "--network",
            "none",
            "--name",
            name,
            IMAGE,
            "sleep",
            "3600",
        ]);
        let pid = run(&["docker", "inspect", "-f", "{{.State.Pid}}", name])
            .parse()
            .expect("pid");
        Container {
            name: name.to_string(),
            pid,
        }
    }

    fn ns_path(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    /// Runs `ip ARGS` inside the container's namespace (from outside: the container has no
    /// capability to).
    fn ip(&self, args: &[&str]) {
        let net = format!("--net={}", self.ns_path());
        let mut full = vec!["nsenter", net.as_str(), "ip"];
        full.extend_from_slice(args);
        run(&full);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// wireguard-go as a client, stopped on drop.
struct WireguardGo {
    child: std::process::Child,
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

struct Figures {
    up: f64,
    down: f64,
    cpu_per_gbit: f64,
    server_cpu_per_gbit: f64,
}

fn gbits(bps: f64) -> f64 {
    bps * f64::from(SECONDS) / 1e9
}

/// Upload and download from `ns_path`, with CPU seconds of the client (`client`) and of the
/// server (`server`) over both, per Gbit moved.
fn measure(
    ns_path: &str,
    target: &str,
    client: &dyn Fn() -> f64,
    server: &dyn Fn() -> f64,
) -> Figures {
    // The first handshake may take a retry (both ends start one at once with the responder):
    // wait until the tunnel carries a connection before timing it.
    let reached = Command::new("nsenter")
        .arg(format!("--net={ns_path}"))
        .args(["timeout", "30", "bash", "-c"])
        .arg(format!(
            "until exec 3<>/dev/tcp/{target}/5201; do sleep 0.5; done"
        ))
        .status()
        .expect("nsenter");
    assert!(
        reached.success(),
        "the tunnel did not carry a connection in 30 s"
    );
    let (c0, s0) = (client(), server());
    let up = iperf(ns_path, target, SECONDS, false);
    let down = iperf(ns_path, target, SECONDS, true);
    let moved = gbits(up) + gbits(down);
    Figures {
        up,
        down,
        cpu_per_gbit: (client() - c0) / moved,
        server_cpu_per_gbit: (server() - s0) / moved,
    }
}

/// Who answers at the lab's endpoint 0.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    /// Debian's wireguard-go, as the tests' lab runs it.
    WireguardGo,
    /// Sluice's own data plane as the responder, in a process of its own (this binary again):
    /// it costs less per packet than wireguard-go, so it caps the clients less.
    Sluice,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::WireguardGo => "wireguard-go",
            Server::Sluice => "Sluice's data plane",
        }
    }
}

/// A running server with one peer, stopped on drop.
struct Running<'a> {
    lab: &'a mut lab::Lab,
    child: Option<std::process::Child>,
    public: String,
}

impl Running<'_> {
    /// Starts `server` at the lab's endpoint 0 with `client_public` as its only peer, whose
    /// tunnel address is 10.64.0.2.
    fn start<'a>(lab: &'a mut lab::Lab, server: Server, client_public: &str) -> Running<'a> {
        match server {
            Server::WireguardGo => {
                let public = lab.start_wireguard(0, client_public);
                Running {
                    lab,
                    child: None,
                    public,
                }
            }
            Server::Sluice => {
                let private = generate_private_key();
                let public = public_key_of(&private).unwrap();
                let mut child = Command::new(std::env::current_exe().unwrap())
                    .env(RESPONDER, lab.exit_ns())
                    .env("SLUICE_BENCH_LISTEN", lab.endpoint(0))
                    .env("SLUICE_BENCH_KEY", &private)
                    .env("SLUICE_BENCH_PEER", client_public)
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("responder");
                // It prints a line once it listens.
                let mut line = String::new();
                std::io::BufRead::read_line(
                    &mut std::io::BufReader::new(child.stdout.take().unwrap()),
                    &mut line,
                )
                .unwrap();
                assert_eq!(line.trim(), "listening", "the responder did not start");
                Running {
                    lab,
                    child: Some(child),
                    public,
                }
            }
        }
    }

    /// CPU seconds the server has used.
    fn cpu(&self) -> f64 {
        match &self.child {
            Some(c) => cpu_of(c.id()),
            None => self.lab.wireguard_pids().into_iter().map(cpu_of).sum(),
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        match self.child.take() {
            Some(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            None => self.lab.stop_wireguard(),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Set (to the lab's exit namespace) when this binary runs as the responder.
const RESPONDER: &str = "SLUICE_BENCH_WG_RESPONDER";

/// The responder: Sluice's data plane in the lab's exit namespace, its TUN there with
/// 10.64.0.1/24 (where wireguard-go's was: the lab routes and NATs that range), its socket on
/// the endpoint. The peer's address is learned from its first datagram, which stays queued
/// for the data plane to answer. The data plane also routes the namespace's default through
/// its TUN, as it does in a host; the exit namespace has none of its own (its servers have
/// their own routes), and the route goes with the process.
async fn responder(exit_ns: String) {
    let var = |k: &str| std::env::var(k).unwrap();
    let listen: std::net::SocketAddr = var("SLUICE_BENCH_LISTEN").parse().unwrap();
    let ns = NetNs::Held(std::sync::Arc::new(
        std::fs::File::open(format!("/run/netns/{exit_ns}")).unwrap(),
    ));
    let (tun, offload) = sluice::egress::tun::open_offloaded(&ns, "10.64.0.1/24".parse().unwrap())
        .await
        .expect("responder TUN");
    let udp = ns
        .run(move || {
            let s = std::net::UdpSocket::bind(listen)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .await
        .expect("responder socket");
    let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
    println!("listening");
    let mut first = [0u8; 2048];
    let (_, from) = udp.peek_from(&mut first).await.unwrap();
    let keys = WireguardSettings {
        endpoint: from.to_string(),
        public_key: var("SLUICE_BENCH_PEER"),
        preshared_key: None,
        allowed_ips: vec![],
        dns_server: String::new(),
        peer_address: String::new(),
        private_key: var("SLUICE_BENCH_KEY"),
        client_public_key: String::new(),
    };
    let peer = Peer::from_settings(&keys).await.unwrap();
    let _ = wireguard::run(
        peer,
        std::sync::Arc::new(tun),
        offload,
        udp,
        Default::default(),
        Default::default(),
    )
    .await;
}

/// Sluice's data plane as the client, attached to the container as to a host.
async fn sluice_client(
    lab: &mut lab::Lab,
    server: Server,
    ns: &str,
    pid: u32,
    target: &str,
) -> Figures {
    let private = generate_private_key();
    let public = public_key_of(&private).unwrap();
    let running = Running::start(lab, server, &public);
    let settings = EgressSettings::Wireguard(WireguardSettings {
        endpoint: running.lab.endpoint(0),
        public_key: running.public.clone(),
        preshared_key: None,
        allowed_ips: vec!["0.0.0.0/0".into()],
        dns_server: running.lab.dns(),
        peer_address: "10.64.0.2/32".into(),
        private_key: private,
        client_public_key: public,
    });
    let engine = Engine::new();
    let host = uuid::Uuid::new_v4();
    engine
        .attach(
            host,
            &NetNs::Pid(i64::from(pid)),
            uuid::Uuid::new_v4(),
            &settings,
        )
        .await
        .expect("attach");
    std::thread::sleep(Duration::from_secs(1));
    let figures = tokio::task::block_in_place(|| measure(ns, target, &cpu_self, &|| running.cpu()));
    engine.detach(host).await;
    figures
}

/// wireguard-go as the client: its TUN made here and moved into the container, its socket
/// left here.
fn wireguard_go_client(
    lab: &mut lab::Lab,
    server: Server,
    container: &Container,
    target: &str,
) -> Figures {
    let private = generate_private_key();
    let public = public_key_of(&private).unwrap();
    let running = Running::start(lab, server, &public);
    let iface = format!("{}cw", running.lab.prefix);
    let sock = format!("/var/run/wireguard/{iface}.sock");
    let _ = std::fs::remove_file(&sock);
    let peer = WireguardGo {
        child: Command::new("wireguard-go")
            .args(["-f", &iface])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("wireguard-go client"),
    };
    for _ in 0..200 {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let key_file = std::env::temp_dir().join(format!("{iface}.key"));
    std::fs::write(&key_file, &private).unwrap();
    run(&[
        "wg",
        "set",
        &iface,
        "private-key",
        key_file.to_str().unwrap(),
        "peer",
        &running.public,
        "endpoint",
        &running.lab.endpoint(0),
        "allowed-ips",
        "0.0.0.0/0",
    ]);
    let _ = std::fs::remove_file(&key_file);
    run(&[
        "ip",
        "link",
        "set",
        &iface,
        "netns",
        &container.pid.to_string(),
    ]);
    container.ip(&["addr", "add", "10.64.0.2/32", "dev", &iface]);
    container.ip(&["link", "set", &iface, "mtu", "1420", "up"]);
    container.ip(&["route", "add", "default", "dev", &iface]);
    let pid = peer.child.id();
    measure(&container.ns_path(), target, &|| cpu_of(pid), &|| {
        running.cpu()
    })
}

fn main() {
    if let Ok(exit_ns) = std::env::var(RESPONDER) {
        return tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(responder(exit_ns));
    }
    tokio::runtime::Runtime::new().unwrap().block_on(bench());
}

async fn bench() {
    let mut lab = lab::Lab::new();
    let target = lab.start_iperf3();
    let container = Container::start(&format!("{}-bench-wg", lab.prefix));
    let ns_path = container.ns_path();

    // The ceiling: the same veths the tunnel's datagrams cross, without a tunnel.
    let ceiling_up = iperf("/proc/self/ns/net", &target, SECONDS, false);
    let ceiling_down = iperf("/proc/self/ns/net", &target, SECONDS, true);

    let mbit = |bps: f64| bps / 1e6;
    println!(
        "WireGuard from inside a host container, {SECONDS} s of iperf3 each way, same path; veth ceiling (no tunnel): upload {:.1}, download {:.1} Mbit/s",
        mbit(ceiling_up),
        mbit(ceiling_down)
    );
    for server in [Server::WireguardGo, Server::Sluice] {
        let sluice = sluice_client(&mut lab, server, &ns_path, container.pid, &target).await;
        let wireguard_go = wireguard_go_client(&mut lab, server, &container, &target);
        println!("server: {}", server.name());
        println!(
            "                      upload Mbit/s  download Mbit/s  client CPU s per Gbit  server CPU s per Gbit"
        );
        for (name, f) in [("sluice", &sluice), ("wireguard-go", &wireguard_go)] {
            println!(
                "  {name:<18} {:>10.1} {:>16.1} {:>18.2} {:>22.2}",
                mbit(f.up),
                mbit(f.down),
                f.cpu_per_gbit,
                f.server_cpu_per_gbit
            );
        }
        println!(
            "  ratio sluice / wireguard-go: upload {:.2}, download {:.2}, CPU per Gbit {:.2}",
            sluice.up / wireguard_go.up,
            sluice.down / wireguard_go.down,
            sluice.cpu_per_gbit / wireguard_go.cpu_per_gbit
        );
        println!(
            "  sluice's share of the veth ceiling: upload {:.2}, download {:.2}",
            sluice.up / ceiling_up,
            sluice.down / ceiling_down
        );
    }
}
