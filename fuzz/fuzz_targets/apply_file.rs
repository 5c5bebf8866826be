//! libFuzzer entry for [`targets::apply_file`](../targets.rs).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::apply_file(data));
