//! libFuzzer entry point of the `roundtrip` target; the body and its input layout are
//! `moat_fuzz_targets::roundtrip`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz_targets::roundtrip::run(data));
