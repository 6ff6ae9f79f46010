//! Fuzz target: `reel::fuzzing::fuzz_bsd_reader` on arbitrary bytes (docs/FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reel::fuzzing::fuzz_bsd_reader(data);
});
