//! Command-line tools over the rules: `check-rules`, `replay` and `bench rules`.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use rules::RuleSet;
use rules::eval::{Inputs, LevelSource};
use rules::follow::Decision;
use rules::replay::{AlertEntry, FollowReplay, HistoricReading, ReplaySettings, TimelineEntry, replay};
use serde_json::json;

use crate::places::Area;

/// Prints the summary table of a rule set.
pub fn print_summary(set: &RuleSet, out: &mut impl Write) -> std::io::Result<()> {
    let s = rules::engine::summary(set);
    writeln!(
        out,
        "{:<14} {:>9} {:>12} {:>9}",
        "hazard", "official", "provisional", "examples"
    )?;
    let (mut o, mut p, mut e) = (0, 0, 0);
    for (hazard, (official, provisional, examples)) in &s.by_hazard {
        writeln!(out, "{hazard:<14} {official:>9} {provisional:>12} {examples:>9}")?;
        o += official;
        p += provisional;
        e += examples;
    }
    writeln!(out, "{:<14} {o:>9} {p:>12} {e:>9}", "total")?;
    writeln!(out, "every example passed")
}

/// Reads the history files (CSV or JSON, or a directory of them).
pub fn read_history(path: &Path) -> Result<Vec<HistoricReading>> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
            let p = entry?.path();
            if p.extension().is_some_and(|x| x == "csv" || x == "json") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let name = f.display().to_string();
        let mut readings = if f.extension().is_some_and(|x| x == "json") {
            ingest::history::parse_json(&name, &text)?
        } else {
            ingest::history::parse_csv(&name, &text)?
        };
        out.append(&mut readings);
    }
    Ok(out)
}

/// The rules' view of an area, with hypothetical station area classes for backtesting.
pub fn inputs_for(area: &Area, area_classes: &[(String, u8)]) -> Result<Inputs> {
    let mut stations = area.stations.clone();
    for (id, class) in area_classes {
        let s = stations
            .iter_mut()
            .find(|s| s.id.as_str() == id)
            .with_context(|| format!("--area-class: station {id:?} is not in the area file"))?;
        if !(1..=4).contains(class) {
            bail!("--area-class {id}={class}: the class must be 1 to 4");
        }
        s.area_class = Some(*class);
    }
    Ok(Inputs {
        province_group: area.province_group,
        stations,
        communes: area.commune_info.clone(),
        readings: Default::default(),
        bulletins: vec![],
    })
}

