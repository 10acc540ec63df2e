//! End to end on the namespace backend: `stop` sends the sandbox's stop signal (given at create,
//! else the image's StopSignal; `stop --signal` overrides both) to every running exec before
//! `core.shutdown`. A guest shell traps SIGUSR1 and SIGINT, writes which one came to a named
//! volume, and exits. Needs root; the image test needs `docker-registry` and `busybox-static`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::{
    ExecOutcome, ExecStream, ImageSource, Isolation, Moat, RootSource, Sandbox, SandboxOptions,
    StopSignal,
};
use moat_runtime::config::{SandboxConfig, parse_volume};

mod support;
use support::registry::{Compression, Layer, Registry, busybox_layer};
use support::{
    RemoveOnDrop, executables, moat, moat_home, processes_in_cgroup, require_root, stderr,
};

/// Writes which signal came to /out/marker and exits 0; /out/ready says the traps are set.
const TRAPPER: &str = "trap 'echo USR1 > /out/marker; exit 0' USR1; \
                       trap 'echo INT > /out/marker; exit 0' INT; \
                       echo > /out/ready; while :; do sleep 0.1; done";

fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new("sh");
    request.args = vec!["-c".to_owned(), script.to_owned()];
    request
}

/// The host directory of the named volume `marks`.
fn marks(home: &Path) -> PathBuf {
    home.join("volumes/marks/data")
}

/// A home with the named volume `marks`, and options mounting it at /out.
fn setup(test: &str, name: &'static str) -> (Moat, SandboxOptions, RemoveOnDrop) {
    require_root();
    let home = moat_home(test);
    let moat = Moat::new(&home).with_executables(executables());
    moat.volumes().create("marks", Default::default()).unwrap();
    let config =
        SandboxConfig { volumes: vec![parse_volume("marks:/out").unwrap()], ..Default::default() };
    let options = SandboxOptions::new(name).isolation(Isolation::Namespace).config(config);
    (moat, options, RemoveOnDrop::new(home, name))
}

/// Starts the trapping shell and waits until its traps are set.
async fn start_trapper(sandbox: &Sandbox, home: &Path) -> ExecStream {
    for file in ["ready", "marker"] {
        let _ = std::fs::remove_file(marks(home).join(file));
    }
    let stream = sandbox.exec_stream(sh(TRAPPER)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marks(home).join("ready").exists() {
        assert!(Instant::now() < deadline, "the guest shell never got ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stream
}

/// The signal the trapping shell saw, after its exec ended with status 0.
async fn trapped(stream: ExecStream, home: &Path) -> String {
    assert_eq!(stream.wait().await.unwrap(), ExecOutcome::Exited(0));
    std::fs::read_to_string(marks(home).join("marker")).unwrap().trim().to_owned()
}

#[tokio::test]
async fn stop_sends_the_configured_stop_signal_and_a_given_one_overrides_it_as_root() {
    let (moat, options, _cleanup) = setup("stop-signal-lib", "stopsig");
    let usr1: StopSignal = "SIGUSR1".parse().unwrap();
    let sandbox = moat.create(options.stop_signal(usr1)).await.unwrap();
    let home = moat.home().to_path_buf();

    // The configured signal, then core.shutdown once the exec ended (well before the 10 s grace).
    let stream = start_trapper(&sandbox, &home).await;
    let asked = Instant::now();
    let stopped = sandbox.stop().await.unwrap();
    assert!(asked.elapsed() < Duration::from_secs(8), "took {:?}", asked.elapsed());
    assert_eq!((stopped.exit_code, stopped.stop_reason.as_deref()), (Some(0), Some("moat stop")));
    assert_eq!(trapped(stream, &home).await, "USR1");
    assert_eq!(processes_in_cgroup("stopsig"), Vec::<String>::new());

    // A given signal wins over the configured one.
    sandbox.start().await.unwrap();
    let stream = start_trapper(&sandbox, &home).await;
    let int = "int".parse().unwrap();
    let stopped = sandbox.stop_with_signal(int, Some(Duration::from_secs(20))).await.unwrap();
    assert_eq!(stopped.exit_code, Some(0), "{stopped:?}");
    assert_eq!(trapped(stream, &home).await, "INT");

    // An exec that ignores the signal is SIGKILLed once the timeout has passed.
    sandbox.start().await.unwrap();
    let stream = sandbox.exec_stream(sh("trap '' USR1; exec sleep 600")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    let stopped = sandbox.stop_with_signal(usr1, Some(Duration::from_secs(2))).await.unwrap();
    assert!(asked.elapsed() < Duration::from_secs(8), "took {:?}", asked.elapsed());
    assert_eq!(stopped.exit_code, Some(137), "{stopped:?}");
    drop(stream);
    assert_eq!(processes_in_cgroup("stopsig"), Vec::<String>::new());
    sandbox.remove(true).await.unwrap();
}

#[test]
fn a_bad_stop_signal_is_a_usage_error_or_a_typed_error() {
    let home = moat_home("stop-signal-usage");
    for args in [
        &["stop", "x", "--signal", "SIGNOPE"][..],
        &["create", "x", "--stop-signal", "99"][..],
        &["run", "--stop-signal", "RTMIN+40", "--", "true"][..],
    ] {
        let output = moat(&home, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains("not a signal"), "{}", stderr(&output));
    }
    let options = SandboxOptions::new("x")
        .config(SandboxConfig { stop_signal: Some("SIGNOPE".into()), ..Default::default() });
    let err = moat_runtime::api::blocking::Moat::new(&home).create(options).unwrap_err();
    assert!(matches!(err, moat_runtime::error::RuntimeError::Config(_)), "{err}");
}

#[test]
fn the_images_stop_signal_is_used_and_a_given_one_overrides_it_as_root() {
    require_root();
    // The registry's helpers block on their own runtime: kept outside the test's.
    let registry = Registry::start();
    registry.push(
        "stopper:1",
        &[Layer { tar: busybox_layer().finish(), compression: Compression::Gzip }],
        serde_json::json!({ "Env": ["PATH=/bin"], "Cmd": ["sh"], "StopSignal": "SIGUSR1" }),
    );
    let image = RootSource::Image(ImageSource::new(registry.reference("stopper:1")));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(image_stop_signal(image));
}

async fn image_stop_signal(image: RootSource) {
    let (moat_lib, options, _cleanup) = setup("stop-signal-image", "stopimg");
    let home = moat_lib.home().to_path_buf();
    let sandbox = moat_lib.create(options.clone().root(image.clone())).await.unwrap();
    assert_eq!(sandbox.state().await.unwrap().spec.config.stop_signal.as_deref(), Some("SIGUSR1"));

    // `moat stop` uses the image's StopSignal.
    let stream = start_trapper(&sandbox, &home).await;
    let stop = moat(&home, &["stop", "stopimg"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert_eq!(trapped(stream, &home).await, "USR1");

    // `moat stop --signal` overrides it.
    sandbox.start().await.unwrap();
    let stream = start_trapper(&sandbox, &home).await;
    let stop = moat(&home, &["stop", "stopimg", "--signal", "SIGINT"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert_eq!(trapped(stream, &home).await, "INT");
    sandbox.remove(true).await.unwrap();

    // `--stop-signal` at create overrides the image's.
    let options = options.root(image).stop_signal("INT".parse().unwrap());
    let sandbox = moat_lib.create(options).await.unwrap();
    let stream = start_trapper(&sandbox, &home).await;
    sandbox.stop().await.unwrap();
    assert_eq!(trapped(stream, &home).await, "INT");
    sandbox.remove(true).await.unwrap();
}
