//! libFuzzer entry point of the `exec_log_line` target; the body and its input layout are
//! `moat_fuzz_targets::exec_log_line`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz_targets::exec_log_line::run(data));
