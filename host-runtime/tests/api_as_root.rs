//! End to end: the library API (`moat_runtime::api`), as a binding would use it, on the
//! namespace backend. Needs root.

use std::time::Duration;

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::Moat;
use moat_runtime::api::{Isolation, SandboxOptions};
use moat_runtime::config::SandboxConfig;
use moat_runtime::relay_client::ExecOutcome;
use moat_runtime::store::state::Status;

mod support;
use support::{executables, moat_home, require_root};

fn args(name: &str, config: SandboxConfig) -> SandboxOptions {
    SandboxOptions::new(name).isolation(Isolation::Namespace).config(config)
}

fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new("sh");
    request.args = vec!["-c".to_owned(), script.to_owned()];
    request
}

#[test]
fn create_exec_list_stop_remove_through_the_library_as_root() {
    require_root();
    let moat = Moat::new(moat_home("api-lifecycle")).with_executables(executables());
    let sandbox = moat.create(args("api", SandboxConfig::default())).unwrap();
    assert_eq!(sandbox.state().unwrap().status, Status::Running);
    assert!(sandbox.socket().exists());

    let echoed = sandbox.exec(sh("cat; echo err >&2; exit 3"), b"from stdin\n").unwrap();
    assert_eq!(echoed.outcome, ExecOutcome::Exited(3));
    assert_eq!(echoed.stdout, b"from stdin\n");
    assert_eq!(echoed.stderr, b"err\n");
    assert_eq!(echoed.dropped_bytes, 0);

    let names: Vec<String> = moat.list().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["api".to_owned()]);

    let stopped = sandbox.stop().unwrap();
    assert_eq!(stopped.status, Status::Stopped);
    assert!(sandbox.exec(sh("true"), b"").is_err(), "exec on a stopped sandbox must fail");
    moat.get("api").unwrap().remove(false).unwrap();
    assert!(moat.get("api").is_err());
}

#[test]
fn wait_returns_when_the_sandbox_shuts_itself_down_as_root() {
    require_root();
    let moat = Moat::new(moat_home("api-wait")).with_executables(executables());
    let config = SandboxConfig { idle_timeout_secs: Some(1), ..SandboxConfig::default() };
    let sandbox = moat.create(args("waiter", config)).unwrap();
    let state = sandbox.wait(Duration::from_secs(30));
    let _ = moat.get("waiter").map(|s| s.remove(true));
    let state = state.unwrap();
    assert_eq!(state.status, Status::Stopped);
    assert_eq!(state.exit_code, Some(0));
}

#[test]
fn wait_times_out_on_a_running_sandbox_as_root() {
    require_root();
    let moat = Moat::new(moat_home("api-wait-timeout")).with_executables(executables());
    let sandbox = moat.create(args("busy", SandboxConfig::default())).unwrap();
    let waited = sandbox.wait(Duration::from_millis(200));
    let _ = moat.get("busy").map(|s| s.remove(true));
    let err = waited.unwrap_err();
    assert!(err.to_string().contains("still running"), "{err}");
}
