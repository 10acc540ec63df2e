#!/usr/bin/env bash
# Fuzzing for moat (DESIGN.md, "Tests, in layers" 6). Run from anywhere in the repository; reads
# no stdin.
#
#  1. Always, on stable Rust: checks the fuzz crates' formatting, lints moat-fuzz-targets, and
#     replays every committed seed (fuzz/seeds/<target>/) and any local corpus
#     (fuzz/corpus/<target>/) through every target.
#  2. When a nightly toolchain is installed: installs cargo-fuzz if it is missing, then runs each
#     target under libFuzzer for FUZZ_SECONDS from a temporary corpus seeded from its seeds, and
#     fails if any target crashes, printing where the crashing input was saved.
#  3. Without nightly or cargo-fuzz: prints "fuzzing SKIPPED: <reason>; corpus replay only" and
#     exits 0 after the replay.
#
# Usage:       .ci/fuzz.sh [target ...]        (default: every fuzz/fuzz_targets/*.rs)
# Environment: FUZZ_SECONDS          seconds of fuzzing per target (default 30)
#              FUZZ_TIMEOUT_SECONDS  seconds one input may take before it counts as a hang (10)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

fuzz_seconds=${FUZZ_SECONDS:-30}
timeout_seconds=${FUZZ_TIMEOUT_SECONDS:-10}
for value in "$fuzz_seconds" "$timeout_seconds"; do
  if ! [[ $value =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz.sh: FUZZ_SECONDS and FUZZ_TIMEOUT_SECONDS must be positive integers, got '$value'"
    exit 2
  fi
done

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for file in fuzz/fuzz_targets/*.rs; do
    targets+=("$(basename "$file" .rs)")
  done
fi
for target in "${targets[@]}"; do
  if [ ! -f "fuzz/fuzz_targets/$target.rs" ] || [ ! -d "fuzz/seeds/$target" ]; then
    echo "fuzz.sh: unknown target '$target' (no fuzz/fuzz_targets/$target.rs or fuzz/seeds/$target/)"
    exit 2
  fi
done

run() {
  echo "+ $*"
  "$@"
}

echo "== fuzz crates: format and lint (stable)"
# Only the fuzz packages: `--all` would also check their path dependency, protocol/.
run cargo fmt --manifest-path fuzz/Cargo.toml -p moat-fuzz -p moat-fuzz-targets -- --check
run cargo clippy --manifest-path fuzz/targets/Cargo.toml --all-targets -- -D warnings

echo "== corpus replay (stable): fuzz/seeds/<target>/ and fuzz/corpus/<target>/ through every target"
run cargo test --manifest-path fuzz/targets/Cargo.toml -- --show-output

skip() {
  echo "fuzzing SKIPPED: $1; corpus replay only"
  exit 0
}

toolchains=$(rustup toolchain list 2>/dev/null || true)
nightly=$(awk '/^nightly/ { print $1; exit }' <<<"$toolchains")
if [ -z "$nightly" ]; then
  skip "no nightly toolchain in 'rustup toolchain list'"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: installing it"
  if ! run cargo install cargo-fuzz --locked; then
    skip "cargo-fuzz is missing and 'cargo install cargo-fuzz --locked' failed"
  fi
fi

echo "== libFuzzer ($nightly, $(cargo fuzz --version)): ${fuzz_seconds}s per target: ${targets[*]}"
run cargo +"$nightly" fuzz build --fuzz-dir fuzz

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
crashed=()
for target in "${targets[@]}"; do
  corpus="$work/corpus/$target"
  mkdir -p "$corpus"
  cp -R "fuzz/seeds/$target/." "$corpus/"
  corpora=("$corpus")
  if [ -d "fuzz/corpus/$target" ]; then
    corpora+=("fuzz/corpus/$target")
  fi
  log="$work/$target.log"
  echo "-- $target"
  command=(cargo +"$nightly" fuzz run --fuzz-dir fuzz "$target" "${corpora[@]}" --
    -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -timeout="$timeout_seconds"
    -print_final_stats=1)
  echo "+ ${command[*]} >$log 2>&1"
  if "${command[@]}" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    units=$(find "$corpus" -type f | wc -l)
    echo "$target: no crash in ${fuzz_seconds}s, ${runs:-?} executions, corpus of ${units} inputs"
  else
    crashed+=("$target")
    echo "$target: CRASHED; the end of its log:"
    tail -n 60 "$log"
    echo "$target: the panic:"
    grep -m 1 -A 2 "panicked at" "$log" || echo "(no Rust panic: a sanitizer report, a timeout or out of memory)"
    artifacts=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log")
    for artifact in $artifacts; do
      echo "crashing input: $(realpath "$artifact")"
      echo "  reproduce: cargo +$nightly fuzz run --fuzz-dir fuzz $target $artifact"
      echo "  keep it:   fix the crate that owns the bug (protocol/, relay/, agentd/) with a regression unit test, then"
      echo "             cp $artifact fuzz/seeds/$target/regression-<what-it-broke>"
    done
    if [ -z "$artifacts" ]; then
      echo "crashing input: none saved (see the log above; fuzz/artifacts/$target/ may hold it)"
    fi
  fi
done

if [ ${#crashed[@]} -ne 0 ]; then
  echo "fuzzing FAILED: ${crashed[*]} crashed (corpus replay passed)"
  exit 1
fi
echo "fuzzing done: corpus replay and ${fuzz_seconds}s of libFuzzer per target (${targets[*]}), no crash"
