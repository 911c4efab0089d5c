#![no_main]
//! Any bytes a mail server may hand over: parsing, cleaning and reference
//! extraction must never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = guichet_ingress_email::mime::parse_for_fuzzing(data);
});
