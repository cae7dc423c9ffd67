#![no_main]
//! CAP 1.2 documents: parse, then validate what parses, and check its XML signature.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(alert) = ingest::cap::parse_cap(data) {
        let _ = ingest::cap::validate(&alert, alert.sent);
    }
    let _ = ingest::dsig::verify(data, &[]);
});
