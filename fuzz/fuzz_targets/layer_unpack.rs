//! libFuzzer entry point of the `layer_unpack` target; the body and its input layout are
//! `moat_fuzz_targets::layer_unpack`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz_targets::layer_unpack::run(data));
