//! The province's places, read from its area file (`config/areas/lang-son.toml`):
//! communes, stations with their alarm levels, the station-to-commune, zone-to-commune
//! and exposure mappings, and the Art. 46 province group, with every provenance tag
//! checked. Every problem is reported at once.

use std::collections::HashSet;

use domain::{Commune, CommuneCode, CommuneKind, Station, StationId, Tag, Tagged};
use rules::engine::Susceptibility;
use rules::eval::CommuneInfo;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AreaFile {
    province: ProvinceRaw,
    #[serde(default)]
    commune: Vec<CommuneRaw>,
    #[serde(default)]
    station: Vec<StationRaw>,
    #[serde(default)]
    exposure: Vec<MappingRaw>,
    #[serde(default)]
    susceptibility: Vec<MappingRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvinceRaw {
    code: String,
    name: String,
    flash_flood_group: Option<u8>,
    #[serde(default)]
    flash_flood_group_tag: Option<String>,
    names_tag: String,
    codes_tag: String,
}

/// An exposure (`kind`) or a susceptibility `class` mapped to communes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingRaw {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    class: Option<String>,
    communes: Vec<String>,
    provenance: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    citation: String,
}

/// Everything the area file says.
#[derive(Debug, Clone, Default)]
pub struct Area {
    /// The province's 2-digit code (`[province] code`).
    pub code: String,
    pub name: String,
    pub province_group: Option<u8>,
    pub communes: Vec<Commune>,
    pub stations: Vec<Station>,
    /// Per commune: susceptibility class and exposures, for the rules.
    pub commune_info: Vec<CommuneInfo>,
    /// Why each provisional mapping is provisional, for operators.
    pub provisional: Vec<String>,
    /// Stations whose first reading is handled otherwise than `[ingest] first_reading`.
    pub first_reading: Vec<(StationId, rules::quality::FirstReading)>,
}

/// Parses and checks an area file.
pub fn parse_area(text: &str) -> (Area, Vec<String>) {
    let file: AreaFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => return (Area::default(), vec![e.to_string().trim().to_owned()]),
    };
    let mut errors = Vec::new();
    let p = &file.province;
    if domain::ProvinceCode::new(&p.code).is_err() {
        errors.push(format!("province.code {:?} is not a 2-digit code", p.code));
    }
    check_tag(&p.names_tag, "province.names_tag", &mut errors);
    check_tag(&p.codes_tag, "province.codes_tag", &mut errors);
    if let Some(g) = p.flash_flood_group
        && !(1..=4).contains(&g)
    {
        errors.push(format!("province.flash_flood_group {g} must be 1 to 4"));
    }
    if let Some(t) = &p.flash_flood_group_tag {
        check_tag(t, "province.flash_flood_group_tag", &mut errors);
    }
    let communes = parse_communes_list(file.commune, &mut errors);
    let mut first_reading = Vec::new();
    let (stations, errs) = parse_stations_list(file.station, &communes, &mut first_reading);
    errors.extend(errs);
    let mut info: Vec<CommuneInfo> = communes
        .iter()
        .map(|c| CommuneInfo {
            code: c.code.clone(),
            susceptibility: None,
            exposure: Vec::new(),
            provisional: Vec::new(),
        })
        .collect();
    let mut provisional = Vec::new();
    for (i, m) in file.exposure.iter().enumerate() {
        let at = format!("exposure[{i}]");
        let Some(kind) = m.kind.clone() else {
            errors.push(format!("{at}: kind is required"));
            continue;
        };
        mapping_provenance(m, &at, &mut errors, &mut provisional);
        for code in mapping_communes(m, &at, &info, &mut errors) {
            if let Some(c) = info.iter_mut().find(|c| c.code == code) {
                c.exposure.push(kind.clone());
                if m.provenance == "provisional" {
                    c.provisional
                        .push(format!("{kind} exposure of {code} is provisional: {}", m.reason));
                }
            }
        }
    }
    for (i, m) in file.susceptibility.iter().enumerate() {
        let at = format!("susceptibility[{i}]");
        let class = m.class.as_deref().and_then(Susceptibility::from_code);
        let Some(class) = class else {
            errors.push(format!(
                "{at}: class {:?} must be low, medium, high or very_high",
                m.class
            ));
            continue;
        };
        mapping_provenance(m, &at, &mut errors, &mut provisional);
        for code in mapping_communes(m, &at, &info, &mut errors) {
            if let Some(c) = info.iter_mut().find(|c| c.code == code) {
                if c.susceptibility.is_some() {
                    errors.push(format!("{at}: commune {code} already has a susceptibility class"));
                }
                c.susceptibility = Some(class);
                if m.provenance == "provisional" {
                    c.provisional
                        .push(format!("susceptibility of {code} is provisional: {}", m.reason));
                }
            }
        }
    }
    for s in &stations {
        if let Some(why) = &s.communes_provisional {
            provisional.push(format!("station {} impact: {why}", s.id));
        }
    }
    let area = Area {
        code: p.code.clone(),
        name: p.name.clone(),
        province_group: p.flash_flood_group,
        communes,
        stations,
        commune_info: info,
        provisional,
        first_reading,
    };
    (area, errors)
}

