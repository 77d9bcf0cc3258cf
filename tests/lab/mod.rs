//! The tests' own little internet, in network namespaces this test makes (and removes):
//!
//! ```text
//!  host ns ── <p>h 198.18.K.1/30 ═ veth ═ 198.18.K.2/30 <p>e ── exit ns ── <p>x 10.99.0.1/30 ═ veth ═ 10.99.0.2/30 <p>n ── net ns
//!                                         wireguard-go <p>w0 10.64.0.1/24 :51820 (SNAT -> 203.0.113.10)      echo   198.18.K.80:80
//!                                         wireguard-go <p>w1 10.65.0.1/24 :51821 (SNAT -> 203.0.113.11)      whoami 198.18.K.90:53
//!                                         host's direct traffic            (SNAT -> 198.51.100.1)
//!                                         microsocks :1080, tinyproxy :8888 (socat TLS front :8889), ss-server :8388,
//!                                         trojan :8443, v2ray (VMess :10086, VMess+TLS :10443, SOCKS5+UDP :1081)
//!                                         on 198.18.K.2 (SNAT -> 203.0.113.12)
//! ```
//!
//! The echo server (ports 80 and 443, plain HTTP on both) answers each HTTP request with the
//! caller's address (for `/page`, as an HTML page titled `exit ADDRESS`; for `/bytes/N`, N
//! bytes of a fixed pattern); the DNS server answers `echo.lab.test` with the echo server's
//! address, any other name with the querying address (A and TXT), and logs every query's
//! source. Both run in this test process, on a thread inside the net namespace. The proxy
//! servers resolve names through that DNS server (the exit namespace's resolv.conf, which
//! `ip netns exec` mounts from /etc/netns). Traffic goes nowhere else.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

/// What the DNS server saw: (source address, queried name).
pub type QueryLog = Arc<Mutex<Vec<(IpAddr, String)>>>;

pub struct Lab {
    pub prefix: String,
    /// Third octet of this lab's 198.18.K.0/24.
    pub k: u8,
    wg: Vec<Child>,
    proxies: Vec<Child>,
    /// Other servers (iperf3): stopped with the lab.
    servers: Vec<Child>,
    pub queries: QueryLog,
    dir: tempfile::TempDir,
    /// Held for the lab's life: no other lab on this machine uses the same K.
    _claim: std::fs::File,
}

/// Claims a free K (an flock on /tmp/sluice-lab-K.lock), so parallel labs never share
/// addresses or names.
fn claim() -> (u8, std::fs::File) {
    for k in 20u8..250 {
        let f = std::fs::File::create(format!("/tmp/sluice-lab-{k}.lock")).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return (k, f);
        }
    }
    panic!("no free lab slot");
}

