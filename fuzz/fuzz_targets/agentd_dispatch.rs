//! libFuzzer entry point of the `agentd_dispatch` target; the body and its input layout are
//! `moat_fuzz_targets::agentd_dispatch`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz_targets::agentd_dispatch::run(data));