fn mapping_provenance(m: &MappingRaw, at: &str, errors: &mut Vec<String>, provisional: &mut Vec<String>) {
    match m.provenance.as_str() {
        "official" if m.citation.trim().is_empty() => {
            errors.push(format!("{at}: an official mapping must give its citation"))
        }
        "official" => {}
        "provisional" if m.reason.trim().is_empty() => {
            errors.push(format!("{at}: a provisional mapping must give its reason"))
        }
        "provisional" => provisional.push(format!("{at}: {}", m.reason)),
        other => errors.push(format!(
            "{at}: provenance {other:?} must be \"official\" or \"provisional\""
        )),
    }
}

fn mapping_communes(
    m: &MappingRaw,
    at: &str,
    info: &[CommuneInfo],
    errors: &mut Vec<String>,
) -> Vec<CommuneCode> {
    let mut out = Vec::new();
    for c in &m.communes {
        match CommuneCode::new(c) {
            Ok(code) if info.iter().any(|i| i.code == code) => out.push(code),
            Ok(_) => errors.push(format!("{at}: commune {c:?} is not in the commune list")),
            Err(e) => errors.push(format!("{at}: {e}")),
        }
    }
    out
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
    /// What the station's first reading needs: `confirm` (the next reading, the
    /// default) or `accept` (taken as it is). See docs/rules.md, "Quality control".
    #[serde(default)]
    first_reading: Option<String>,
}

fn check_tag(tag: &str, what: &str, errors: &mut Vec<String>) -> Option<Tag> {
    let t = Tag::parse(tag);
    if t.is_none() {
        errors.push(format!("{what}: tag {tag:?} must be one of V, D, S, M, NF"));
    }
    t
}

fn parse_communes_list(list: Vec<CommuneRaw>, errors: &mut Vec<String>) -> Vec<Commune> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for c in list {
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
    out
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

/// Checks the stations, each commune against `communes`.
fn parse_stations_list(
    list: Vec<StationRaw>,
    communes: &[Commune],
    first_reading: &mut Vec<(StationId, rules::quality::FirstReading)>,
) -> (Vec<Station>, Vec<String>) {
    let mut errors = Vec::new();
    let known: HashSet<&CommuneCode> = communes.iter().map(|c| &c.code).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for s in list {
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
        if let Some(f) = &s.first_reading {
            match rules::quality::FirstReading::from_code(f) {
                Some(policy) => first_reading.push((id.clone(), policy)),
                None => errors.push(format!(
                    "{at}: first_reading {f:?} must be \"confirm\" or \"accept\""
                )),
            }
        }
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

    const HEAD: &str = r#"
[province]
code = "20"
name = "Lạng Sơn"
flash_flood_group = 2
names_tag = "V"
codes_tag = "S"

[[commune]]
code = "06385"
name = "Xã Hữu Lũng"
kind = "commune"
"#;

    #[test]
    fn an_area_file_with_many_faults_reports_them_all() {
        let text = format!(
            "{HEAD}{}",
            r#"
[[exposure]]
kind = "expressway"
communes = ["06385", "99999"]
provenance = "provisional"

[[susceptibility]]
class = "extreme"
communes = ["06385"]
provenance = "official"

[[station]]
id = "HUULUNG"
name = "Hữu Lũng"
river = "Trung"
basin = "Thương"
area_class = 7
bd1 = { m = 18.0, tag = "D" }
bd2 = { m = 17.0, tag = "X" }
bd3 = { m = 19.0, tag = "NF" }
historic = { tag = "V" }
[station.impact]
communes = ["06385", "99999"]
provenance = "provisional"
"#
        );
        let (_, errs) = parse_area(&text);
        let text = errs.join("\n");
        for needle in [
            "exposure[0]: a provisional mapping must give its reason",
            "exposure[0]: commune \"99999\" is not in the commune list",
            "susceptibility[0]: class Some(\"extreme\")",
            "area_class 7 must be 1, 2, 3 or 4",
            "bd2: tag \"X\"",
            "bd3: tagged NF (not found) but gives 19 m",
            "historic: tagged V but gives no value",
            "impact: commune \"99999\" is not in the commune list",
            "impact: a provisional mapping must give its reason",
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
    fn the_shipped_area_keeps_every_tag_of_the_reference() {
        let (area, errs) = parse_area(crate::config::EMBEDDED_AREA);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(area.communes.len(), 65);
        assert_eq!(area.province_group, Some(2));
        let t = |l: Option<Tagged<f64>>| l.map(|l| (l.value, l.tag.as_str()));
        let tags: Vec<Row> = area
            .stations
            .iter()
            .map(|s| (s.id.to_string(), t(s.bd1_m), t(s.bd2_m), t(s.bd3_m)))
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
        assert!(
            area.stations
                .iter()
                .all(|s| s.communes_provisional.is_some() && s.area_class.is_none())
        );
        assert!(
            area.commune_info.iter().all(|c| c.susceptibility.is_none()),
            "no source maps zones yet"
        );
        let pass = area
            .commune_info
            .iter()
            .find(|c| c.code.as_str() == "06541")
            .unwrap();
        assert_eq!(pass.exposure, vec!["mountain_pass"]);
    }
}
