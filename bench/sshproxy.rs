//! SSH proxy cost: 1 GiB downloaded through Sluice's proxy on :2222, against the same
//! transfer straight to the container's sshd and through an OpenSSH ProxyJump bastion, in one
//! run, on one host. Prints each throughput, the ratios, the connect latency each path adds,
//! and what each path costs the machine in CPU: busy share of its cores and CPU seconds per
//! GiB (all processes), and Sluice's own share on its path. When the direct transfer already
//! keeps the cores busy, a hop that decrypts and re-encrypts every byte competes with it for
//! them, and the CPU figures say how much of the throughput ratio that explains.
//! Run as root: `cargo bench --bench sshproxy`. Needs Docker (with the base image that
//! scripts/base-image.sh makes), OpenSSH's client and server (`sshd` for the bastion).
//!
//! The direct and bastion clients run inside the container's network namespace (that is where
//! its sshd listens, on 127.0.0.1:22); the bastion is a stock sshd on 127.0.0.1:2022 there.
//! Every client uses aes256-gcm and curve25519-sha256, so the paths differ only in their hops.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
mod measure;

use measure::{cores, cpu_machine, cpu_self, cpu_thread};

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::runtime::HostRuntime;
use sluice::runtime::docker::DockerRuntime;

const BYTES: u64 = 1024 * 1024 * 1024;
const ROUNDS: usize = 5;
const CONNECTS: usize = 7;

/// One way of reaching the host: the command words before the remote command.
struct Route {
    name: &'static str,
    argv: Vec<String>,
}

/// One run of a route: how long it took, the bytes it brought, and the CPU seconds spent
/// meanwhile by the machine and by Sluice (this process, less the thread reading the output).
struct Run {
    elapsed: Duration,
    bytes: u64,
    machine: f64,
    sluice: f64,
}