/// Exit addresses the lab's router gives each path.
pub const EXIT_WG0: &str = "203.0.113.10";
pub const EXIT_WG1: &str = "203.0.113.11";
/// Where the lab's proxy servers' traffic appears to come from.
pub const EXIT_PROXY: &str = "203.0.113.12";
pub const EXIT_DIRECT: &str = "198.51.100.1";
/// The name the lab's DNS server answers with the echo server's address.
pub const ECHO_NAME: &str = "echo.lab.test";

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    pub fn new() -> Lab {
        let (k, claim) = claim();
        let prefix = format!("slab{k}");
        let p = &prefix;
        let (exit, net) = (format!("{p}e"), format!("{p}n"));
        // Leftovers of an earlier run with the same pid.
        let _ = Command::new("ip").args(["netns", "del", &exit]).output();
        let _ = Command::new("ip").args(["netns", "del", &net]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{p}h")])
            .output();
        let lab = Lab {
            prefix: prefix.clone(),
            k,
            wg: vec![],
            proxies: vec![],
            servers: vec![],
            queries: Arc::new(Mutex::new(vec![])),
            dir: tempfile::tempdir().unwrap(),
            _claim: claim,
        };
        let h = format!("{p}h");
        let e = format!("{p}e");
        let x = format!("{p}x");
        let n = format!("{p}n");
        run(&["ip", "netns", "add", &exit]);
        run(&["ip", "netns", "add", &net]);
        // host <-> exit
        run(&["ip", "link", "add", &h, "type", "veth", "peer", "name", &e]);
        run(&["ip", "link", "set", &e, "netns", &exit]);
        // No IPv6 chatter on the lab links: a capture there must see only what hosts send.
        run(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{h}.disable_ipv6=1"),
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &exit,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &exit,
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        run(&["ip", "addr", "add", &format!("198.18.{k}.1/30"), "dev", &h]);
        run(&["ip", "link", "set", &h, "up"]);
        run(&[
            "ip",
            "-n",
            &exit,
            "addr",
            "add",
            &format!("198.18.{k}.2/30"),
            "dev",
            &e,
        ]);
        run(&["ip", "-n", &exit, "link", "set", &e, "up"]);
        run(&["ip", "-n", &exit, "link", "set", "lo", "up"]);
        // exit <-> net
        run(&[
            "ip", "-n", &exit, "link", "add", &x, "type", "veth", "peer", "name", &n,
        ]);
        run(&["ip", "-n", &exit, "link", "set", &n, "netns", &net]);
        run(&["ip", "-n", &exit, "addr", "add", "10.99.0.1/30", "dev", &x]);
        run(&["ip", "-n", &exit, "link", "set", &x, "up"]);
        run(&["ip", "-n", &net, "addr", "add", "10.99.0.2/30", "dev", &n]);
        run(&["ip", "-n", &net, "link", "set", &n, "up"]);
        run(&["ip", "-n", &net, "link", "set", "lo", "up"]);
        for a in [80, 90] {
            run(&[
                "ip",
                "-n",
                &net,
                "addr",
                "add",
                &format!("198.18.{k}.{a}/32"),
                "dev",
                "lo",
            ]);
        }
        // Routes: the servers sit behind the exit router; the net side routes the exit
        // addresses back to it.
        run(&[
            "ip",
            "route",
            "add",
            &format!("198.18.{k}.64/26"),
            "via",
            &format!("198.18.{k}.2"),
        ]);
        run(&[
            "ip",
            "-n",
            &exit,
            "route",
            "add",
            &format!("198.18.{k}.64/26"),
            "via",
            "10.99.0.2",
        ]);
        for back in ["203.0.113.0/24", "198.51.100.0/24"] {
            run(&["ip", "-n", &net, "route", "add", back, "via", "10.99.0.1"]);
        }
        run(&[
            "ip",
            "netns",
            "exec",
            &exit,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        let nat = |src: &str, to: &str| {
            run(&[
                "ip",
                "netns",
                "exec",
                &exit,
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                src,
                "-o",
                &x,
                "-j",
                "SNAT",
                "--to-source",
                to,
            ]);
        };
        nat("10.64.0.0/24", EXIT_WG0);
        nat("10.65.0.0/24", EXIT_WG1);
        nat(&format!("198.18.{k}.0/30"), EXIT_DIRECT);
        // The proxy servers run in the exit namespace; what they dial leaves from 10.99.0.1.
        nat("10.99.0.1/32", EXIT_PROXY);
        // What the lab's programs (the proxy servers) resolve goes to the lab's DNS server.
        let etc = format!("/etc/netns/{exit}");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            format!("{etc}/resolv.conf"),
            format!("nameserver {}\n", lab.dns()),
        )
        .unwrap();
        lab.start_servers();
        lab
    }

    pub fn exit_ns(&self) -> String {
        format!("{}e", self.prefix)
    }
    pub fn net_ns(&self) -> String {
        format!("{}n", self.prefix)
    }
    /// The host side of the lab link, where a capture sees what leaves the host.
    pub fn host_link(&self) -> String {
        format!("{}h", self.prefix)
    }
    pub fn echo(&self) -> String {
        format!("198.18.{}.80", self.k)
    }
    pub fn dns(&self) -> String {
        format!("198.18.{}.90", self.k)
    }
    /// The WireGuard endpoint of server `i` (0 or 1).
    pub fn endpoint(&self, i: u8) -> String {
        format!("198.18.{}.2:{}", self.k, 51820 + u16::from(i))
    }

    /// Starts WireGuard server `i` (0 or 1) with `client_public` as its peer; answers the
    /// server's public key. The client's tunnel address is 10.64.0.2 (server 0) or 10.65.0.2.
    pub fn start_wireguard(&mut self, i: u8, client_public: &str) -> String {
        let iface = format!("{}w{i}", self.prefix);
        let private = sluice::egress::settings::generate_private_key();
        let public = sluice::egress::settings::public_key_of(&private).unwrap();
        let key_file = self.dir.path().join(format!("wg{i}.key"));
        std::fs::write(&key_file, &private).unwrap();
        let sock = format!("/var/run/wireguard/{iface}.sock");
        // A socket left by an earlier, killed run would fool the wait below.
        let _ = std::fs::remove_file(&sock);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.exit_ns(),
                "wireguard-go",
                "-f",
                &iface,
            ])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("wireguard-go");
        self.wg.push(child);
        for _ in 0..200 {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let net = 64 + i;
        run(&[
            "ip",
            "netns",
            "exec",
            &self.exit_ns(),
            "wg",
            "set",
            &iface,
            "private-key",
            key_file.to_str().unwrap(),
            "listen-port",
            &(51820 + u16::from(i)).to_string(),
            "peer",
            client_public,
            "allowed-ips",
            &format!("10.{net}.0.2/32"),
        ]);
        run(&[
            "ip",
            "-n",
            &self.exit_ns(),
            "addr",
            "add",
            &format!("10.{net}.0.1/24"),
            "dev",
            &iface,
        ]);
        run(&["ip", "-n", &self.exit_ns(), "link", "set", &iface, "up"]);
        public
    }

    /// Server `i` takes `new_public` as its client in place of `old_public` (the provider
    /// registered new keys): the old key's sessions end there.
    pub fn replace_wireguard_peer(&self, i: u8, old_public: &str, new_public: &str) {
        let iface = format!("{}w{i}", self.prefix);
        let allowed = format!("10.{}.0.2/32", 64 + i);
        run(&[
            "ip",
            "netns",
            "exec",
            &self.exit_ns(),
            "wg",
            "set",
            &iface,
            "peer",
            old_public,
            "remove",
            "peer",
            new_public,
            "allowed-ips",
            &allowed,
        ]);
    }

    /// Unix seconds of server `i`'s last handshake with `public` (0: none).
    pub fn wireguard_handshake(&self, i: u8, public: &str) -> u64 {
        let iface = format!("{}w{i}", self.prefix);
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.exit_ns(),
                "wg",
                "show",
                &iface,
                "latest-handshakes",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                let (k, t) = l.split_once('\t')?;
                (k == public).then(|| t.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0)
    }

    /// Starts two listeners beside the proxy servers, in the exit namespace, on addresses no
    /// tenant should reach through a proxy: the exit router's private address 10.99.0.1:8099
    /// (answers `private`) and a cloud metadata address, 169.254.169.254:80 on the exit
    /// namespace's loopback (answers `metadata`). Answers both addresses as `ip:port`.
    pub fn start_internal_listeners(&mut self) -> (String, String) {
        let exit = self.exit_ns();
        run(&[
            "ip",
            "-n",
            &exit,
            "addr",
            "add",
            "169.254.169.254/32",
            "dev",
            "lo",
        ]);
        let mut out = Vec::new();
        for (ip, port, answer) in [
            ("10.99.0.1", 8099, "private"),
            ("169.254.169.254", 80, "metadata"),
        ] {
            let child = Command::new("ip")
                .args(["netns", "exec", &exit, "socat"])
                .arg(format!("TCP-LISTEN:{port},bind={ip},reuseaddr,fork"))
                .arg(format!("SYSTEM:echo {answer}"))
                .spawn()
                .expect("socat");
            self.servers.push(child);
            for attempt in 0.. {
                let ok = Command::new("ip")
                    .args(["netns", "exec", &exit, "bash", "-c"])
                    .arg(format!("exec 3<>/dev/tcp/{ip}/{port}"))
                    .status()
                    .unwrap()
                    .success();
                if ok {
                    break;
                }
                assert!(attempt < 100, "nothing listens on {ip}:{port}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            out.push(format!("{ip}:{port}"));
        }
        (out[0].clone(), out[1].clone())
    }

    /// Starts microsocks (SOCKS5) on 198.18.K.2:1080, with a user and password when given.
    pub fn start_socks(&mut self, auth: Option<(&str, &str)>) -> (String, u16) {
        let ip = format!("198.18.{}.2", self.k);
        let mut args = vec!["netns", "exec", &self.exit_ns()]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        args.extend(["microsocks", "-i", &ip, "-p", "1080"].map(String::from));
        if let Some((u, p)) = auth {
            args.extend(["-u", u, "-P", p].map(String::from));
        }
        let child = Command::new("ip").args(&args).spawn().expect("microsocks");
        self.proxies.push(child);
        wait_listening(&ip, 1080);
        (ip, 1080)
    }

    /// Starts tinyproxy (HTTP CONNECT) on 198.18.K.2:8888, with basic auth when given.
    pub fn start_http_proxy(&mut self, auth: Option<(&str, &str)>) -> (String, u16) {
        self.start_tinyproxy(8888, auth, "")
    }

    /// Starts tinyproxy on 198.18.K.2:8890 allowing `CONNECT` only to port 443, as Squid's and
    /// tinyproxy's own example configurations do.
    pub fn start_http_proxy_443_only(&mut self, auth: Option<(&str, &str)>) -> (String, u16) {
        self.start_tinyproxy(8890, auth, "ConnectPort 443\n")
    }

    fn start_tinyproxy(
        &mut self,
        port: u16,
        auth: Option<(&str, &str)>,
        extra: &str,
    ) -> (String, u16) {
        let ip = format!("198.18.{}.2", self.k);
        let conf = self.dir.path().join(format!("tinyproxy-{port}.conf"));
        let mut text = format!(
            "User nobody\nGroup nogroup\nPort {port}\nListen {ip}\nTimeout 600\nMaxClients 200\nAllow 198.18.0.0/15\nLogLevel Error\n{extra}"
        );
        if let Some((u, p)) = auth {
            text.push_str(&format!("BasicAuth {u} {p}\n"));
        }
        std::fs::write(&conf, text).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.exit_ns(), "tinyproxy", "-d", "-c"])
            .arg(&conf)
            .spawn()
            .expect("tinyproxy");
        self.proxies.push(child);
        wait_listening(&ip, port);
        (ip, port)
    }

    /// Starts shadowsocks-libev's ss-server on 198.18.K.2:8388 (TCP and UDP) with `method`
    /// and `password`.
    pub fn start_shadowsocks(&mut self, method: &str, password: &str) -> (String, u16) {
        let ip = format!("198.18.{}.2", self.k);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.exit_ns(),
                "ss-server",
                "-s",
                &ip,
                "-p",
                "8388",
            ])
            .args(["-u", "-k", password, "-m", method])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ss-server");
        self.proxies.push(child);
        wait_listening(&ip, 8388);
        (ip, 8388)
    }

    /// The lab's self-signed certificate and key (P-256), valid for `trojan.lab.test`,
    /// `vmess.lab.test` and `https-proxy.lab.test`; made once per lab.
    fn certificate(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = self.dir.path();
        let (cert, key) = (dir.join("lab.crt"), dir.join("lab.key"));
        if !cert.exists() {
            run(&[
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=trojan.lab.test",
                "-addext",
                "subjectAltName=DNS:trojan.lab.test,DNS:vmess.lab.test,DNS:https-proxy.lab.test",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ]);
        }
        (cert, key)
    }

    /// Starts `program` with `args` in the exit namespace as one of the lab's proxies.
    fn spawn_proxy(&mut self, program: &str, args: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.exit_ns(), program])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        self.proxies.push(child);
    }

    /// Starts Debian's trojan server on 198.18.K.2:8443 with the lab's certificate and
    /// `password`.
    pub fn start_trojan(&mut self, password: &str) -> (String, u16) {
        let ip = format!("198.18.{}.2", self.k);
        let (cert, key) = self.certificate();
        let conf = self.dir.path().join("trojan.json");
        let config = serde_json::json!({
            "run_type": "server",
            "local_addr": ip,
            "local_port": 8443,
            "remote_addr": "127.0.0.1",
            "remote_port": 9,
            "password": [password],
            "log_level": 3,
            "ssl": {"cert": cert, "key": key, "alpn": ["http/1.1"]},
        });
        std::fs::write(&conf, config.to_string()).unwrap();
        self.spawn_proxy("trojan", &["-c", conf.to_str().unwrap()]);
        wait_listening(&ip, 8443);
        (ip, 8443)
    }

    /// Starts a TLS front (socat) on 198.18.K.2:8889 for tinyproxy on :8888, which must be
    /// running: HTTP CONNECT over TLS, with the lab's certificate.
    pub fn start_https_front(&mut self) -> (String, u16) {
        let ip = format!("198.18.{}.2", self.k);
        let (cert, key) = self.certificate();
        let listen = format!(
            "OPENSSL-LISTEN:8889,bind={ip},reuseaddr,fork,verify=0,cert={},key={}",
            cert.display(),
            key.display()
        );
        let to = format!("TCP:{ip}:8888");
        self.spawn_proxy("socat", &[&listen, &to]);
        wait_listening(&ip, 8889);
        (ip, 8889)
    }

    /// Starts Debian's v2ray (4.34) with one user `uuid` (alterId 0): VMess on
    /// 198.18.K.2:10086, VMess over TLS (the lab's certificate) on :10443, and a SOCKS5
    /// server with UDP ASSOCIATE on :1081. Returns the address and the three ports.
    pub fn start_v2ray(&mut self, uuid: &str) -> (String, u16, u16, u16) {
        let ip = format!("198.18.{}.2", self.k);
        let (cert, key) = self.certificate();
        let client = serde_json::json!([{"id": uuid, "alterId": 0}]);
        let config = serde_json::json!({
            "log": {"loglevel": "none"},
            "inbounds": [
                {"listen": ip, "port": 10086, "protocol": "vmess",
                 "settings": {"clients": client}},
                {"listen": ip, "port": 10443, "protocol": "vmess",
                 "settings": {"clients": client},
                 "streamSettings": {"network": "tcp", "security": "tls",
                    "tlsSettings": {"certificates": [
                        {"certificateFile": cert, "keyFile": key}]}}},
                {"listen": ip, "port": 1081, "protocol": "socks",
                 "settings": {"auth": "noauth", "udp": true, "ip": ip}},
            ],
            "outbounds": [{"protocol": "freedom", "settings": {}}],
        });
        let conf = self.dir.path().join("v2ray.json");
        std::fs::write(&conf, config.to_string()).unwrap();
        self.spawn_proxy("v2ray", &["-config", conf.to_str().unwrap()]);
        for port in [10086, 10443, 1081] {
            wait_listening(&ip, port);
        }
        (ip, 10086, 10443, 1081)
    }

    /// Starts an iperf3 server on the echo address (port 5201), stopped with the lab; answers
    /// the address.
    pub fn start_iperf3(&mut self) -> String {
        let ip = self.echo();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.net_ns(), "iperf3", "-s", "-B", &ip])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("iperf3 server");
        self.servers.push(child);
        wait_listening(&ip, 5201);
        ip
    }

    /// Starts a sink on the echo address's `port` that accepts connections and reads nothing
    /// for `wait` seconds, then everything: answers its address. (Each connection's reader
    /// outlives the lab by up to `wait` seconds; keep it short.)
    pub fn start_sink(&mut self, port: u16, wait: u32) -> (String, u16) {
        let ip = self.echo();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.net_ns(), "socat"])
            .arg(format!("TCP-LISTEN:{port},bind={ip},reuseaddr,fork"))
            .arg(format!("SYSTEM:sleep {wait}; cat >/dev/null"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat sink");
        self.servers.push(child);
        wait_listening(&ip, port);
        (ip, port)
    }

    /// Starts a server that speaks first, as SSH does, on the echo address's port 2222: it
    /// sends `sluice-lab-banner` and a newline to each connection, before reading anything.
    pub fn start_banner(&mut self) -> (String, u16) {
        let ip = self.echo();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.net_ns(), "socat"])
            .arg(format!("TCP-LISTEN:2222,bind={ip},reuseaddr,fork"))
            .arg("SYSTEM:echo sluice-lab-banner; sleep 2")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat");
        self.proxies.push(child);
        wait_listening(&ip, 2222);
        (ip, 2222)
    }

    /// Kills the proxy servers (SIGKILL: no goodbye to their clients).
    pub fn stop_proxies(&mut self) {
        for mut c in self.proxies.drain(..) {
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    /// Process ids of the running WireGuard servers (for their CPU time).
    pub fn wireguard_pids(&self) -> Vec<u32> {
        self.wg.iter().map(Child::id).collect()
    }

    /// Process ids of the running proxy servers (for their CPU time).
    pub fn proxy_pids(&self) -> Vec<u32> {
        self.proxies.iter().map(Child::id).collect()
    }

    /// Stops every WireGuard server.
    pub fn stop_wireguard(&mut self) {
        for mut c in self.wg.drain(..) {
            // `ip netns exec` execs wireguard-go, which removes its socket on SIGTERM.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    fn start_servers(&self) {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.net_ns())).unwrap();
        let echo_ip = self.echo().parse::<Ipv4Addr>().unwrap();
        let echo: SocketAddr = (echo_ip, 80).into();
        let echo_tls_port: SocketAddr = (echo_ip, 443).into();
        let dns: SocketAddr = (self.dns().parse::<Ipv4Addr>().unwrap(), 53).into();
        let queries = self.queries.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let http = tokio::net::TcpListener::bind(echo).await.unwrap();
                let http_443 = tokio::net::TcpListener::bind(echo_tls_port).await.unwrap();
                let udp = tokio::net::UdpSocket::bind(dns).await.unwrap();
                let tcp = tokio::net::TcpListener::bind(dns).await.unwrap();
                tx.send(()).unwrap();
                tokio::spawn(serve_echo(http));
                tokio::spawn(serve_echo(http_443));
                tokio::spawn(serve_dns_tcp(tcp, queries.clone(), echo_ip));
                serve_dns(udp, queries, echo_ip).await;
            });
        });
        rx.recv().unwrap();
    }

    /// Sources of the DNS queries seen so far for names containing `part`.
    pub fn resolvers_for(&self, part: &str) -> Vec<IpAddr> {
        self.queries
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| n.contains(part))
            .map(|(ip, _)| *ip)
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_wireguard();
        self.stop_proxies();
        for mut c in self.servers.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.exit_ns()])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.net_ns()])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link()])
            .output();
        let _ = Command::new("ip")
            .args(["route", "del", &format!("198.18.{}.64/26", self.k)])
            .output();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.exit_ns()));
    }
}

