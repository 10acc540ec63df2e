//! End to end: the exec log through the library (`Sandbox::logs`, `Sandbox::log_stream`) and
//! `moat logs`' flags, and stopping with a timeout or without waiting (`stop_with_timeout`,
//! `request_stop`, `moat stop --timeout/--no-wait`), on the namespace backend. Needs root.
//!
//! Each test has its own `MOAT_HOME`, and a guard that `rm -f`s its sandbox even when it fails.

use std::time::{Duration, SystemTime};

use moat_protocol::payload::exec::ExecRequest;
use moat_runtime::api::{
    Isolation, LogCursor, LogEntry, LogQuery, LogSource, Moat, Sandbox, SandboxOptions, Status,
};
use moat_runtime::error::RuntimeError;

mod support;
use support::{
    RemoveOnDrop, executables, moat, moat_home, processes_in_cgroup, require_root, stderr, stdout,
};

/// A running namespace sandbox `name` in a fresh home for `test`, and its cleanup.
async fn boot(test: &str, name: &'static str) -> (Moat, Sandbox, RemoveOnDrop) {
    require_root();
    let home = moat_home(test);
    let moat = Moat::new(&home).with_executables(executables());
    let cleanup = RemoveOnDrop::new(home, name);
    let sandbox =
        moat.create(SandboxOptions::new(name).isolation(Isolation::Namespace)).await.unwrap();
    (moat, sandbox, cleanup)
}

fn sh(script: &str) -> ExecRequest {
    let mut request = ExecRequest::new("sh");
    request.args = vec!["-c".to_owned(), script.to_owned()];
    request
}

async fn run(sandbox: &Sandbox, script: &str) {
    let ran = sandbox.exec(sh(script), Vec::new()).await.unwrap();
    assert_eq!(ran.stderr, b"", "{script}");
}

/// The entries `query` selects once there are at least `count` (the relay writes its log on its
/// own thread, a moment after the exec's output has reached the client); fails after 10 s.
async fn settled(sandbox: &Sandbox, query: LogQuery, count: usize) -> Vec<LogEntry> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let entries = sandbox.logs(query.clone()).await.unwrap();
        if entries.len() >= count || tokio::time::Instant::now() >= deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn texts(entries: &[LogEntry]) -> Vec<String> {
    entries.iter().map(|e| e.text().into_owned()).collect()
}

fn stdout_only() -> LogQuery {
    LogQuery::new().sources([LogSource::Stdout])
}

#[tokio::test]
async fn logs_of_several_execs_carry_sources_and_session_ids_as_root() {
    let (_moat, sandbox, _cleanup) = boot("logs-sources", "sources").await;
    for n in 1..=2 {
        let ran = sandbox.exec(sh(&format!("echo out{n}; echo err{n} >&2")), Vec::new()).await;
        assert_eq!(ran.unwrap().stdout, format!("out{n}\n").into_bytes());
    }
    settled(&sandbox, LogQuery::new().sources([LogSource::Stdout, LogSource::Stderr]), 4).await;
    let entries = sandbox.logs(LogQuery::new()).await.unwrap();
    let of = |source: LogSource| -> Vec<&LogEntry> {
        entries.iter().filter(|e| e.source == source).collect()
    };
    let (out, err) = (of(LogSource::Stdout), of(LogSource::Stderr));
    assert_eq!(out.iter().map(|e| e.text()).collect::<Vec<_>>(), ["out1\n", "out2\n"]);
    assert_eq!(err.iter().map(|e| e.text()).collect::<Vec<_>>(), ["err1\n", "err2\n"]);
    // One session per exec, shared by its stdout and stderr; none for lifecycle markers.
    assert!(out[0].session_id.is_some() && out[0].session_id == err[0].session_id);
    assert!(out[1].session_id.is_some() && out[1].session_id == err[1].session_id);
    assert_ne!(out[0].session_id, out[1].session_id);
    let system = of(LogSource::System);
    assert!(!system.is_empty(), "no lifecycle marker in {entries:?}");
    assert!(system.iter().all(|e| e.session_id.is_none()));
    // Oldest first, and timestamps never go back.
    assert!(entries.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));

    let only_stderr = sandbox.logs(LogQuery::new().sources([LogSource::Stderr])).await.unwrap();
    assert_eq!(texts(&only_stderr), ["err1\n", "err2\n"]);
}

