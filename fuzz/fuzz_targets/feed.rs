#![no_main]
//! Atom and RSS CAP feeds.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ingest::feed::parse_feed(data);
});
