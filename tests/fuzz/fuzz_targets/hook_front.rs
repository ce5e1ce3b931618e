#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| test_machine_monitor::fuzzing::hook_front(data));
