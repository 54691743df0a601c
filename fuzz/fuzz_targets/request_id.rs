#![no_main]

// The checks live in src/request_id.rs, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| pilotfish_fuzz::request_id::run(data));
