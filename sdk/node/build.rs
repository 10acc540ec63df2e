//! Emits the linker settings a napi addon needs on the target platform.

fn main() {
    napi_build::setup();
}
