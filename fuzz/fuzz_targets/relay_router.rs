//! libFuzzer entry point of the `relay_router` target; the body and its input layout are
//! `moat_fuzz_targets::relay_router`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz_targets::relay_router::run(data));
