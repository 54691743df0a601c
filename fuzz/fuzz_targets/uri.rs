#![no_main]

// The checks live in src/uri.rs, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| pilotfish_fuzz::uri::run(data));
