//! What the benchmarks measure with: an iperf3 client run from a namespace, and CPU time of
//! this process and of others (for "CPU seconds per Gbit").
#![allow(dead_code)]

/// Runs an iperf3 client for `seconds` from the namespace at `ns_path` (a path `nsenter
/// --net=` takes) against `server`, downloading when `reverse`: bits per second received.
pub fn iperf(ns_path: &str, server: &str, seconds: u32, reverse: bool) -> f64 {
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net={ns_path}")).args([
        "timeout",
        "60",
        "iperf3",
        "-c",
        server,
        "-t",
        &seconds.to_string(),
        "-J",
        "--connect-timeout",
        "5000",
    ]);
    if reverse {
        cmd.arg("-R");
    }
    let out = cmd.output().expect("iperf3");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| {
            panic!(
                "iperf3 from {ns_path} failed: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
}

/// User and system CPU seconds `who` (RUSAGE_SELF, RUSAGE_THREAD) has used.
fn rusage_seconds(who: libc::c_int) -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// User and system CPU seconds this process has used.
pub fn cpu_self() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF)
}

/// User and system CPU seconds process `pid` has used (0 once it is gone).
pub fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let f = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (f(11) + f(12)) / ticks
}

/// CPU seconds of `pid` and all its descendants.
pub fn cpu_tree(pid: u32) -> f64 {
    let mut total = cpu_of(pid);
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            total += cpu_tree(child);
        }
    }
    total
}

/// User and system CPU seconds the calling thread has used.
pub fn cpu_thread() -> f64 {
    rusage_seconds(libc::RUSAGE_THREAD)
}

/// CPU seconds the whole machine has spent busy (everything but idle, I/O wait and steal),
/// summed over its cores, from /proc/stat.
pub fn cpu_machine() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let busy: f64 = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .enumerate()
        // user nice system idle iowait irq softirq steal guest guest_nice: idle, iowait and
        // steal (time the hypervisor gave elsewhere) are not this machine's work, and guest
        // times are already inside user and nice.
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum();
    busy / ticks
}

/// The cores [`cpu_machine`] sums over (its `cpuN` lines in /proc/stat).
pub fn cores() -> usize {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let n = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    n.max(1)
}
