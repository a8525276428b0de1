//! Network interfaces: a PID 1 must bring `lo` up itself (nothing else will), and the network
//! workloads talk to servers on 127.0.0.1. The kernel assigns 127.0.0.1/8 when `lo` goes up.
//!
//! A guest that serves a client on the host (a real `ab` through QEMU's port forwarding) also
//! needs an address on its NIC: `imgbuild.ip=ADDR/PREFIX` (or `IFACE:ADDR/PREFIX`, default
//! `eth0`) on the kernel command line sets one with plain ioctls. No DHCP client: the engines
//! know the address their user network hands out (QEMU's is 10.0.2.15/24).

use std::io;
use std::net::Ipv4Addr;

/// Sets `lo` up; Ok when it already was.
pub fn bring_up_loopback() -> io::Result<()> {
    with_socket(|fd| set_up(fd, "lo"))
}

/// An IPv4 address for an interface, as given by `imgbuild.ip=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// Interface name (`eth0` when not given).
    pub interface: String,
    /// The address.
    pub address: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub prefix: u8,
}

impl InterfaceAddress {
    /// Parses `[IFACE:]ADDR/PREFIX`.
    pub fn parse(text: &str) -> Result<InterfaceAddress, String> {
        let (interface, rest) = match text.split_once(':') {
            Some((i, r)) => (i, r),
            None => ("eth0", text),
        };
        if interface.is_empty() || interface.len() >= libc::IFNAMSIZ || interface.contains('/') {
            return Err(format!(
                "imgbuild.ip={text}: bad interface name {interface:?}"
            ));
        }
        let (addr, prefix) = rest
            .split_once('/')
            .ok_or_else(|| format!("imgbuild.ip={text}: expected ADDR/PREFIX"))?;
        let address = addr
            .parse()
            .map_err(|_| format!("imgbuild.ip={text}: {addr:?} is not an IPv4 address"))?;
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("imgbuild.ip={text}: prefix {prefix:?} is not 0 to 32"))?;
        Ok(InterfaceAddress {
            interface: interface.to_owned(),
            address,
            prefix,
        })
    }

    fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix))
                .unwrap_or(0),
        )
    }
}

/// Gives the interface its address and netmask and sets it up (the kernel adds the route of
/// the subnet).
pub fn configure(ifa: &InterfaceAddress) -> io::Result<()> {
    with_socket(|fd| {
        set_address(fd, &ifa.interface, libc::SIOCSIFADDR, ifa.address)?;
        set_address(fd, &ifa.interface, libc::SIOCSIFNETMASK, ifa.netmask())?;
        set_up(fd, &ifa.interface)
    })
    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", ifa.interface)))
}

/// Runs `f` with a fresh AF_INET datagram socket (the handle interface ioctls need).
fn with_socket(f: impl FnOnce(libc::c_int) -> io::Result<()>) -> io::Result<()> {
    // SAFETY: plain socket call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = f(fd);
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    result
}

fn request(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // Names are checked shorter than IFNAMSIZ, so the last byte stays NUL.
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

fn set_address(
    fd: libc::c_int,
    name: &str,
    what: libc::c_ulong,
    address: Ipv4Addr,
) -> io::Result<()> {
    let mut req = request(name);
    // SAFETY: sockaddr_in is plain data.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from(address).to_be();
    // SAFETY: sockaddr_in fits in the sockaddr of the union and is how AF_INET addresses are
    // passed to SIOCSIFADDR/SIOCSIFNETMASK.
    unsafe {
        std::ptr::write(
            std::ptr::addr_of_mut!(req.ifr_ifru.ifru_addr).cast::<libc::sockaddr_in>(),
            sin,
        )
    };
    // SAFETY: fd is a socket, req a valid ifreq naming an interface.
    if unsafe { libc::ioctl(fd, what as libc::Ioctl, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ioctl's request is a c_ulong in glibc and a c_int in musl (`libc::Ioctl` either way): the
// casts keep the musl build of the init compiling.
fn set_up(fd: libc::c_int, name: &str) -> io::Result<()> {
    let mut req = request(name);
    // SAFETY: fd is a socket, req a valid ifreq naming an interface.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as libc::Ioctl, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | up;
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as libc::Ioctl, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a usable `PATH` when the kernel started us without one, for workloads that run tools.
pub fn default_path() {
    if std::env::var_os("PATH").is_none() {
        std::env::set_var(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_addresses_parse_with_their_netmask() {
        let a = InterfaceAddress::parse("10.0.2.15/24").unwrap();
        assert_eq!(a.interface, "eth0");
        assert_eq!(a.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(a.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        let b = InterfaceAddress::parse("ens3:192.168.1.2/32").unwrap();
        assert_eq!(b.interface, "ens3");
        assert_eq!(b.netmask(), Ipv4Addr::BROADCAST);
        assert_eq!(
            InterfaceAddress::parse("eth0:1.2.3.4/0").unwrap().netmask(),
            Ipv4Addr::UNSPECIFIED
        );
        for bad in [
            "10.0.2.15",
            "10.0.2.15/33",
            "10.0.2/24",
            ":1.2.3.4/8",
            "averyveryverylongname:1.2.3.4/8",
            "1.2.3.4/x",
        ] {
            assert!(InterfaceAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_is_up_or_the_error_is_permission() {
        // Unprivileged test hosts cannot change flags, but lo is up there anyway.
        match bring_up_loopback() {
            Ok(()) => {}
            Err(e) => assert!(
                matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ENODEV)
                ),
                "{e}"
            ),
        }
    }
}
