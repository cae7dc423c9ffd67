//! Property-based fuzzing of every parser of outside input, in the ordinary tests: random
//! and mutated inputs (flipped bytes, truncation, splices, deep nesting) must give `Ok` or a
//! specific error, never a panic. The `fuzz/` targets run the same parsers under libFuzzer.

use chrono::{DateTime, Utc};

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap_or_default()
}

fn now() -> DateTime<Utc> {
    "2026-10-09T02:00:00Z".parse().unwrap_or_default()
}

/// Inputs derived from `seed`: mutated copies, truncations, random bytes and deep nesting.
fn inputs(seed: &[u8], rng: &mut Lcg, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n + 4);
    for _ in 0..n {
        let mut v = seed.to_vec();
        match rng.below(4) {
            0 if !v.is_empty() => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(v.len());
                    v[i] = rng.next() as u8;
                }
            }
            1 => v.truncate(rng.below(v.len() + 1)),
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                let j = rng.below(v.len());
                let (a, b) = (i.min(j), i.max(j));
                let chunk = v[a..b].to_vec();
                let at = rng.below(v.len());
                v.splice(at..at, chunk);
            }
            _ => v = (0..rng.below(256)).map(|_| rng.next() as u8).collect(),
        }
        out.push(v);
    }
    out.push("[".repeat(100_000).into_bytes());
    out.push(format!("<alert>{}", "<a>".repeat(50_000)).into_bytes());
    out.push(b"\xff\xfe<\x00a\x00>".to_vec());
    out.push(Vec::new());
    out
}

#[test]
fn no_parser_panics_on_hostile_input() {
    let mut rng = Lcg(0x5eed);
    let cap_seeds = [
        "cap/lang-son-flood-level3-CONSTRUCTED.xml",
        "cap/oasis-a4-amber-alert-en-es.xml",
    ];
    for seed in cap_seeds {
        for input in inputs(&fixture(seed), &mut rng, 1500) {
            let _ = crate::cap::parse_cap(&input);
        }
    }
    // Signed documents: every mutation gives a verdict on its signature, never a panic.
    let ec = fixture("cap/signed/kttv-test-ec.pem");
    let ec = crate::dsig::certificates_from_pem(&ec).unwrap_or_default();
    for seed in [
        "cap/signed/lang-son-rsa-sha256-exc-c14n.xml",
        "cap/signed/lang-son-ecdsa-p256-c14n-no-keyinfo.xml",
        "cap/ipaws-cancel-signed.xml",
    ] {
        for input in inputs(&fixture(seed), &mut rng, 600) {
            let _ = crate::dsig::verify(&input, &ec);
        }
    }
    for seed in [
        "feeds/eccc-signed-cap12-embedded.atom",
        "feeds/nyalert-cap-index.rss",
        "feeds/nws-cap-index-2010.atom",
    ] {
        for input in inputs(&fixture(seed), &mut rng, 800) {
            let _ = crate::feed::parse_feed(&input);
        }
    }
    for input in inputs(
        &fixture("feeds/api-alerts-active-zone-flood-watch.geojson"),
        &mut rng,
        800,
    ) {
        let _ = crate::nws::parse_nws(&input);
    }
    for seed in [
        "feeds/open-meteo-forecast-hourly-CONSTRUCTED.json",
        "feeds/open-meteo-flood-api-river-discharge.json",
        "feeds/usgs-ogc-continuous.json",
        "feeds/usgs-waterservices-iv-discharge-gageheight.json",
    ] {
        for input in inputs(&fixture(seed), &mut rng, 600) {
            let _ = crate::openmeteo::parse_forecast(&input);
            let _ = crate::openmeteo::parse_flood(&input);
            let _ = crate::usgs::parse_ogc(&input);
            let _ = crate::usgs::parse_iv(&input);
        }
    }
    let json = br#"[{"station":"HUULUNG","parameter":"water_level","value":19.4,"unit":"m","observed_at":"2026-10-09T01:00:00Z"}]"#;
    for input in inputs(json, &mut rng, 1500) {
        let _ = crate::station::parse_json(&input, now(), 1000);
    }
    let communes = [domain::CommuneCode::new("06385").unwrap()];
    let directory = "name,phone,commune,role,language,opt_out\n\"Nguyễn Văn An, chủ tịch\",0912345678,06385,commune_chair,vi,no\n";
    for input in inputs(directory.as_bytes(), &mut rng, 1500) {
        if let Ok(text) = std::str::from_utf8(&input) {
            let _ = crate::contacts::parse_csv(text, &communes);
        }
    }
    let csv = b"station,parameter,value,unit,observed_at\nHUULUNG,water_level,19.4,m,2026-10-09T01:00:00Z\n";
    for input in inputs(csv, &mut rng, 1500) {
        if let Ok(text) = std::str::from_utf8(&input) {
            let _ = crate::station::parse_csv(text, now(), 1000);
        }
    }
}

#[test]
fn deeply_nested_and_exponential_inputs_get_specific_errors() {
    let nested_json = "[".repeat(100_000);
    let e = crate::station::parse_json(nested_json.as_bytes(), now(), 1000).unwrap_err();
    assert!(e[0].detail.contains("not valid JSON"), "{e:?}");
    assert!(matches!(
        crate::openmeteo::parse_forecast(nested_json.as_bytes()),
        Err(crate::openmeteo::OpenMeteoError::Json(_))
    ));
    assert!(matches!(
        crate::usgs::parse_iv(nested_json.as_bytes()),
        Err(crate::usgs::UsgsError::Json(_))
    ));
    let laughs = b"<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]><alert>&c;</alert>";
    assert_eq!(crate::cap::parse_cap(laughs), Err(crate::cap::CapError::Dtd));
    let unclosed = format!("<alert>{}", "<a>".repeat(50_000));
    assert!(matches!(
        crate::cap::parse_cap(unclosed.as_bytes()),
        Err(crate::cap::CapError::Xml { .. })
    ));
}
