//! libFuzzer entry point of the `exec_log_reader` target; the body and its input layout are
//! `moat_fuzz_targets::exec_log_reader`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz_targets::exec_log_reader::run(data));
