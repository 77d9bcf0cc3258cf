//! Reaching into a container's network namespace: a socket created by a short-lived thread
//! that entered the namespace keeps belonging to it, and works from anywhere afterwards.
//! (Never `setns` on a tokio worker: it would move that worker, and every task on it.)

use std::fs::File;
use std::net::SocketAddr;
use std::time::Duration;

/// Connects to `addr` inside the network namespace of process `pid` (the container's init).
pub async fn connect_tcp(
    pid: i64,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("netns-{pid}"))
        .spawn(move || {
            let result = (|| -> std::io::Result<std::net::TcpStream> {
                let ns = File::open(format!("/proc/{pid}/ns/net"))?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
                s.set_nonblocking(true)?;
                Ok(s)
            })();
            let _ = tx.send(result);
        })?;
    let std_stream = rx
        .await
        .map_err(|_| std::io::Error::other("namespace thread ended without an answer"))??;
    tokio::net::TcpStream::from_std(std_stream)
}
