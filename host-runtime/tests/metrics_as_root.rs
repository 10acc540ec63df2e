//! End to end: metrics of a namespace sandbox through the library (`Sandbox::metrics`,
//! `metrics_stream`, `Moat::metrics_all`). Needs root.

use std::time::Duration;

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::blocking::Moat;
use moat_runtime::api::config::{Isolation, RootSource, SandboxOptions};
use moat_runtime::config::SandboxConfig;
use moat_runtime::error::RuntimeError;
use moat_runtime::relay_client::ExecOutcome;

mod support;
use support::{executables, moat_home, require_root};

/// Spins a CPU and grows by 1 MiB (written, so resident) every 10 ms up to 200 MiB, detached
/// from the exec that starts it.
const BUSY: &str = "nohup python3 -c '
import time
a = []
t = time.time()
while True:
    if len(a) < 200 and time.time() - t > 0.01 * len(a):
        a.append(bytearray(b\"x\" * (1 << 20)))
' >/dev/null 2>&1 &";

#[test]
fn metrics_of_a_busy_sandbox_show_cpu_and_memory_growing_as_root() {
    require_root();
    let moat = Moat::new(moat_home("metrics-busy")).with_executables(executables());
    let config = SandboxConfig { memory_mib: Some(512), ..SandboxConfig::default() };
    let args = SandboxOptions {
        name: "busy".to_owned(),
        root: RootSource::Host,
        isolation: Isolation::Namespace,
        config,
    };
    let sandbox = moat.create(args).unwrap();
    let result = (|| {
        let idle = sandbox.metrics()?;
        let mut request = ExecRequest::new("sh");
        request.args = vec!["-c".to_owned(), BUSY.to_owned()];
        let started = sandbox.exec(request, b"", None)?;
        assert_eq!(started.outcome, ExecOutcome::Exited(0));
        std::thread::sleep(Duration::from_millis(300));
        let stream: Vec<_> = sandbox.metrics_stream(Duration::from_millis(700)).take(2).collect();
        let all = moat.metrics_all()?;
        Ok::<_, RuntimeError>((idle, stream, all))
    })();
    let stream_after_end = sandbox.metrics_stream(Duration::from_millis(100));
    sandbox.remove(true).unwrap();
    let (idle, stream, all) = result.unwrap();
    let (first, second) = (stream[0].as_ref().unwrap(), stream[1].as_ref().unwrap());

    assert_eq!(idle.sandbox, "busy");
    assert!(idle.uptime_ms > 0 && second.uptime_ms > idle.uptime_ms, "{idle:?} {second:?}");
    assert!(second.timestamp_unix_ms > first.timestamp_unix_ms);
    assert_eq!(second.memory_limit_bytes, Some(512 << 20));
    // Loose bounds: the test host's two cores are shared with other test binaries.
    assert!(first.cpu_percent > 5.0, "a spinning process: {first:?}");
    assert!(second.cpu_time_ns > first.cpu_time_ns + 50_000_000, "{first:?} {second:?}");
    assert!(first.memory_bytes > idle.memory_bytes, "{idle:?} {first:?}");
    assert!(second.memory_bytes > first.memory_bytes + (8 << 20), "{first:?} {second:?}");
    assert_eq!(second.net_rx_bytes, Some(0), "loopback only: {second:?}");
    assert!(all.iter().any(|m| m.sandbox == "busy"), "{all:?}");

    let ended: Vec<_> = stream_after_end.collect();
    assert_eq!(ended.len(), 1, "a stream of a removed sandbox ends after one error");
    assert!(ended[0].is_err());
}
