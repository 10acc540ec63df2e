//! Raw system calls without a safe wrapper in `nix`: bringing up the loopback device, and
//! taking ownership of an inherited descriptor.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// The loopback device's name, NUL-terminated.
const LOOPBACK: &[u8] = b"lo\0";

/// Sets `IFF_UP` on `lo` in the current network namespace.
pub(crate) fn loopback_up() -> std::io::Result<()> {
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(LOOPBACK) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads `ifr_name` and writes `ifr_ifru.ifru_flags` of a valid, owned
    // `ifreq` on an open socket.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just initialised the `ifru_flags` member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and flags of a valid, owned `ifreq`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads one byte from the inherited descriptor `fd`, then closes it. `Ok(false)` on EOF.
pub(crate) fn read_one_byte(fd: i32) -> std::io::Result<bool> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    if fd < 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: the descriptor was created by our parent for us alone (`userns::ReadyPipe`) and
    // named in our environment; nothing else in this process owns it, so taking ownership (and
    // closing it when the file drops) cannot affect another owner.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut byte = [0u8; 1];
    loop {
        match file.read(&mut byte) {
            Ok(n) => return Ok(n == 1),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}
