#![no_main]
//! NWS alerts GeoJSON.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ingest::nws::parse_nws(data);
});
