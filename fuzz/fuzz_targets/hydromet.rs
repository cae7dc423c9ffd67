#![no_main]
//! Open-Meteo (forecast and flood) and USGS (OGC API and NWIS IV) JSON: every decoder
//! on every input.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ingest::openmeteo::parse_forecast(data);
    let _ = ingest::openmeteo::parse_flood(data);
    let _ = ingest::usgs::parse_ogc(data);
    let _ = ingest::usgs::parse_iv(data);
});
