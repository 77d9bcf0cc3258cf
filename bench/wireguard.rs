//! WireGuard throughput: iperf3 through Sluice's data plane (boringtun between a TUN in a
//! namespace and a UDP socket) against the same path with wireguard-go as the client, in the
//! same run, to the same wireguard-go server in the tests' lab. Prints both, their ratio, and
//! CPU seconds per Gbit moved. Run as root: `cargo bench --bench wireguard`.
//! Needs iperf3, wireguard-go, wg, iproute2, iptables.

#[path = "../tests/lab/mod.rs"]
mod lab;
mod measure;

use measure::{cpu_of, cpu_self, iperf};

use std::process::Command;
use std::time::Duration;

use sluice::egress::EgressSettings;
use sluice::egress::engine::Engine;
use sluice::egress::settings::{WireguardSettings, generate_private_key, public_key_of};

const SECONDS: u32 = 8;

/// Undoes what the peer measurement set up in the host namespace, even on a panic.
struct PeerSetup {
    children: Vec<std::process::Child>,
    client_ns: String,
    veth: String,
    host_link: String,
}

impl Drop for PeerSetup {
    fn drop(&mut self) {
        for c in &mut self.children {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let quiet = |args: &[&str]| {
            let _ = Command::new(args[0]).args(&args[1..]).output();
        };
        quiet(&[
            "iptables",
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-s",
            "100.100.0.0/30",
            "-o",
            &self.host_link,
            "-j",
            "MASQUERADE",
        ]);
        quiet(&[
            "iptables",
            "-D",
            "FORWARD",
            "-s",
            "100.100.0.0/30",
            "-j",
            "ACCEPT",
        ]);
        quiet(&[
            "iptables",
            "-D",
            "FORWARD",
            "-d",
            "100.100.0.0/30",
            "-j",
            "ACCEPT",
        ]);
        quiet(&["ip", "link", "del", &self.veth]);
        quiet(&["ip", "netns", "del", &self.client_ns]);
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("command runs");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::main]
async fn main() {
    let mut lab = lab::Lab::new();
    let server_addr = lab.start_iperf3();
    let client_private = generate_private_key();
    let client_public = public_key_of(&client_private).unwrap();
    let server_public = lab.start_wireguard(0, &client_public);
    std::thread::sleep(Duration::from_millis(500));

    // Sluice's data plane, in a namespace of its own.
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
    let session = engine.throwaway(&settings).await.expect("session");
    let ns_path = session.ns.path();
    std::thread::sleep(Duration::from_secs(1));
    let cpu0 = cpu_self();
    let sluice_bps = tokio::task::spawn_blocking({
        let server = server_addr.clone();
        move || iperf(&ns_path, &server, SECONDS, false)
    })
    .await
    .unwrap();
    let sluice_cpu = cpu_self() - cpu0;
    drop(session);
    std::thread::sleep(Duration::from_secs(1));

    // wireguard-go as the client, same key, same server, same path.
    let client_ns = format!("{}c", lab.prefix);
    let veth_a = format!("{}ca", lab.prefix);
    let veth_b = format!("{}cb", lab.prefix);
    // Leftovers of an interrupted run.
    let _ = Command::new("ip")
        .args(["netns", "del", &client_ns])
        .output();
    let _ = Command::new("ip").args(["link", "del", &veth_a]).output();
    run(&["ip", "netns", "add", &client_ns]);
    let mut setup = PeerSetup {
        children: vec![],
        client_ns: client_ns.clone(),
        veth: veth_a.clone(),
        host_link: lab.host_link(),
    };
    run(&[
        "ip", "link", "add", &veth_a, "type", "veth", "peer", "name", &veth_b,
    ]);
    run(&["ip", "link", "set", &veth_b, "netns", &client_ns]);
    run(&["ip", "addr", "add", "100.100.0.1/30", "dev", &veth_a]);
    run(&["ip", "link", "set", &veth_a, "up"]);
    run(&[
        "ip",
        "-n",
        &client_ns,
        "addr",
        "add",
        "100.100.0.2/30",
        "dev",
        &veth_b,
    ]);
    run(&["ip", "-n", &client_ns, "link", "set", &veth_b, "up"]);
    run(&[
        "ip",
        "-n",
        &client_ns,
        "route",
        "add",
        &format!("198.18.{}.0/30", lab.k),
        "via",
        "100.100.0.1",
    ]);
    // The host forwards the client's UDP to the lab and masquerades it, as for its own.
    run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    run(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "100.100.0.0/30",
        "-o",
        &lab.host_link(),
        "-j",
        "MASQUERADE",
    ]);
    // Docker sets the FORWARD policy to DROP; let this path through.
    run(&[
        "iptables",
        "-I",
        "FORWARD",
        "-s",
        "100.100.0.0/30",
        "-j",
        "ACCEPT",
    ]);
    run(&[
        "iptables",
        "-I",
        "FORWARD",
        "-d",
        "100.100.0.0/30",
        "-j",
        "ACCEPT",
    ]);
    let wg_iface = format!("{}cw", lab.prefix);
    let sock = format!("/var/run/wireguard/{wg_iface}.sock");
    let _ = std::fs::remove_file(&sock);
    let wg_client = Command::new("ip")
        .args(["netns", "exec", &client_ns, "wireguard-go", "-f", &wg_iface])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("wireguard-go client");
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
    let key_file = std::env::temp_dir().join(format!("{wg_iface}.key"));
    std::fs::write(&key_file, &peer_private).unwrap();
    run(&[
        "ip",
        "netns",
        "exec",
        &client_ns,
        "wg",
        "set",
        &wg_iface,
        "private-key",
        key_file.to_str().unwrap(),
        "peer",
        &server_public,
        "endpoint",
        &lab.endpoint(0),
        "allowed-ips",
        "0.0.0.0/0",
    ]);
    run(&[
        "ip",
        "-n",
        &client_ns,
        "addr",
        "add",
        "10.64.0.3/32",
        "dev",
        &wg_iface,
    ]);
    run(&[
        "ip", "-n", &client_ns, "link", "set", &wg_iface, "mtu", "1420", "up",
    ]);
    run(&[
        "ip",
        "-n",
        &client_ns,
        "route",
        "add",
        &format!("{server_addr}/32"),
        "dev",
        &wg_iface,
    ]);
    let wg_pid = wg_client.id();
    setup.children.push(wg_client);
    let cpu0 = cpu_of(wg_pid);
    let peer_bps = iperf(
        &format!("/var/run/netns/{client_ns}"),
        &server_addr,
        SECONDS,
        false,
    );
    let peer_cpu = cpu_of(wg_pid) - cpu0;
    let _ = std::fs::remove_file(&key_file);
    drop(setup);
    lab.stop_wireguard();

    let gbits = |bps: f64| bps * f64::from(SECONDS) / 1e9;
    println!("WireGuard client throughput, {SECONDS} s of iperf3 each, same server and path:");
    println!(
        "  sluice (boringtun)   {:8.1} Mbit/s   {:.2} CPU s per Gbit",
        sluice_bps / 1e6,
        sluice_cpu / gbits(sluice_bps)
    );
    println!(
        "  wireguard-go         {:8.1} Mbit/s   {:.2} CPU s per Gbit",
        peer_bps / 1e6,
        peer_cpu / gbits(peer_bps)
    );
    println!(
        "  ratio sluice / wireguard-go: throughput {:.2}, CPU per Gbit {:.2}",
        sluice_bps / peer_bps,
        (sluice_cpu / gbits(sluice_bps)) / (peer_cpu / gbits(peer_bps))
    );
}