/// Bytes `from..from+len` of the echo server's `/bytes/N` answer (a fixed pattern, so a
/// checksum can be computed on either side).
pub fn bulk(from: usize, len: usize) -> Vec<u8> {
    (from..from + len)
        .map(|i| (i.wrapping_mul(7).wrapping_add(i >> 11) % 251) as u8)
        .collect()
}

async fn serve_echo(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut s, peer)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&got).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            if let Some(n) = path
                .strip_prefix("/bytes/")
                .and_then(|n| n.parse::<usize>().ok())
            {
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                );
                if s.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
                let mut sent = 0;
                while sent < n {
                    let chunk = bulk(sent, (n - sent).min(65536));
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                }
                return;
            }
            // `/page`: the same answer as a page whose title a browser shows (window titles
            // are readable from outside a desktop).
            let (body, kind) = if path == "/page" {
                let ip = peer.ip();
                (
                    format!("<!doctype html><title>exit {ip}</title><h1>exit {ip}</h1>"),
                    "text/html",
                )
            } else {
                (peer.ip().to_string(), "text/plain")
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

/// Waits up to about 25 s until something accepts TCP on `ip:port` (the lab's host side can
/// reach 198.18.K.2); panics if nothing does.
pub fn wait_listening(ip: &str, port: u16) {
    let addr: SocketAddr = (ip.parse::<Ipv4Addr>().unwrap(), port).into();
    for _ in 0..100 {
        if std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
            .is_ok()
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nothing listens on {addr}");
}

/// The whoami answer to a query from `from`: A and TXT carry the querying address, but for
/// [`ECHO_NAME`], whose A is `echo`.
fn answer(query: &[u8], from: IpAddr, log: &QueryLog, echo: Ipv4Addr) -> Option<Vec<u8>> {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::rdata::{A, TXT};
    use hickory_proto::rr::{RData, Record, RecordType};
    let req = Message::from_vec(query).ok()?;
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    for q in &req.queries {
        log.lock()
            .unwrap()
            .push((from, q.name().to_ascii().to_lowercase()));
        resp.add_query(q.clone());
        let is_echo = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .eq_ignore_ascii_case(ECHO_NAME);
        let rdata = match (q.query_type(), from) {
            (RecordType::A, _) if is_echo => Some(RData::A(A(echo))),
            (RecordType::A, IpAddr::V4(ip)) => Some(RData::A(A(ip))),
            (RecordType::TXT, ip) => Some(RData::TXT(TXT::new(vec![ip.to_string()]))),
            _ => None,
        };
        if let Some(rdata) = rdata {
            resp.add_answer(Record::from_rdata(q.name().clone(), 0, rdata));
        }
    }
    resp.metadata.response_code = ResponseCode::NoError;
    resp.to_vec().ok()
}

async fn serve_dns(udp: tokio::net::UdpSocket, log: QueryLog, echo: Ipv4Addr) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = udp.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(bytes) = answer(&buf[..n], from.ip(), &log, echo) {
            let _ = udp.send_to(&bytes, from).await;
        }
    }
}

/// DNS over TCP (two-byte length prefix), as a proxy egress asks it.
async fn serve_dns_tcp(listener: tokio::net::TcpListener, log: QueryLog, echo: Ipv4Addr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut s, from)) = listener.accept().await else {
            continue;
        };
        let log = log.clone();
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if s.read_exact(&mut q).await.is_err() {
                    return;
                }
                let Some(a) = answer(&q, from.ip(), &log, echo) else {
                    return;
                };
                let mut msg = (a.len() as u16).to_be_bytes().to_vec();
                msg.extend_from_slice(&a);
                if s.write_all(&msg).await.is_err() {
                    return;
                }
            }
        });
    }
}
