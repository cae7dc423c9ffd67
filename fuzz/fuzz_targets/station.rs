#![no_main]
//! canhbao's station formats, JSON and CSV.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::UNIX_EPOCH;
    let _ = ingest::station::parse_json(data, now, 1000);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ingest::station::parse_csv(text, now, 1000);
    }
});
