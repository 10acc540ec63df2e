//! libFuzzer entry point of the `message_decode` target; the body and its input layout are
//! `moat_fuzz_targets::message_decode`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz_targets::message_decode::run(data));
