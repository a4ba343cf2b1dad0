//! Config parsing: `control`'s loader (`spray::config`) on arbitrary text must return a
//! config or a list of problems, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spray::config;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        let machine = config::Machine {
            cores: vec![0, 1, 2, 3],
        };
        if let Ok(c) = config::Config::parse("fuzz.toml", src, &machine) {
            // The contract: a parsed config always makes a snapshot.
            c.snapshot(1).expect("a validated config builds a snapshot");
        }
    }
});
