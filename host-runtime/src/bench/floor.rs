//! What the machine itself costs, measured in the same run: the floors the sandbox figures are
//! compared to.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::stats::{Samples, mib_per_s};
use crate::error::RuntimeError;

/// Write and read size of the raw socket copy.
const COPY_CHUNK_BYTES: usize = 256 * 1024;

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    RuntimeError::io(what, "socketpair")
}

/// Round trips of one byte over a unix socket pair, echoed by a second thread.
pub(super) fn unix_round_trips(iterations: usize) -> Result<Samples, RuntimeError> {
    let (mut ours, mut theirs) = UnixStream::pair().map_err(io("create a socket pair"))?;
    let echo = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while theirs.read_exact(&mut byte).is_ok() {
            if theirs.write_all(&byte).is_err() {
                break;
            }
        }
    });
    let mut samples = Vec::with_capacity(iterations);
    let mut byte = [7u8; 1];
    for _ in 0..iterations {
        let start = Instant::now();
        ours.write_all(&byte).map_err(io("write to the socket pair"))?;
        ours.read_exact(&mut byte).map_err(io("read from the socket pair"))?;
        samples.push(start.elapsed());
    }
    drop(ours);
    let _ = echo.join();
    Ok(Samples::new(samples))
}

/// `fork`+`exec`+`wait` of `/bin/true`.
pub(super) fn fork_exec_true(iterations: usize) -> Result<Samples, RuntimeError> {
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(RuntimeError::io("run", "/bin/true"))?;
        samples.push(start.elapsed());
    }
    Ok(Samples::new(samples))
}

/// MiB/s of `bytes` written into a unix socket pair by one thread and read by another, in
/// 256 KiB writes and reads.
pub(super) fn socket_copy(bytes: u64) -> Result<f64, RuntimeError> {
    let (mut writer, mut reader) = UnixStream::pair().map_err(io("create a socket pair"))?;
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let chunk = vec![0x5au8; COPY_CHUNK_BYTES];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(COPY_CHUNK_BYTES as u64) as usize;
            writer.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        Ok(())
    });
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut got = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(io("read from the socket pair"))?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let elapsed = start.elapsed();
    match sender.join() {
        Ok(Ok(())) if got == bytes => Ok(mib_per_s(bytes, elapsed)),
        Ok(Err(err)) => Err(io("write to the socket pair")(err)),
        _ => Err(io("copy through the socket pair")(std::io::Error::other(format!(
            "read {got} of {bytes} bytes"
        )))),
    }
}