/// Writes the rules' coverage of the area's communes (see [`rules::coverage`]): per hazard,
/// how many communes can get a computed level, and for the others what is missing,
/// grouped; as JSON, every commune and hazard.
pub fn write_coverage(
    set: &rules::RuleSet,
    inputs: &Inputs,
    area: &Area,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let codes: Vec<domain::CommuneCode> = area.communes.iter().map(|c| c.code.clone()).collect();
    let covers = rules::coverage::coverage(set, inputs, &codes);
    if json {
        let rows: Vec<serde_json::Value> = covers
            .iter()
            .map(|c| {
                json!({"commune": c.commune.as_str(), "hazard": c.hazard.code(), "covered": c.covered(),
                    "rules": c.rules, "stations": c.stations, "missing": c.missing})
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "Communes that the rules can give a computed level to, from the configuration \
         (the others get a level only from an official bulletin):"
    )?;
    for (hazard, covered, all) in rules::coverage::summary(&covers) {
        writeln!(out, "{:<14} {covered:>3} of {all}", hazard.code())?;
        if hazard == domain::Hazard::Flood {
            // The station follower alerts alarm-level crossings without any rule.
            let crossing: std::collections::BTreeSet<&domain::CommuneCode> = inputs
                .stations
                .iter()
                .filter(|s| s.bd1_m.is_some() || s.bd2_m.is_some() || s.bd3_m.is_some())
                .flat_map(|s| s.communes.iter())
                .collect();
            writeln!(
                out,
                "    (alarm-level crossings, BĐ1-BĐ3, reach {} communes without a risk level)",
                crossing.len()
            )?;
        }
        // What is missing, with how many communes lack it.
        let mut gaps: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for c in covers.iter().filter(|c| c.hazard == hazard && !c.covered()) {
            for m in &c.missing {
                *gaps.entry(m.as_str()).or_default() += 1;
            }
        }
        let mut gaps: Vec<(&str, usize)> = gaps.into_iter().collect();
        gaps.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (what, n) in gaps.iter().take(6) {
            writeln!(out, "    missing for {n:>2}: {what}")?;
        }
        if gaps.len() > 6 {
            writeln!(
                out,
                "    ... and {} more (--format json lists every commune)",
                gaps.len() - 6
            )?;
        }
    }
    Ok(())
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&desk::render::vietnam())
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// Runs a replay with the service's settings (`follow`) and writes what the service would
/// have sent, as text or JSON: the alarm-level alerts of the station follower, the
/// readings quality control flagged, and the risk-level transitions. Returns the number
/// of alerts and transitions.
pub fn run_replay(
    set: &RuleSet,
    inputs: &Inputs,
    history: Vec<HistoricReading>,
    follow: FollowReplay,
    json_out: bool,
    out: &mut impl Write,
) -> Result<usize> {
    let total = history.len();
    let show = total > 20_000 && std::io::stderr().is_terminal();
    let mut last_pct = 0;
    let settings = ReplaySettings {
        follow,
        ..ReplaySettings::for_rules(set)
    };
    let replayed = replay(set, inputs, history, settings, |done, total| {
        if show && total > 0 {
            let pct = done * 100 / total;
            if pct != last_pct {
                last_pct = pct;
                let bar = "#".repeat(pct / 4);
                eprint!("\r[{bar:<25}] {pct:>3}% of {total} readings");
            }
        }
    });
    if show {
        eprintln!();
    }
    let timeline = &replayed.timeline;
    if json_out {
        let doc = json!({
            "alerts": replayed.alerts.iter().map(alert_json).collect::<Vec<_>>(),
            "flagged": replayed.flagged.iter().map(|f| json!({
                "station": f.station.as_str(),
                "observed_at": f.at,
                "value": f.value,
                "quality": f.flag.quality.code(),
                "reason": f.flag.reason,
            })).collect::<Vec<_>>(),
            "transitions": timeline.iter().map(entry_json).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(out, "Alarm-level alerts, as the service would send them:")?;
        writeln!(
            out,
            "{:<16} {:<9} {:<7} {:<12} {:<5} {:<16} reading",
            "time (UTC+7)", "station", "message", "decision", "level", "expires (UTC+7)"
        )?;
        for a in &replayed.alerts {
            let (level, reading) = decision_parts(a.decision);
            writeln!(
                out,
                "{:<16} {:<9} {:<7} {:<12} {:<5} {:<16} {reading}",
                local(a.at),
                a.station.as_str(),
                a.msg_type,
                a.decision.name(),
                level,
                local(a.expires),
            )?;
        }
        writeln!(
            out,
            "{} alerts from {total} readings ({} renewals and restatements)",
            replayed.alerts.len(),
            replayed
                .alerts
                .iter()
                .filter(|a| matches!(a.decision.name(), "renew" | "restate"))
                .count()
        )?;
        if !replayed.flagged.is_empty() {
            writeln!(
                out,
                "\nReadings flagged by quality control (they decide no level):"
            )?;
            for f in &replayed.flagged {
                writeln!(
                    out,
                    "{:<16} {:<9} {:>8.2}  {:<13} {}",
                    local(f.at),
                    f.station.as_str(),
                    f.value,
                    f.flag.quality.code(),
                    f.flag.reason.as_deref().unwrap_or("")
                )?;
            }
        }
        writeln!(out, "\nRisk-level transitions (Decision 18):")?;
        writeln!(
            out,
            "{:<16} {:<12} {:<7} {:<11} {:>5}  {:<11} {:<11} rules",
            "time (UTC+7)", "hazard", "commune", "transition", "level", "action", "provenance"
        )?;
        for e in timeline {
            let c = &e.change;
            let a = c.assessment.as_ref();
            writeln!(
                out,
                "{:<16} {:<12} {:<7} {:<11} {:>5}  {:<11} {:<11} {}",
                local(c.at),
                c.hazard.code(),
                c.commune,
                c.transition.name(),
                c.transition
                    .level()
                    .map(|l| l.get().to_string())
                    .unwrap_or_else(|| "-".into()),
                match e.action {
                    Some(rules::Action::AutoIssue) => "auto-issue",
                    Some(rules::Action::PreWarning) => "pre-warning",
                    None => "-",
                },
                match a {
                    Some(a) if a.official => "official",
                    Some(_) => "provisional",
                    None => "-",
                },
                a.map(|a| a.rules.join(" ")).unwrap_or_default()
            )?;
        }
        writeln!(out, "{} transitions from {total} readings", timeline.len())?;
    }
    Ok(replayed.alerts.len() + timeline.len())
}

/// The level and the reading behind a follower's decision, as text.
fn decision_parts(d: Decision) -> (String, String) {
    let reading = match d {
        Decision::Nothing => None,
        Decision::Issue { reading, .. }
        | Decision::Escalate { reading, .. }
        | Decision::Renew { reading, .. }
        | Decision::DeEscalate { reading, .. }
        | Decision::AllClear { reading, .. } => Some(reading),
    };
    let level = d
        .level()
        .map_or_else(|| "-".to_owned(), |l| l.short_vi().to_owned());
    let mut text = reading.map_or_else(String::new, |r| format!("{:.2} m at {}", r.value, local(r.at)));
    if matches!(d, Decision::Renew { blind: true, .. }) {
        text.push_str(" (no fresh reading since)");
    }
    (level, text)
}

fn alert_json(a: &AlertEntry) -> serde_json::Value {
    let (level, reading) = decision_parts(a.decision);
    json!({
        "at": a.at,
        "station": a.station.as_str(),
        "msg_type": a.msg_type,
        "decision": a.decision.name(),
        "alarm_level": a.decision.level().map(|l| l.number()),
        "level": level,
        "expires": a.expires,
        "reading": reading,
    })
}

fn entry_json(e: &TimelineEntry) -> serde_json::Value {
    let c = &e.change;
    let a = c.assessment.as_ref();
    json!({
        "at": c.at,
        "hazard": c.hazard.code(),
        "commune": c.commune.as_str(),
        "transition": c.transition.name(),
        "level": c.transition.level().map(|l| l.get()),
        "action": e.action.map(|x| match x { rules::Action::AutoIssue => "auto-issue", rules::Action::PreWarning => "pre-warning" }),
        "official": a.map(|a| a.official),
        "source": a.map(|a| match &a.source { LevelSource::Computed => "computed".to_owned(), LevelSource::Bulletin { id, .. } => format!("bulletin:{id}") }),
        "rules": a.map(|a| a.rules.clone()).unwrap_or_default(),
        "provisional_reasons": a.map(|a| a.provisional_reasons.clone()).unwrap_or_default(),
        "inputs": a.map(|a| a.inputs.iter().map(|i| json!({"name": i.name, "value": i.value})).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

/// The replay settings of the service's `[alerts]` and `[ingest]` policy (history is taken
/// as real readings of stations that confirm first readings, the default).
pub fn follow_replay(policy: &desk::AlertPolicy) -> FollowReplay {
    FollowReplay {
        follow: policy.follow(),
        qc: rules::quality::QcSettings {
            range: policy.ranges.get(domain::Parameter::WaterLevel.code()).copied(),
            max_rate_per_h: policy.max_water_level_rate_m_per_h,
            stuck_after: policy.stuck_after,
            first: policy.first_reading,
        },
        ttl: policy.ttl,
        all_clear_ttl: policy.all_clear_ttl,
    }
}

/// Writes one rejection line; the file is refused.
fn reject(out: &mut impl Write, field: &str, reason: &str) -> Result<bool> {
    writeln!(
        out,
        "{}",
        json!({"kind": "rejection", "field": field, "reason": reason})
    )?;
    Ok(false)
}

/// `canhbao receivers add`: registers a receiver for a commune of the province, with a new
/// broker password. The password alone goes to `out`, this once (the registry keeps only
/// its Mosquitto hash); what happened goes to `note`.
#[allow(clippy::too_many_arguments)]
pub async fn receivers_add(
    store: &store::Store,
    communes: &[domain::CommuneCode],
    id: &str,
    commune: &str,
    firmware: Option<String>,
    trusted_keys: Vec<String>,
    drills: bool,
    out: &mut impl Write,
    note: &mut impl Write,
) -> Result<()> {
    let id = domain::ReceiverId::new(id).map_err(|e| anyhow::anyhow!("--id: {e}"))?;
    let commune = domain::CommuneCode::new(commune).map_err(|e| anyhow::anyhow!("--commune: {e}"))?;
    if !communes.contains(&commune) {
        bail!("--commune {commune} is not a commune of the area file");
    }
    let credentials = api::fleet::new_broker_password()
        .map_err(|e| anyhow::anyhow!("no system randomness for a password: {e}"))?;
    let record = store::RegisteredReceiver {
        receiver_id: id.to_string(),
        commune: commune.to_string(),
        password_hash: Some(credentials.hash),
        trusted_keys,
        firmware,
        registered: Utc::now(),
        drills,
    };
    if !store.register_receiver(&record).await? {
        bail!("receiver {id} is already registered");
    }
    writeln!(
        note,
        "registered {id} for commune {commune}; its MQTT username is {id}"
    )?;
    writeln!(
        out,
        "{}",
        secrecy::ExposeSecret::expose_secret(&credentials.password)
    )?;
    writeln!(
        note,
        "this is the only time its MQTT password is shown; the registry keeps only its hash. \
         Run `canhbao mosquitto-config --out DIR` and reload Mosquitto so that it can log in"
    )?;
    Ok(())
}

/// `canhbao receivers list`: one JSON line per registered receiver, with its health.
pub async fn receivers_list(store: &store::Store, out: &mut impl Write) -> Result<()> {
    let now = Utc::now();
    for f in store.fleet().await? {
        let line = json!({
            "receiver_id": f.receiver.receiver_id,
            "commune": f.receiver.commune,
            "health": api::fleet::health(f.online, f.last_seen, now),
            "last_seen": f.last_seen,
            "last_receipt": f.last_receipt,
            "firmware": f.receiver.firmware,
            "trusted_keys": f.receiver.trusted_keys,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `canhbao receivers remove`.
pub async fn receivers_remove(store: &store::Store, id: &str, out: &mut impl Write) -> Result<()> {
    if !store.remove_receiver(id, Utc::now()).await? {
        bail!("no registered receiver {id:?}");
    }
    writeln!(out, "removed {id}; its receipts and heartbeats are now ignored")?;
    Ok(())
}

/// Parses `POINT=STATION` or `POINT=STATION@OFFSET_M` (the `--point` option).
pub fn parse_point(arg: &str) -> Result<(String, ingest::hydromet::PointTarget)> {
    let (point, rest) = arg
        .split_once('=')
        .with_context(|| format!("--point {arg:?}: write POINT=STATION or POINT=STATION@OFFSET_M"))?;
    let (station, offset) = match rest.split_once('@') {
        Some((s, o)) => (
            s,
            o.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .with_context(|| format!("--point {arg:?}: offset {o:?} is not a number of metres"))?,
        ),
        None => (rest, 0.0),
    };
    let station =
        domain::StationId::new(station).map_err(|e| anyhow::anyhow!("--point {arg:?}: station: {e}"))?;
    Ok((
        point.to_owned(),
        ingest::hydromet::PointTarget {
            station,
            water_level_offset_m: offset,
        },
    ))
}

/// `canhbao ingest-file` for Open-Meteo and USGS: every value in canhbao's units at the
/// feed's point, with the station `points` ties it to (null where none does), then every
/// refused value. With `points`, values that the station checks refuse are listed too.
fn ingest_hydromet(
    format: ingest::poller::FeedFormat,
    bytes: &[u8],
    points: Option<&ingest::hydromet::PointMap>,
    now: chrono::DateTime<Utc>,
    out: &mut impl Write,
) -> Result<bool> {
    let decoded = match ingest::poller::decode_hydromet(format, bytes) {
        Ok(d) => d,
        Err(e) => return reject(out, "document", &e),
    };
    let empty = ingest::hydromet::PointMap::default();
    let map = points.unwrap_or(&empty);
    for (mut line, sample) in decoded.to_json_lines().into_iter().zip(&decoded.samples) {
        line["station"] = serde_json::Value::Null;
        if let Some(t) = map.0.get(&sample.point) {
            line["station"] = json!(t.station.as_str());
            // Water levels go onto the national datum, as the station's alarm levels are.
            if sample.parameter == domain::Parameter::WaterLevel && t.water_level_offset_m != 0.0 {
                line["value"] = json!(((sample.value + t.water_level_offset_m) * 1e6).round() / 1e6);
                line["feed_value"] = json!((sample.value * 1e6).round() / 1e6);
            }
        }
        writeln!(out, "{line}")?;
    }
    let errors = match (points, decoded.kind) {
        (None, _) => decoded.errors.clone(),
        (Some(m), ingest::hydromet::SampleKind::Observed) => m.observations(&decoded, now).1,
        (Some(m), ingest::hydromet::SampleKind::Forecast) => m.forecasts(&decoded, now).1,
    };
    for e in &errors {
        writeln!(
            out,
            "{}",
            json!({"kind": "rejection", "field": e.field, "reason": e.detail})
        )?;
    }
    writeln!(
        out,
        "{}",
        json!({"kind": "summary", "values": decoded.samples.len(), "no_data": decoded.no_data, "refused": errors.len()})
    )?;
    Ok(true)
}

/// `canhbao ingest-file`: runs a parser on a file and prints what would be accepted, one
/// JSON line each, then every rejection. Returns false if the file is rejected as a whole.
/// `points` ties Open-Meteo and USGS points to stations; `now` is when it is run.
pub fn ingest_file(
    format: &str,
    bytes: &[u8],
    settings: &crate::Settings,
    points: Option<&ingest::hydromet::PointMap>,
    now: chrono::DateTime<Utc>,
    out: &mut impl Write,
) -> Result<bool> {
    match format {
        "open-meteo" | "open-meteo-flood" | "usgs-ogc" | "usgs-iv" => {
            let Some(f) = ingest::poller::FeedFormat::from_code(format) else {
                bail!("format {format:?} is not known");
            };
            ingest_hydromet(f, bytes, points, now, out)
        }
        "station-json" | "station-csv" => {
            let parsed = if format == "station-json" {
                ingest::station::parse_json(bytes, now, settings.max_batch)
            } else {
                let text = std::str::from_utf8(bytes).context("the file is not UTF-8")?;
                ingest::station::parse_csv(text, now, settings.max_batch)
            };
            match parsed {
                Ok(observations) => {
                    for o in &observations {
                        let known = settings.area.stations.iter().any(|s| &s.id == o.station());
                        let line = json!({
                            "kind": "observation",
                            "station": o.station().as_str(),
                            "parameter": o.parameter().code(),
                            "value": o.value(),
                            "unit": o.parameter().unit(),
                            "observed_at": o.observed_at(),
                            "station_configured": known,
                        });
                        writeln!(out, "{line}")?;
                    }
                    Ok(true)
                }
                Err(errors) => {
                    for e in &errors {
                        reject(out, &e.field, &e.detail)?;
                    }
                    Ok(false)
                }
            }
        }
        "cap" => {
            let cap = match ingest::cap::parse_cap(bytes) {
                Ok(c) => c,
                Err(e) => {
                    return reject(out, "document", &e.to_string());
                }
            };
            let findings = ingest::cap::validate(&cap, now);
            for f in &findings {
                let line =
                    json!({"kind": "finding", "rule": f.rule, "detail": f.detail, "fatal": f.is_fatal()});
                writeln!(out, "{line}")?;
            }
            if findings.iter().any(|f| f.is_fatal()) {
                return Ok(false);
            }
            let communes: Vec<domain::CommuneCode> =
                settings.area.communes.iter().map(|c| c.code.clone()).collect();
            match ingest::bulletin::to_bulletins(
                &cap,
                &settings.bulletins,
                settings.province.as_str(),
                &communes,
            ) {
                Ok(change) => {
                    for b in &change.bulletins {
                        let line = json!({
                            "kind": "bulletin",
                            "identifier": b.id,
                            "status": change.status.code(),
                            "sender": b.sender,
                            "hazard": b.hazard.code(),
                            "level": b.level.map(|l| l.get()),
                            "communes": b.communes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                            "effective": b.effective,
                            "expires": b.expires,
                            "replaces": change.replaces,
                        });
                        writeln!(out, "{line}")?;
                    }
                    if change.bulletins.is_empty() {
                        writeln!(
                            out,
                            "{}",
                            json!({"kind": "cancel", "identifier": change.identifier, "replaces": change.replaces})
                        )?;
                    }
                    Ok(true)
                }
                Err(e) => {
                    let line = json!({
                        "kind": "rejection",
                        "field": e.field(),
                        "reason": e.to_string(),
                        "cap": {"identifier": cap.identifier, "sender": cap.sender, "msg_type": cap.msg_type, "infos": cap.infos.len()},
                    });
                    writeln!(out, "{line}")?;
                    Ok(false)
                }
            }
        }
        "atom" | "rss" => match ingest::feed::parse_feed(bytes) {
            Ok(entries) => {
                for e in entries {
                    let (kind, detail) = match &e.cap {
                        ingest::feed::EntryCap::Linked(url) => ("linked", json!(url)),
                        ingest::feed::EntryCap::Embedded(a) => (
                            "embedded",
                            json!({"identifier": a.identifier, "sender": a.sender, "msg_type": a.msg_type}),
                        ),
                        ingest::feed::EntryCap::Summary(s) => (
                            "summary",
                            json!({"event": s.event, "status": s.status, "expires": s.expires, "area": s.area_desc}),
                        ),
                        ingest::feed::EntryCap::None => ("none", serde_json::Value::Null),
                    };
                    writeln!(
                        out,
                        "{}",
                        json!({"kind": "entry", "id": e.id, "title": e.title, "cap": kind, "detail": detail})
                    )?;
                }
                Ok(true)
            }
            Err(e) => reject(out, "document", &e.to_string()),
        },
        "nws" => match ingest::nws::parse_nws(bytes) {
            Ok(alerts) => {
                for a in alerts {
                    let line = json!({
                        "kind": "alert",
                        "identifier": a.identifier,
                        "sender": a.sender,
                        "msg_type": a.msg_type,
                        "event": a.infos.first().map(|i| i.event.clone()),
                        "expires": a.infos.first().and_then(|i| i.expires),
                        "references": a.references.len(),
                    });
                    writeln!(out, "{line}")?;
                }
                Ok(true)
            }
            Err(e) => reject(out, "document", &e.to_string()),
        },
        other => bail!(
            "format {other:?} is not known; supported: {}",
            ingest::poller::FeedFormat::CODES.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> crate::Settings {
        crate::config::load(&crate::config::Sources {
            config_dir: std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config")),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn coverage_of_the_shipped_area_names_its_gaps() {
        let s = settings();
        let text = |classes: &[(String, u8)]| {
            let inputs = inputs_for(&s.area, classes).unwrap();
            let mut out = Vec::new();
            write_coverage(&s.rules, &inputs, &s.area, false, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let shipped = text(&[]);
        assert!(shipped.contains("flood            0 of 65"), "{shipped}");
        assert!(
            shipped.contains("missing for 59: a station mapped to this commune"),
            "{shipped}"
        );
        assert!(shipped.contains("area class of station HUULUNG"), "{shipped}");
        // Setting Hữu Lũng's area class reaches its commune.
        let set = text(&[("HUULUNG".into(), 2)]);
        assert!(set.contains("flood            1 of 65"), "{set}");
        assert!(!set.contains("area class of station HUULUNG"), "{set}");
    }

    fn run(format: &str, bytes: &[u8]) -> (bool, String) {
        let mut out = Vec::new();
        let ok = ingest_file(format, bytes, &settings(), None, Utc::now(), &mut out).unwrap();
        (ok, String::from_utf8(out).unwrap())
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../ingest/fixtures/feeds/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// Snapshot tests: `ingest-file`'s output for every feed fixture, at a fixed time, is
    /// committed under `crates/ingest/fixtures/snapshots/`; `UPDATE_SNAPSHOTS=1` rewrites
    /// them after a deliberate change.
    #[test]
    fn every_feed_fixture_matches_its_snapshot() {
        let now: chrono::DateTime<Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../ingest/fixtures");
        let mut cases: Vec<(String, &str, Option<&str>)> = Vec::new();
        for dir in ["cap", "feeds"] {
            let mut names: Vec<String> = std::fs::read_dir(format!("{fixtures}/{dir}"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                let format = match name.rsplit('.').next() {
                    Some("xml") => "cap",
                    Some("atom") => "atom",
                    Some("rss") => "rss",
                    Some("geojson") => "nws",
                    _ => continue,
                };
                cases.push((format!("{dir}/{name}"), format, None));
            }
        }
        for (format, file, point) in [
            (
                "open-meteo",
                "open-meteo-forecast-hourly-CONSTRUCTED.json",
                "0=HUULUNG",
            ),
            (
                "open-meteo-flood",
                "open-meteo-flood-api-river-discharge.json",
                "0=LANGSON",
            ),
            ("usgs-ogc", "usgs-ogc-continuous.json", "USGS-06904500=HUULUNG@15"),
            (
                "usgs-ogc",
                "usgs-ogc-latest-continuous.json",
                "USGS-06904500=HUULUNG@15",
            ),
            (
                "usgs-iv",
                "usgs-waterservices-iv-discharge-gageheight.json",
                "USGS-01491000=VANMICH@185",
            ),
        ] {
            cases.push((format!("feeds/{file}"), format, Some(point)));
        }
        assert!(cases.len() >= 29, "{} fixtures", cases.len());
        let mut settings = settings();
        // The constructed Lạng Sơn bulletin's sender, so that its snapshot shows bulletins.
        settings
            .bulletins
            .authoritative_senders
            .push("kttv-langson@example.vn".into());
        for (file, format, point) in cases {
            let map = point.map(|p| {
                let (p, t) = parse_point(p).unwrap();
                ingest::hydromet::PointMap(std::collections::HashMap::from([(p, t)]))
            });
            let bytes = std::fs::read(format!("{fixtures}/{file}")).unwrap();
            let mut out = Vec::new();
            ingest_file(format, &bytes, &settings, map.as_ref(), now, &mut out).unwrap();
            let got = String::from_utf8(out).unwrap();
            let name = file.replace('/', "--");
            let path = format!("{fixtures}/snapshots/{name}.{format}.jsonl");
            if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
                std::fs::write(&path, &got).unwrap();
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(got, want, "{file} as {format} differs from {path}");
        }
    }

    #[test]
    fn hydromet_files_show_points_stations_and_refusals() {
        let (ok, out) = run(
            "usgs-iv",
            &fixture("usgs-waterservices-iv-discharge-gageheight.json"),
        );
        assert!(ok);
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["point"], "USGS-01491000");
        assert_eq!(lines[0]["station"], serde_json::Value::Null, "no --point given");
        assert_eq!(lines.last().unwrap()["values"], 20);
        let (p, t) = parse_point("USGS-01645000=NOWHERE").unwrap();
        let map = ingest::hydromet::PointMap(std::collections::HashMap::from([(p, t)]));
        let mut out = Vec::new();
        let body = fixture("usgs-waterservices-iv-discharge-gageheight.json");
        assert!(ingest_file("usgs-iv", &body, &settings(), Some(&map), Utc::now(), &mut out).unwrap());
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("USGS-01491000") && out.contains("is not mapped"),
            "{out}"
        );
        let (ok, out) = run("open-meteo", &fixture("open-meteo-error-400-CONSTRUCTED.json"));
        assert!(!ok && out.contains("tempeture_2m"), "{out}");
        assert!(parse_point("0=HUULUNG@abc").is_err());
        assert!(parse_point("HUULUNG").is_err());
    }

    #[test]
    fn ingest_file_prints_what_would_be_accepted_and_every_rejection() {
        let csv = "station,parameter,value,unit,observed_at\nHUULUNG,water_level,17.2,m,2026-10-09T01:00:00Z\nNOWHERE,rainfall,3,mm,2026-10-09T01:00:00Z\n";
        let (ok, out) = run("station-csv", csv.as_bytes());
        assert!(ok);
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (
                lines[0]["station"].as_str(),
                lines[0]["station_configured"].as_bool()
            ),
            (Some("HUULUNG"), Some(true))
        );
        assert_eq!(lines[1]["station_configured"], false);

        let (ok, out) = run("station-json", br#"[{"station":"HUULUNG","parameter":"rainfall","value":-1,"unit":"mm","observed_at":"2026-10-09T01:00:00Z"}]"#);
        assert!(!ok, "{out}");
        assert!(out.contains("\"field\":\"[0].value\""), "{out}");

        let xxe = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../ingest/fixtures/cap/xxe-external-entities-negative.xml"
        ))
        .unwrap();
        let (ok, out) = run("cap", &xxe);
        assert!(!ok);
        assert!(out.contains("DTD"), "{out}");
        let update = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../ingest/fixtures/cap/lang-son-flood-level3-CONSTRUCTED.xml"
        ))
        .unwrap()
        .replace("<msgType>Alert</msgType>", "<msgType>Update</msgType>");
        let (ok, out) = run("cap", update.as_bytes());
        assert!(!ok, "an Update without references is refused");
        assert!(out.contains("cap.update-without-references"), "{out}");
        let mut out = Vec::new();
        assert!(ingest_file("grib", b"", &settings(), None, Utc::now(), &mut out).is_err());
        let feed = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../ingest/fixtures/feeds/nyalert-cap-index.rss"
        ))
        .unwrap();
        let (ok, out) = run("rss", &feed);
        assert!(ok && out.contains("\"cap\":\"linked\""), "{out}");
        let nws = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../ingest/fixtures/feeds/api-alerts-active-zone-flood-watch.geojson"
        ))
        .unwrap();
        let (ok, out) = run("nws", &nws);
        assert!(ok && out.contains("Flood Watch"), "{out}");
    }
}

/// The database URL with any password in it replaced by `***`, to be shown.
pub fn shown_database_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// What an administrative command acts on, in one line for its operator; or why it must
/// not act: a SQLite database (or a keyring, for `needs_keyring`) that does not exist yet
/// means the command was not pointed at the deployment its operator meant (a shell
/// without `CANHBAO_ENV=production`, another directory), and it would quietly start a new
/// one of its own. The service creates both when it first starts.
pub fn existing_deployment(
    config_dir: &Path,
    env: Option<&str>,
    database_url: &str,
    data_dir: &Path,
    needs_keyring: bool,
) -> Result<String, String> {
    let shown = format!(
        "config {} (environment {}), database {}, data directory {}",
        config_dir.display(),
        env.unwrap_or("default"),
        shown_database_url(database_url),
        data_dir.display()
    );
    let advice = "this command acts on an existing deployment: give the config of the one you mean \
                  (--config-dir, CANHBAO_ENV=production or --env production, --data-dir, and the \
                  credentials the service reads), or start the service once with this configuration \
                  (`canhbao serve`), which creates it";
    if let Some(path) = database_url.strip_prefix("sqlite://")
        && !Path::new(path).exists()
    {
        return Err(format!("no database at {path} ({shown}); {advice}"));
    }
    let keyring = data_dir.join("keyring").join("keyring.json");
    if needs_keyring && !keyring.exists() {
        return Err(format!(
            "no signing keyring at {} ({shown}); {advice}",
            keyring.display()
        ));
    }
    Ok(shown)
}

#[cfg(test)]
mod deployment_tests {
    use super::*;

    #[test]
    fn an_admin_command_refuses_a_deployment_that_does_not_exist_and_names_the_one_it_uses() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("canhbao.db");
        let url = format!("sqlite://{}", db.display());
        let refused = existing_deployment(Path::new("config"), None, &url, tmp.path(), false).unwrap_err();
        assert!(
            refused.contains("no database at") && refused.contains("CANHBAO_ENV=production"),
            "{refused}"
        );
        std::fs::write(&db, b"").unwrap();
        let shown = existing_deployment(
            Path::new("/etc/canhbao"),
            Some("production"),
            &url,
            tmp.path(),
            false,
        )
        .unwrap();
        assert!(shown.contains("/etc/canhbao (environment production)"), "{shown}");
        assert!(existing_deployment(Path::new("config"), None, &url, tmp.path(), true).is_err());
        let pg = "postgres://canhbao:hunter2-secret@db.example/canhbao";
        let shown = existing_deployment(Path::new("config"), None, pg, tmp.path(), false).unwrap();
        assert!(
            shown.contains("postgres://canhbao:***@db.example/canhbao"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"));
    }
}
