//! The Rust half of `npm run bench` (`bench/overhead.js`): the same calls the addon makes, made
//! from Rust against the same sandbox in the same run, so the addon's overhead is the difference.
//!
//! `overhead NAME EXEC_ITERS FS_ITERS FS_MIB` (the moat home from `$MOAT_HOME`) prints one JSON
//! object of samples in milliseconds: `exec` (`api::blocking::Sandbox::exec` of `true`, what
//! `sandbox.exec('true')` calls), `fs_write` and `fs_read` (`api::SandboxFs::write` and `read`
//! of FS_MIB MiB at `/bench/rust.bin`, what `fs().write` and `fs().read` call).

use std::time::Instant;

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::{ExecOutcome, Moat, blocking};

fn arg(args: &[String], i: usize) -> usize {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: overhead NAME EXEC_ITERS FS_ITERS FS_MIB");
        std::process::exit(2)
    })
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).cloned().unwrap_or_default();
    let (exec_iters, fs_iters, fs_mib) = (arg(&args, 2), arg(&args, 3), arg(&args, 4));

    let sandbox = blocking::Moat::from_env().get(&name)?;
    // Warm-up (a fresh process, as the addon's first call after its warm-up): not timed.
    sandbox.exec(ExecRequest::new("true"), &[], None)?;
    let mut exec = Vec::with_capacity(exec_iters);
    for _ in 0..exec_iters {
        let start = Instant::now();
        let ran = sandbox.exec(ExecRequest::new("true"), &[], None)?;
        exec.push(ms(start));
        if ran.outcome != ExecOutcome::Exited(0) {
            return Err(format!("exec true: {:?}", ran.outcome).into());
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (fs_write, fs_read) = runtime.block_on(async {
        let fs = Moat::from_env().get(&name).await?.fs();
        let data = vec![0x5a_u8; fs_mib * 1024 * 1024];
        let (mut writes, mut reads) = (Vec::new(), Vec::new());
        for _ in 0..fs_iters {
            let start = Instant::now();
            fs.write("/bench/rust.bin", data.clone()).await?;
            writes.push(ms(start));
            let start = Instant::now();
            let back = fs.read("/bench/rust.bin").await?;
            reads.push(ms(start));
            if back.len() != data.len() {
                return Err(format!("read {} bytes back, wrote {}", back.len(), data.len()).into());
            }
        }
        Ok::<_, Box<dyn std::error::Error>>((writes, reads))
    })?;
    let list =
        |samples: &[f64]| samples.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>().join(",");
    println!(
        "{{\"exec\":[{}],\"fs_write\":[{}],\"fs_read\":[{}]}}",
        list(&exec),
        list(&fs_write),
        list(&fs_read)
    );
    Ok(())
}
