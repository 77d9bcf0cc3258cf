//! Network namespaces: running a closure inside one, and making throwaway ones.
//!
//! A socket or TUN device belongs to the namespace of the thread that created it, and keeps
//! working from anywhere afterwards. So namespace-specific work runs on a short-lived thread
//! that entered the namespace (never on a tokio worker: `setns` would move that worker, and
//! every task on it).

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A network namespace: a container's (by its init's pid) or one held open by a file.
#[derive(Debug, Clone)]
pub enum NetNs {
    Pid(i64),
    Held(Arc<File>),
}

impl NetNs {
    fn open(&self) -> std::io::Result<File> {
        match self {
            NetNs::Pid(pid) => File::open(format!("/proc/{pid}/ns/net")),
            NetNs::Held(f) => f.try_clone(),
        }
    }

    /// A path that names this namespace for other programs (`nsenter --net=PATH`, `ip netns
    /// exec` does not take one), valid while this process holds it.
    pub fn path(&self) -> String {
        use std::os::fd::AsRawFd;
        match self {
            NetNs::Pid(pid) => format!("/proc/{pid}/ns/net"),
            NetNs::Held(f) => format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd()),
        }
    }

    /// A new, empty network namespace (no interface but a down `lo`), alive as long as this
    /// value or a clone of it is.
    pub async fn create() -> std::io::Result<NetNs> {
        run_on_thread(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            let f = File::open("/proc/thread-self/ns/net")?;
            Ok(NetNs::Held(Arc::new(f)))
        })
        .await
    }

    /// Runs `f` on a fresh thread inside this namespace.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let ns = self.open()?;
        run_on_thread(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            f()
        })
        .await
    }

    /// Connects to `addr` from inside this namespace.
    pub async fn connect_tcp(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<tokio::net::TcpStream> {
        let s = self
            .run(move || {
                let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .await?;
        tokio::net::TcpStream::from_std(s)
    }

    /// A UDP socket bound to an ephemeral port inside this namespace.
    pub async fn bind_udp(&self) -> std::io::Result<tokio::net::UdpSocket> {
        let s = self
            .run(|| {
                let s = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .await?;
        tokio::net::UdpSocket::from_std(s)
    }
}

/// Runs `f` on a dedicated thread (whose namespace changes die with it).
async fn run_on_thread<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sluice-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("namespace thread ended without an answer"))?
}

/// Connects to `addr` inside the network namespace of process `pid` (a container's init).
pub async fn connect_tcp(
    pid: i64,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    NetNs::Pid(pid).connect_tcp(addr, timeout).await
}
