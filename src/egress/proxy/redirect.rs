//! Proxy TCP on the kernel's own TCP stack. Rules in the host's network namespace (the nat
//! table's OUTPUT chain, through `iptables-restore`, run from outside by Sluice) hand every
//! TCP connection the container opens, loopback excepted, to a listener Sluice holds on
//! 127.0.0.1 in that namespace; the original destination is read back (`SO_ORIGINAL_DST`) and
//! the connection is relayed to one through the proxy. The container has no capability to
//! change the rules. If Sluice stops, the listener closes with it and the rules lead nowhere:
//! connections are refused, and nothing leaves (the TUN, the only route, is gone too).
//!
//! Where the rules cannot be installed (no iptables), TCP stays on the TUN's userspace stack,
//! which is slower and just as closed.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};

use tokio::net::{TcpListener, TcpStream};

use crate::netns::NetNs;

/// The program that writes the rules (iptables' own, nft-backed on current Debian).
const IPTABLES_RESTORE: &str = "iptables-restore";

/// The nat table of a host's namespace: everything TCP but loopback to `port` on 127.0.0.1, or
/// (`None`) nothing at all.
fn nat_table(port: Option<u16>) -> String {
    let mut rules = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n",
    );
    if let Some(port) = port {
        rules.push_str("-A OUTPUT -d 127.0.0.0/8 -j RETURN\n");
        rules.push_str(&format!("-A OUTPUT -p tcp -j REDIRECT --to-ports {port}\n"));
    }
    rules.push_str("COMMIT\n");
    rules
}

/// Replaces the nat table of the calling thread's namespace with `rules`, in one step.
fn restore(rules: &str) -> std::io::Result<()> {
    let mut child = Command::new(IPTABLES_RESTORE)
        .arg("-w")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{IPTABLES_RESTORE} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Whether the rules could be written on this machine at all (the program is there).
pub fn available() -> bool {
    Command::new(IPTABLES_RESTORE)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Opens the listener in `ns` (bringing its loopback up, as a fresh namespace has it down) and
/// points the namespace's TCP at it.
pub async fn install(ns: &NetNs) -> std::io::Result<TcpListener> {
    let listener = ns
        .run(|| {
            super::super::tun::loopback_up()?;
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            listener.set_nonblocking(true)?;
            let port = listener.local_addr()?.port();
            restore(&nat_table(Some(port)))?;
            Ok(listener)
        })
        .await?;
    TcpListener::from_std(listener)
}

/// Removes the rules from `ns` (a host moving to another egress, or one a stopped Sluice
/// left them in). A namespace without a nat table, or a machine without iptables, has none.
pub async fn clear(ns: &NetNs) {
    if !available() {
        return;
    }
    if let Err(e) = ns.run(|| restore(&nat_table(None))).await {
        tracing::warn!(error = %e, "cannot clear the proxy redirect of a host");
    }
}

/// Where a redirected connection was going.
pub fn original_destination(stream: &TcpStream) -> std::io::Result<SocketAddrV4> {
    let sin = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::OriginalDst)
        .map_err(std::io::Error::from)?;
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_spare_loopback_and_send_all_other_tcp_to_the_listener() {
        let on = nat_table(Some(40123));
        let lines: Vec<&str> = on.lines().collect();
        let ret = lines
            .iter()
            .position(|l| l.contains("127.0.0.0/8 -j RETURN"));
        let redirect = lines
            .iter()
            .position(|l| *l == "-A OUTPUT -p tcp -j REDIRECT --to-ports 40123");
        assert!(
            ret.is_some() && redirect.is_some() && ret < redirect,
            "{on}"
        );
        assert!(on.ends_with("COMMIT\n"));
        let off = nat_table(None);
        assert!(!off.contains("-A "), "{off}");
    }
}
