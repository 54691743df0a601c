#![no_main]

// The checks live in src/x509.rs, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| pilotfish_fuzz::x509::run(data));
