//! The TUN device of a host's egress, made inside the host's network namespace: address, MTU,
//! and the default route through it. When its file descriptor closes, the device and its
//! route vanish, so a dead engine leaves the namespace without any route: it fails closed.

use std::ffi::CString;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::netns::NetNs;

/// Name of the device inside the namespace.
pub const DEVICE: &str = "sluice0";
/// MTU of the tunnel (WireGuard over IPv4 leaves 1420 of a 1500 link).
pub const MTU: u16 = 1420;

/// Opens the TUN in `ns` with `address`, and routes everything through it.
pub async fn open(ns: &NetNs, address: Ipv4Net) -> std::io::Result<tun_rs::AsyncDevice> {
    open_with(ns, address, false).await
}

/// The same, with the TUN's offloads on (virtio headers; TCP bursts read and written whole),
/// where the kernel allows; answers the device and whether they are on.
pub async fn open_offloaded(
    ns: &NetNs,
    address: Ipv4Net,
) -> std::io::Result<(tun_rs::AsyncDevice, bool)> {
    match open_with(ns, address, true).await {
        Ok(dev) => Ok((dev, true)),
        Err(e) => {
            tracing::debug!(error = %e, "TUN offloads refused; without them");
            Ok((open_with(ns, address, false).await?, false))
        }
    }
}

async fn open_with(
    ns: &NetNs,
    address: Ipv4Net,
    offload: bool,
) -> std::io::Result<tun_rs::AsyncDevice> {
    let dev = ns
        .run(move || {
            let dev = tun_rs::DeviceBuilder::new()
                .name(DEVICE)
                .ipv4(address.addr(), address.prefix_len(), None)
                .mtu(MTU)
                .packet_information(false)
                .offload(offload)
                .build_sync()?;
            add_default_route(DEVICE)?;
            Ok(dev)
        })
        .await?;
    tun_rs::AsyncDevice::new(dev)
}

/// `ip route add default dev NAME`, through the classic routing ioctl (on the calling thread's
/// namespace).
fn add_default_route(device: &str) -> std::io::Result<()> {
    let name = CString::new(device).map_err(std::io::Error::other)?;
    // SAFETY: a plain datagram socket used only for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let any = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    // SAFETY: rtentry is a plain C struct; zero is a valid value for every field.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = any;
    rt.rt_genmask = any;
    rt.rt_flags = libc::RTF_UP;
    rt.rt_dev = name.as_ptr() as *mut libc::c_char;
    // SAFETY: `rt` and the name it points to outlive the call.
    let r = unsafe { libc::ioctl(fd, libc::SIOCADDRT, &rt) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if r < 0 && err.raw_os_error() != Some(libc::EEXIST) {
        return Err(err);
    }
    Ok(())
}

/// `ip link set lo up` in the calling thread's namespace (a fresh namespace has it down; a
/// container's has it up already).
pub fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain datagram socket used only for the ioctls, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is a plain C struct; zero is a valid value for every field.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, b) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *b as libc::c_char;
    }
    // SAFETY: `req` outlives both calls; the kernel reads the name and reads or writes the
    // flags.
    let r = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req)
        }
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(err);
    }
    Ok(())
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}
