//! WireGuard throughput and CPU: iperf3 from inside a real host container (a Docker container
//! with no network of its own, as Sluice makes them) through Sluice's data plane, against the
//! same container with Debian's wireguard-go as its client, in the same run, to the same
//! wireguard-go server in the tests' lab; and the same path without a tunnel (the veth
//! ceiling). Both clients have the same shape: the TUN inside the container's namespace, the
//! UDP socket in this (the host's) namespace. Prints upload and download for each, the ratios,
//! CPU seconds per Gbit of each client, and Sluice's share of the ceiling.
//!
//! Run as root: `cargo bench --bench wireguard`. Needs Docker with the base image
//! (scripts/base-image.sh), iperf3, wireguard-go, wg, iproute2. Note that the lab's server is
//! wireguard-go too, on the same two cores: its cost caps both clients' throughput alike,
//! which is why CPU per Gbit is printed beside it.

#[path = "../tests/lab/mod.rs"]
mod lab;
mod measure;

use measure::{cpu_of, cpu_self, iperf};

use std::process::Command;
use std::time::Duration;

use sluice::egress::EgressSettings;
use sluice::egress::engine::Engine;
use sluice::egress::settings::{WireguardSettings, generate_private_key, public_key_of};
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
}

fn gbits(bps: f64) -> f64 {
    bps * f64::from(SECONDS) / 1e9
}

/// Upload and download from `ns_path`, with CPU seconds of `cpu` over both per Gbit moved.
fn measure(ns_path: &str, server: &str, cpu: &dyn Fn() -> f64) -> Figures {
    let c0 = cpu();
    let up = iperf(ns_path, server, SECONDS, false);
    let down = iperf(ns_path, server, SECONDS, true);
    let used = cpu() - c0;
    Figures {
        up,
        down,
        cpu_per_gbit: used / (gbits(up) + gbits(down)),
    }
}

#[tokio::main]
async fn main() {
    let mut lab = lab::Lab::new();
    let server_addr = lab.start_iperf3();
    let client_private = generate_private_key();
    let client_public = public_key_of(&client_private).unwrap();
    let server_public = lab.start_wireguard(0, &client_public);
    std::thread::sleep(Duration::from_millis(500));
    let container = Container::start(&format!("{}-bench-wg", lab.prefix));
    let ns_path = container.ns_path();

    // The ceiling: the same veths the tunnel's datagrams cross, without a tunnel.
    let ceiling_up = iperf("/proc/self/ns/net", &server_addr, SECONDS, false);
    let ceiling_down = iperf("/proc/self/ns/net", &server_addr, SECONDS, true);

    // Sluice's data plane, attached to the container as to a host.
    let settings = EgressSettings::Wireguard(WireguardSettings {
        endpoint: lab.endpoint(0),
        public_key: server_public.clone(),
        preshared_key: None,
        allowed_ips: vec!["0.0.0.0/0".into()],
        dns_server: lab.dns(),
        peer_address: "10.64.0.2/32".into(),
        private_key: client_private.clone(),
        client_public_key: client_public.clone(),
    });
    let engine = Engine::new();
    let host = uuid::Uuid::new_v4();
    engine
        .attach(
            host,
            &NetNs::Pid(i64::from(container.pid)),
            uuid::Uuid::new_v4(),
            &settings,
        )
        .await
        .expect("attach");
    std::thread::sleep(Duration::from_secs(1));
    let sluice = tokio::task::spawn_blocking({
        let (ns, server) = (ns_path.clone(), server_addr.clone());
        move || measure(&ns, &server, &cpu_self)
    })
    .await
    .unwrap();
    engine.detach(host).await;
    std::thread::sleep(Duration::from_secs(1));

    // wireguard-go: its TUN made here and moved into the container, its socket left here.
    let iface = format!("{}cw", lab.prefix);
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
    // A key of its own (a second peer of the same server): WireGuard refuses a handshake whose
    // timestamp is older than the last one seen for a key, and two implementations' clocks
    // need not agree.
    let peer_private = generate_private_key();
    let peer_public = public_key_of(&peer_private).unwrap();
    run(&[
        "ip",
        "netns",
        "exec",
        &lab.exit_ns(),
        "wg",
        "set",
        &format!("{}w0", lab.prefix),
        "peer",
        &peer_public,
        "allowed-ips",
        "10.64.0.3/32",
    ]);
    let key_file = std::env::temp_dir().join(format!("{iface}.key"));
    std::fs::write(&key_file, &peer_private).unwrap();
    run(&[
        "wg",
        "set",
        &iface,
        "private-key",
        key_file.to_str().unwrap(),
        "peer",
        &server_public,
        "endpoint",
        &lab.endpoint(0),
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
    container.ip(&["addr", "add", "10.64.0.3/32", "dev", &iface]);
    container.ip(&["link", "set", &iface, "mtu", "1420", "up"]);
    container.ip(&["route", "add", "default", "dev", &iface]);
    let pid = peer.child.id();
    let wireguard_go = measure(&ns_path, &server_addr, &|| cpu_of(pid));
    drop(peer);
    drop(container);
    lab.stop_wireguard();

    let mbit = |bps: f64| bps / 1e6;
    println!(
        "WireGuard from inside a host container, {SECONDS} s of iperf3 each way, same server and path:"
    );
    println!("                      upload Mbit/s  download Mbit/s  client CPU s per Gbit");
    for (name, f) in [("sluice", &sluice), ("wireguard-go", &wireguard_go)] {
        println!(
            "  {name:<18} {:>10.1} {:>16.1} {:>18.2}",
            mbit(f.up),
            mbit(f.down),
            f.cpu_per_gbit
        );
    }
    println!(
        "  {:<18} {:>10.1} {:>16.1}",
        "veth ceiling",
        mbit(ceiling_up),
        mbit(ceiling_down)
    );
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
