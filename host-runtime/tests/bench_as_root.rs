//! `moat bench --quick --json` end to end on the namespace backend. Needs root.
//!
//! Checks the report's shape, never its speed: every figure is there, finite and positive, and
//! no concurrent exec failed. Machines are noisy; a time target is the benchmark's to report.

mod support;
use support::{executables, moat, moat_home, require_root, stderr, stdout};

/// Figures that must be present, finite and greater than zero.
const POSITIVE: &[&str] = &[
    "exec_roundtrip_p50_ms",
    "exec_roundtrip_p99_ms",
    "ping_p50_us",
    "stdout_stream_mib_s",
    "fs_write_mib_s",
    "fs_read_mib_s",
    "concurrent_execs_per_s",
    "create_to_ready_p50_ms",
    "idle_rss_mib",
    "codec_small_decode_per_s",
    "codec_chunk_decode_mib_s",
    "floor_unix_roundtrip_p50_us",
    "floor_fork_exec_true_p50_ms",
    "floor_socket_copy_mib_s",
    "exec_roundtrip_p50_floor_ratio",
    "ping_p50_floor_ratio",
    "stdout_stream_floor_ratio",
    "fs_write_floor_ratio",
    "fs_read_floor_ratio",
];

#[test]
fn quick_bench_reports_every_figure_as_root() {
    require_root();
    // The agent must sit beside the moat binary, as the CLI finds it.
    executables();
    let home = moat_home("bench");
    let output = moat(&home, &["bench", "--quick", "--json"]);
    assert!(output.status.success(), "moat bench failed: {}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&output)));
    for key in POSITIVE {
        let value = report[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {report}"));
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
    assert_eq!(report["concurrent_errors"].as_f64(), Some(0.0), "{report}");
    assert_eq!(report["backend"], "namespace");
    assert_eq!(report["mode"], "quick");
    assert!(report["machine_cores"].as_u64().is_some_and(|n| n > 0), "{report}");
    assert!(report["date"].as_str().is_some_and(|d| d.starts_with("20")), "{report}");
}

#[test]
fn bench_refuses_an_unknown_option_as_root() {
    require_root();
    let output = moat(&moat_home("bench-usage"), &["bench", "--fast"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}
