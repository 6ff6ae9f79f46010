//! Fuzz target: `reel::fuzzing::fuzz_pack` on arbitrary bytes (docs/FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reel::fuzzing::fuzz_pack(data);
});