/// Binary output (random bytes, a run of zeros, text cut inside a character) comes back from
/// `moat logs` byte for byte: the relay logs such chunks as base64 (`e: "b64"`), not as lossy
/// UTF-8.
#[tokio::test]
async fn binary_output_round_trips_through_moat_logs_as_root() {
    let (_moat, sandbox, cleanup) = boot("logs-binary", "binary").await;
    let script = "head -c 300000 /dev/urandom; head -c 200000 /dev/zero; printf 'caf\\303'; \
                  printf '\\251 \\000\\001\\377 plain text\\n'";
    let ran = sandbox.exec(sh(script), Vec::new()).await.unwrap();
    assert_eq!(ran.stderr, b"");
    assert_eq!(ran.stdout.len(), 500_000 + 4 + 17);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let logged = loop {
        let logs = moat(cleanup.home(), &["logs", "binary", "--source", "stdout"]);
        assert_eq!(logs.status.code(), Some(0), "{}", stderr(&logs));
        if logs.stdout.len() >= ran.stdout.len() || std::time::Instant::now() >= deadline {
            break logs.stdout;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(logged == ran.stdout, "moat logs gave {} bytes, not the exec's output", logged.len());
    let entries = sandbox.logs(stdout_only()).await.unwrap();
    let joined: Vec<u8> = entries.iter().flat_map(|e| e.data.iter().copied()).collect();
    assert!(joined == ran.stdout, "the library's entries differ from the exec's output");
}

#[tokio::test]
async fn tail_since_until_and_resume_by_cursor_as_root() {
    let (_moat, sandbox, _cleanup) = boot("logs-select", "select").await;
    for n in 1..=3 {
        run(&sandbox, &format!("echo early{n}")).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let middle = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for n in 1..=2 {
        run(&sandbox, &format!("echo late{n}")).await;
    }

    let all = settled(&sandbox, stdout_only(), 5).await;
    assert_eq!(texts(&all), ["early1\n", "early2\n", "early3\n", "late1\n", "late2\n"]);
    let tail = sandbox.logs(stdout_only().tail(2)).await.unwrap();
    assert_eq!(texts(&tail), ["late1\n", "late2\n"]);
    let since = sandbox.logs(stdout_only().since(middle)).await.unwrap();
    assert_eq!(texts(&since), ["late1\n", "late2\n"]);
    let until = sandbox.logs(stdout_only().until(middle)).await.unwrap();
    assert_eq!(texts(&until), ["early1\n", "early2\n", "early3\n"]);

    // After any entry's cursor: exactly the entries after it.
    for (i, entry) in all.iter().enumerate() {
        let rest = sandbox.logs(stdout_only().after(entry.cursor)).await.unwrap();
        assert_eq!(rest, all[i + 1..], "after entry {i}");
    }
    // After the last one, nothing; then only what is written next.
    let last = all.last().unwrap().cursor;
    assert!(sandbox.logs(stdout_only().after(last)).await.unwrap().is_empty());
    run(&sandbox, "echo later").await;
    let next = settled(&sandbox, stdout_only().after(last), 1).await;
    assert_eq!(texts(&next), ["later\n"]);
    // The same, with every source: the cursor is a place in the file, not in a selection.
    let every = sandbox.logs(LogQuery::new().after(all[2].cursor)).await.unwrap();
    assert_eq!(every.first().map(|e| e.text().into_owned()).as_deref(), Some("late1\n"));
}

#[tokio::test]
async fn the_follow_stream_yields_new_entries_and_ends_after_stop_as_root() {
    let (_moat, sandbox, _cleanup) = boot("logs-follow", "follow").await;
    run(&sandbox, "echo before").await;
    settled(&sandbox, stdout_only(), 1).await;
    // With `until` passed, a stream of a live sandbox ends once it has read up to now.
    let mut bounded = sandbox.log_stream(stdout_only().until(SystemTime::now()));
    let mut until_now = Vec::new();
    let read = async {
        while let Some(entry) = bounded.next().await {
            until_now.push(entry.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("never ended at until");
    assert_eq!(texts(&until_now), ["before\n"]);

    let mut stream = sandbox.log_stream(stdout_only().tail(1));
    // A `next` dropped while its first read is in flight (a zero timeout) loses nothing.
    let first = match tokio::time::timeout(Duration::ZERO, stream.next()).await {
        Ok(entry) => entry,
        Err(_elapsed) => stream.next().await,
    };
    assert_eq!(first.unwrap().unwrap().text(), "before\n");
    let writer = sandbox.clone();
    let write_then_stop = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        run(&writer, "echo followed").await;
        writer.stop().await.unwrap()
    });
    let mut rest = Vec::new();
    let read = async {
        while let Some(entry) = stream.next().await {
            rest.push(entry.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("the stream never ended");
    assert_eq!(texts(&rest), ["followed\n"]);
    assert_eq!(write_then_stop.await.unwrap().status, Status::Stopped);
    // Ended streams stay ended.
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn stop_with_timeout_kills_a_sandbox_that_ignores_sigterm_as_root() {
    let (_moat, sandbox, _cleanup) = boot("logs-stop-timeout", "stubborn").await;
    // SIG_IGN survives exec: the background sleep ignores the agent's SIGTERM too, so only
    // SIGKILL ends it (the agent's own would come after its 2 s grace).
    run(&sandbox, "trap '' TERM; sleep 600 >/dev/null 2>&1 &").await;
    assert!(!processes_in_cgroup("stubborn").is_empty());
    let stopped = sandbox.stop_with_timeout(Duration::from_millis(300)).await.unwrap();
    assert_eq!(stopped.status, Status::Stopped);
    assert_eq!(stopped.exit_code, Some(137), "{:?}", stopped.stop_reason);
    assert!(stopped.stop_reason.as_deref().is_some_and(|r| r.contains("SIGKILL")));
    assert_eq!(processes_in_cgroup("stubborn"), Vec::<String>::new());
    assert_eq!(sandbox.state().await.unwrap().status, Status::Stopped);
}

#[tokio::test]
async fn stop_with_timeout_of_a_willing_sandbox_is_a_clean_stop_as_root() {
    let (_moat, sandbox, _cleanup) = boot("logs-stop-clean", "willing").await;
    let stopped = sandbox.stop_with_timeout(Duration::from_secs(30)).await.unwrap();
    assert_eq!((stopped.status, stopped.exit_code), (Status::Stopped, Some(0)));
}

#[tokio::test]
async fn request_stop_returns_and_the_sandbox_then_stops_as_root() {
    let (_moat, sandbox, _cleanup) = boot("logs-request-stop", "asked").await;
    sandbox.request_stop().await.unwrap();
    let ended = sandbox.wait(Duration::from_secs(60)).await.unwrap();
    assert_eq!(ended.status, Status::Stopped);
    assert_eq!(ended.stop_reason.as_deref(), Some(moat_runtime::supervisor::STOPPED_BY_CLIENT));
    let again = sandbox.request_stop().await.unwrap_err();
    assert!(matches!(again, RuntimeError::NotRunning { status: "stopped", .. }), "{again}");
}

#[tokio::test]
async fn moat_logs_json_after_since_until_and_stop_flags_as_root() {
    let (_moat, sandbox, cleanup) = boot("logs-cli", "cli").await;
    let home = cleanup.home().to_path_buf();
    for n in 1..=3 {
        run(&sandbox, &format!("echo line{n}")).await;
    }
    settled(&sandbox, stdout_only(), 3).await;
    let json = moat(&home, &["logs", "cli", "--source", "stdout", "--json"]);
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let lines: Vec<serde_json::Value> =
        stdout(&json).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let text: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(text, ["line1\n", "line2\n", "line3\n"]);
    assert!(lines.iter().all(|l| l["source"] == "stdout" && l["session_id"].is_u64()));

    let first: LogCursor = lines[0]["cursor"].as_str().unwrap().parse().unwrap();
    let after = moat(&home, &["logs", "cli", "--source", "stdout", "--after", &first.to_string()]);
    assert_eq!(stdout(&after), "line2\nline3\n", "{}", stderr(&after));
    let future = moat(&home, &["logs", "cli", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!((future.status.code(), stdout(&future).as_str()), (Some(0), ""));
    let past = moat(&home, &["logs", "cli", "--until", "2000-01-01T00:00:00+01:00"]);
    assert_eq!((past.status.code(), stdout(&past).as_str()), (Some(0), ""));
    let recent = moat(&home, &["logs", "cli", "--source", "stdout", "--since", "1h"]);
    assert_eq!(stdout(&recent), "line1\nline2\nline3\n", "{}", stderr(&recent));
    let tail = moat(&home, &["logs", "cli", "--source", "stdout", "--json", "--tail", "1"]);
    assert_eq!(stdout(&tail).lines().count(), 1, "{}", stdout(&tail));

    for usage in [
        &["logs", "cli", "--since", "yesterday"][..],
        &["logs", "cli", "--after", "12"],
        &["stop", "cli", "--timeout", "soon"],
        &["stop", "cli", "--timeout", "1", "--no-wait"],
    ] {
        let output = moat(&home, usage);
        assert_eq!(output.status.code(), Some(2), "{usage:?}: {}", stderr(&output));
    }

    // -f --json: the tail, then what is written while it follows, until the stop.
    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["logs", "cli", "-f", "--json", "--tail", "1", "--source", "stdout"])
        .env("MOAT_HOME", &home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut followed = std::io::BufReader::new(follower.stdout.take().unwrap());
    let text_of = |line: &str| -> String {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        value["text"].as_str().unwrap().to_owned()
    };
    let mut line = String::new();
    std::io::BufRead::read_line(&mut followed, &mut line).unwrap();
    assert_eq!(text_of(&line), "line3\n");
    run(&sandbox, "echo line4").await;
    let no_wait = moat(&home, &["stop", "cli", "--no-wait"]);
    assert_eq!(no_wait.status.code(), Some(0), "{}", stderr(&no_wait));
    assert_eq!(sandbox.wait(Duration::from_secs(60)).await.unwrap().status, Status::Stopped);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut followed, &mut rest).unwrap();
    assert_eq!(rest.lines().map(text_of).collect::<Vec<_>>(), ["line4\n"]);
    assert_eq!(follower.wait().unwrap().code(), Some(0));
    let start = moat(&home, &["start", "cli"]);
    assert_eq!(start.status.code(), Some(0), "{}", stderr(&start));
    let timed = moat(&home, &["stop", "cli", "--timeout", "30"]);
    assert_eq!(timed.status.code(), Some(0), "{}", stderr(&timed));
    assert_eq!(sandbox.state().await.unwrap().status, Status::Stopped);
}
