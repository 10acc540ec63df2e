//! libFuzzer entry point of the `frame_split` target; the body and its input layout are
//! `moat_fuzz_targets::frame_split`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz_targets::frame_split::run(data));
