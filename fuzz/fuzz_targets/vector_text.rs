//! libFuzzer entry point of the `vector_text` target; the body and its input layout are
//! `moat_fuzz_targets::vector_text`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz_targets::vector_text::run(data));
