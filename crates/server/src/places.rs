//! The province's communes and stations, read from `config/communes.toml` and
//! `config/stations.toml`, with their provenance tags checked. Every problem is reported.

use std::collections::HashSet;

use domain::{Commune, CommuneCode, CommuneKind, Station, StationId, Tag, Tagged};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommunesFile {
    province: String,
    names_tag: String,
    codes_tag: String,
    commune: Vec<CommuneRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommuneRaw {
    code: String,
    name: String,
    kind: String,
    #[serde(default)]
    formed_from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StationsFile {
    station: Vec<StationRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelRaw {
    m: Option<f64>,
    tag: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImpactRaw {
    communes: Vec<String>,
    provenance: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StationRaw {
    id: String,
    name: String,
    river: String,
    basin: String,
    /// Decision 18 Art. 45 area class (1 to 4); absent where no source gives it.
    #[serde(default)]
    area_class: Option<u8>,
    bd1: LevelRaw,
    bd2: LevelRaw,
    bd3: LevelRaw,
    historic: LevelRaw,
    #[serde(default)]
    notes: String,
    impact: ImpactRaw,
}

fn check_tag(tag: &str, what: &str, errors: &mut Vec<String>) -> Option<Tag> {
    let t = Tag::parse(tag);
    if t.is_none() {
        errors.push(format!("{what}: tag {tag:?} must be one of V, D, S, M, NF"));
    }
    t
}

/// Parses the commune list.
pub fn parse_communes(text: &str) -> (Vec<Commune>, Vec<String>) {
    let mut errors = Vec::new();
    let file: CommunesFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => return (Vec::new(), vec![e.to_string().trim().to_owned()]),
    };
    if domain::ProvinceCode::new(&file.province).is_err() {
        errors.push(format!("province {:?} is not a 2-digit code", file.province));
    }
    check_tag(&file.names_tag, "names_tag", &mut errors);
    check_tag(&file.codes_tag, "codes_tag", &mut errors);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for c in file.commune {
        let at = format!("commune {:?}", c.code);
        let code = match CommuneCode::new(&c.code) {
            Ok(code) => code,
            Err(e) => {
                errors.push(format!("{at}: {e}"));
                continue;
            }
        };
        if !seen.insert(code.clone()) {
            errors.push(format!("{at}: listed twice"));
        }
        let kind = match c.kind.as_str() {
            "commune" => CommuneKind::Commune,
            "ward" => CommuneKind::Ward,
            other => {
                errors.push(format!("{at}: kind {other:?} must be \"commune\" or \"ward\""));
                continue;
            }
        };
        if c.name.trim().is_empty() {
            errors.push(format!("{at}: name is empty"));
        }
        let _ = c.formed_from;
        out.push(Commune {
            code,
            name: c.name,
            kind,
        });
    }
    (out, errors)
}

fn level(raw: &LevelRaw, what: &str, errors: &mut Vec<String>) -> Option<Tagged<f64>> {
    let tag = check_tag(&raw.tag, what, errors)?;
    match (tag, raw.m) {
        (Tag::NF, None) => None,
        (Tag::NF, Some(m)) => {
            errors.push(format!(
                "{what}: tagged NF (not found) but gives {m} m; a missing figure has no value"
            ));
            None
        }
        (_, None) => {
            errors.push(format!("{what}: tagged {tag} but gives no value (m)"));
            None
        }
        (_, Some(m)) if !m.is_finite() => {
            errors.push(format!("{what}: value is not a finite number"));
            None
        }
        (_, Some(m)) => Some(Tagged::new(m, tag)),
    }
}

/// Parses the station table, checking each commune against `communes`.
pub fn parse_stations(text: &str, communes: &[Commune]) -> (Vec<Station>, Vec<String>) {
    let mut errors = Vec::new();
    let file: StationsFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => return (Vec::new(), vec![e.to_string().trim().to_owned()]),
    };
    let known: HashSet<&CommuneCode> = communes.iter().map(|c| &c.code).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for s in file.station {
        let at = format!("station {:?}", s.id);
        let id = match StationId::new(&s.id) {
            Ok(id) => id,
            Err(e) => {
                errors.push(format!("{at}: {e}"));
                continue;
            }
        };
        if !seen.insert(id.clone()) {
            errors.push(format!("{at}: listed twice"));
        }
        if let Some(c) = s.area_class
            && !(1..=4).contains(&c)
        {
            errors.push(format!("{at}: area_class {c} must be 1, 2, 3 or 4"));
        }
        let bd1 = level(&s.bd1, &format!("{at} bd1"), &mut errors);
        let bd2 = level(&s.bd2, &format!("{at} bd2"), &mut errors);
        let bd3 = level(&s.bd3, &format!("{at} bd3"), &mut errors);
        let historic = level(&s.historic, &format!("{at} historic"), &mut errors);
        let present: Vec<(&str, f64)> = [("bd1", bd1), ("bd2", bd2), ("bd3", bd3)]
            .into_iter()
            .filter_map(|(n, l)| l.map(|l| (n, l.value)))
            .collect();
        for pair in present.windows(2) {
            if pair[0].1 >= pair[1].1 {
                errors.push(format!(
                    "{at}: {} ({} m) must be below {} ({} m)",
                    pair[0].0, pair[0].1, pair[1].0, pair[1].1
                ));
            }
        }
        let mut station_communes = Vec::new();
        for c in &s.impact.communes {
            match CommuneCode::new(c) {
                Ok(code) if known.contains(&code) => station_communes.push(code),
                Ok(_) => errors.push(format!("{at} impact: commune {c:?} is not in the commune list")),
                Err(e) => errors.push(format!("{at} impact: {e}")),
            }
        }
        if s.impact.communes.is_empty() {
            errors.push(format!("{at} impact: no communes; a crossing would warn nobody"));
        }
        let communes_provisional = match s.impact.provenance.as_str() {
            "official" => None,
            "provisional" if s.impact.reason.trim().is_empty() => {
                errors.push(format!("{at} impact: a provisional mapping must give its reason"));
                None
            }
            "provisional" => Some(s.impact.reason.clone()),
            other => {
                errors.push(format!(
                    "{at} impact: provenance {other:?} must be \"official\" or \"provisional\""
                ));
                None
            }
        };
        let _ = s.notes;
        out.push(Station {
            id,
            name: s.name,
            river: s.river,
            basin: s.basin,
            area_class: s.area_class,
            bd1_m: bd1,
            bd2_m: bd2,
            bd3_m: bd3,
            historic_m: historic,
            communes: station_communes,
            communes_provisional,
        });
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMUNES: &str = r#"
province = "20"
names_tag = "V"
codes_tag = "S"
[[commune]]
code = "06385"
name = "Xã Hữu Lũng"
kind = "commune"
"#;

    #[test]
    fn a_station_file_with_many_faults_reports_them_all() {
        let (communes, errs) = parse_communes(COMMUNES);
        assert!(errs.is_empty(), "{errs:?}");
        let stations = r#"
[[station]]
id = "HUULUNG"
name = "Hữu Lũng"
river = "Trung"
basin = "Thương"
bd1 = { m = 18.0, tag = "D" }
bd2 = { m = 17.0, tag = "X" }
bd3 = { m = 19.0, tag = "NF" }
historic = { tag = "V" }
[station.impact]
communes = ["06385", "99999"]
provenance = "provisional"
"#;
        let (_, errs) = parse_stations(stations, &communes);
        let text = errs.join("\n");
        for needle in [
            "bd2: tag \"X\"",
            "bd3: tagged NF (not found) but gives 19 m",
            "historic: tagged V but gives no value",
            "commune \"99999\" is not in the commune list",
            "must give its reason",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    type Row<'a> = (
        String,
        Option<(f64, &'a str)>,
        Option<(f64, &'a str)>,
        Option<(f64, &'a str)>,
    );

    #[test]
    fn the_shipped_station_table_keeps_every_tag_of_the_reference() {
        let (communes, errs) = parse_communes(crate::config::EMBEDDED_COMMUNES);
        assert!(errs.is_empty(), "{errs:?}");
        let (stations, errs) = parse_stations(crate::config::EMBEDDED_STATIONS, &communes);
        assert!(errs.is_empty(), "{errs:?}");
        let tags: Vec<Row> = stations
            .iter()
            .map(|s| {
                let t = |l: Option<Tagged<f64>>| l.map(|l| (l.value, l.tag.as_str()));
                (s.id.to_string(), t(s.bd1_m), t(s.bd2_m), t(s.bd3_m))
            })
            .collect();
        // shared/domain/stations.csv, row by row.
        assert_eq!(
            tags,
            vec![
                (
                    "LANGSON".into(),
                    Some((252.0, "M")),
                    Some((254.0, "D")),
                    Some((256.0, "M"))
                ),
                (
                    "HUULUNG".into(),
                    Some((17.0, "D")),
                    Some((18.0, "M")),
                    Some((19.0, "D"))
                ),
                ("VANMICH".into(), Some((187.0, "D")), None, Some((190.0, "D"))),
            ]
        );
        assert!(stations.iter().all(|s| s.communes_provisional.is_some()));
    }
}