impl Route {
    fn run(&self, remote: &str) -> Run {
        let (machine, own, reader) = (cpu_machine(), cpu_self(), cpu_thread());
        let start = Instant::now();
        let mut child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .arg(remote)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh runs");
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k as u64,
            }
        }
        let status = child.wait().expect("ssh exits");
        let elapsed = start.elapsed();
        let machine = cpu_machine() - machine;
        let sluice = (cpu_self() - own) - (cpu_thread() - reader);
        if !status.success() {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("{}: ssh failed: {err}", self.name);
        }
        Run {
            elapsed,
            bytes: n,
            machine,
            sluice,
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ssh_opts(known_hosts: &Path) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        // The same algorithms on every path, so the comparison is of paths, not of ciphers
        // (OpenSSH alone would pick chacha20 and a post-quantum key exchange).
        "-o",
        "Ciphers=aes256-gcm@openssh.com",
        "-o",
        "KexAlgorithms=curve25519-sha256",
        "-o",
        &format!("UserKnownHostsFile={}", known_hosts.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let url = common::database_url(common::Backend::Sqlite, &dir).await;
    let mut settings = common::settings(&dir, url);
    settings.public_host = None;
    let runtime = Arc::new(DockerRuntime::new(&dir).expect("docker runtime"));
    common::docker::ensure_image(&runtime).await;
    let _cleanup = common::docker::Cleanup(runtime.instance().to_string());
    let dynamic: Arc<dyn HostRuntime> = runtime.clone();
    let server = common::Server::start_on(
        settings,
        dynamic,
        common::RecordingRuntime::default(),
        dir.clone(),
        None,
    )
    .await;
    let admin = server.admin().await;
    let (user_id, _) = server.user(&admin, "bench").await;
    let key = dir.join("id_ed25519");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen")
            .success()
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    server
        .post(
            &format!("/v1/admin/users/{user_id}/ssh-keys"),
            &admin,
            json!({"public_key": public}),
        )
        .await;
    let host = server.host(&admin, &user_id, json!({})).await;
    let short = host["short_id"].as_str().expect("short id").to_string();
    let host_id = host["id"].as_str().expect("id").to_string();
    let pid = common::docker::container_pid(&short);
    let host_files = dir.join("hosts").join(&host_id);
    let internal_key = host_files.join("internal_key");
    let pinned = std::fs::read_to_string(host_files.join("etc/ssh_host_ed25519_key.pub"))
        .expect("pinned key");

    // The bastion: a stock sshd in the container's namespace, on 127.0.0.1:2022.
    let bastion_key = dir.join("bastion_host_key");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&bastion_key)
        .status()
        .expect("ssh-keygen");
    std::fs::write(dir.join("bastion_authorized"), &public).expect("authorized keys");
    std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    let config = dir.join("bastion_config");
    std::fs::write(
        &config,
        format!(
            "Port 2022\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nAllowTcpForwarding yes\n",
            bastion_key.display(),
            dir.join("bastion_authorized").display()
        ),
    )
    .expect("bastion config");
    let sshd = which("sshd").expect("sshd (openssh-server) is needed for the bastion");
    let mut bastion = Command::new("nsenter")
        .args(["-t", &pid, "-n"])
        .arg(&sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .expect("bastion sshd");
    std::thread::sleep(Duration::from_millis(500));

    let port = server.ssh_addr.port();
    let known = dir.join("known_hosts");
    std::fs::write(
        &known,
        format!(
            "{}\n127.0.0.1 {}\n[127.0.0.1]:2022 {}",
            server
                .running
                .as_ref()
                .expect("running")
                .ssh
                .known_hosts_line("127.0.0.1", port),
            pinned.trim(),
            std::fs::read_to_string(bastion_key.with_extension("pub"))
                .expect("bastion key")
                .trim()
        ),
    )
    .expect("known_hosts");
    let opts = ssh_opts(&known);
    let mut proxy = vec!["ssh".to_string()];
    proxy.extend(opts.clone());
    proxy.extend([
        "-i".into(),
        key.display().to_string(),
        "-p".into(),
        port.to_string(),
        format!("{short}@127.0.0.1"),
    ]);
    let mut direct: Vec<String> = ["nsenter", "-t", &pid, "-n", "ssh"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    direct.extend(opts.clone());
    direct.extend([
        "-i".into(),
        internal_key.display().to_string(),
        "bench@127.0.0.1".into(),
    ]);
    let mut jump = direct.clone();
    let at = jump.len() - 1;
    jump.insert(at, "-o".into());
    jump.insert(
        at + 1,
        format!(
            "ProxyCommand=ssh {} -i {} -p 2022 -W %h:%p root@127.0.0.1",
            opts.join(" "),
            key.display()
        ),
    );
    let paths = [
        Route {
            name: "sluice proxy (:2222)",
            argv: proxy,
        },
        Route {
            name: "direct to sshd",
            argv: direct,
        },
        Route {
            name: "ProxyJump bastion",
            argv: jump,
        },
    ];

    let mut transfer = vec![vec![]; paths.len()];
    let mut connect = vec![vec![]; paths.len()];
    // CPU seconds summed over the rounds: (machine, Sluice, elapsed seconds).
    let mut cpu = vec![(0.0, 0.0, 0.0); paths.len()];
    for _ in 0..ROUNDS {
        for (i, p) in paths.iter().enumerate() {
            let run = p.run(&format!("head -c {BYTES} /dev/zero"));
            assert_eq!(run.bytes, BYTES, "{}: short transfer", p.name);
            transfer[i].push(run.elapsed);
            cpu[i].0 += run.machine;
            cpu[i].1 += run.sluice;
            cpu[i].2 += run.elapsed.as_secs_f64();
        }
    }
    for _ in 0..CONNECTS {
        for (i, p) in paths.iter().enumerate() {
            connect[i].push(p.run("true").elapsed);
        }
    }
    let _ = bastion.kill();
    let _ = bastion.wait();

    let mib = (BYTES / (1024 * 1024)) as f64;
    let gib = mib / 1024.0 * ROUNDS as f64;
    let rate: Vec<f64> = transfer
        .into_iter()
        .map(|v| mib / median(v).as_secs_f64())
        .collect();
    let conn: Vec<Duration> = connect.into_iter().map(median).collect();
    println!(
        "{mib} MiB download (login included), median of {ROUNDS}; login + `true`, median of {CONNECTS}:"
    );
    for (i, p) in paths.iter().enumerate() {
        let (machine, sluice, secs) = cpu[i];
        println!(
            "  {:<22} {:>8.1} MiB/s   connect {:>6.0} ms   cores busy {:>3.0}%   CPU {:.2} s/GiB (Sluice {:.2})",
            p.name,
            rate[i],
            conn[i].as_secs_f64() * 1000.0,
            100.0 * machine / secs / cores() as f64,
            machine / gib,
            sluice / gib,
        );
    }
    println!(
        "throughput ratio: proxy/direct {:.2}, proxy/bastion {:.2}",
        rate[0] / rate[1],
        rate[0] / rate[2]
    );
    // Were the cores the limit, throughput would go as the inverse of CPU per GiB.
    println!(
        "CPU per GiB, direct/proxy {:.2}: the ratio the proxy could reach on these {} cores if both kept them fully busy",
        cpu[1].0 / cpu[0].0,
        cores()
    );
    println!(
        "added connect latency: vs direct {:+.0} ms, vs bastion {:+.0} ms",
        (conn[0].as_secs_f64() - conn[1].as_secs_f64()) * 1000.0,
        (conn[0].as_secs_f64() - conn[2].as_secs_f64()) * 1000.0
    );
    drop(server);
}

fn which(name: &str) -> Option<String> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"] {
        let p = format!("{dir}/{name}");
        if Path::new(&p).exists() {
            return Some(p);
        }
    }
    None
}
