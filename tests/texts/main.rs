//! Every template of canhbao's alert texts, rendered in full: the loudspeaker text, the
//! SMS and the CAP fields that say what to do, for each hazard and level, each status and
//! message type, each station-follower kind and each source of a level. The rendering is
//! compared with `tests/texts/golden/texts.md`, which is the review copy: read it as a duty
//! officer would. After a deliberate change of wording, write it again with
//! `CANHBAO_BLESS=1 cargo test -p canhbao-tests --test texts` and review the diff.

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use desk::cap_out::{CapContext, alert_cap_xml};
use desk::compose::{self, AlertPolicy, Cancelled, Draft};
use dispatch::{Signer, Topics};
use domain::{
    AlarmLevel, Alert, AlertId, AlertStatus, CommuneCode, Hazard, ProvinceCode, RiskLevel, Station,
    StationId, Tag, Tagged,
};
use rules::engine::Action;
use rules::eval::{Assessment, LevelSource};
use rules::follow::Decision;
use rules::quality::Point;
use sms::text::{SmsPolicy, SmsTemplates, render as sms_render};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/texts/golden/texts.md");

fn now() -> DateTime<Utc> {
    "2026-10-09T01:00:00Z".parse().unwrap()
}

fn topics() -> Topics {
    Topics::new("canhbao/v1", ProvinceCode::new("20").unwrap()).unwrap()
}

fn id(n: &str) -> AlertId {
    AlertId::new(n).unwrap()
}

/// Hữu Lũng as `config/areas/lang-son.toml` has it: BĐ2 is a [M] figure.
fn huu_lung() -> Station {
    Station {
        id: StationId::new("HUULUNG").unwrap(),
        name: "Hữu Lũng".into(),
        river: "Trung".into(),
        basin: "Thương".into(),
        area_class: None,
        bd1_m: Some(Tagged::new(17.0, Tag::D)),
        bd2_m: Some(Tagged::new(18.0, Tag::M)),
        bd3_m: Some(Tagged::new(19.0, Tag::D)),
        historic_m: Some(Tagged::new(23.96, Tag::V)),
        communes: vec![CommuneCode::new("06385").unwrap()],
        communes_provisional: None,
    }
}

/// The levels of each hazard that Decision 18 gives (reference §1).
fn levels(h: Hazard) -> std::ops::RangeInclusive<u8> {
    match h {
        Hazard::Flood => 1..=5,
        Hazard::FlashFlood => 1..=3,
        Hazard::HeavyRain => 1..=4,
        Hazard::Storm => 3..=5,
        Hazard::Fog => 1..=2,
        Hazard::Cold | Hazard::Heat | Hazard::Thunderstorm => 1..=3,
        Hazard::Drought => 1..=4,
        Hazard::Earthquake => 1..=5,
    }
}

fn assessment(h: Hazard, level: u8, source: LevelSource, official: bool) -> Assessment {
    Assessment {
        hazard: h,
        commune: CommuneCode::new("06385").unwrap(),
        level: RiskLevel::new(level),
        source,
        computed_level: RiskLevel::new(level),
        official,
        provisional_reasons: if official {
            vec![]
        } else {
            vec!["a figure behind the level is provisional [M]".into()]
        },
        rules: vec![format!("{}.test@1", h.code())],
        inputs: vec![],
        diagnostics: vec![],
        action: Action::AutoIssue,
    }
}

fn risk(h: Hazard, level: u8, source: LevelSource, official: bool, status: AlertStatus) -> Alert {
    let a = assessment(h, level, source, official);
    compose::risk_alert(
        &a,
        RiskLevel::new(level).unwrap(),
        vec![a.commune.clone()],
        id("risk-1"),
        &topics(),
        &AlertPolicy::default(),
        status,
        now(),
    )
    .unwrap()
}

fn bulletin(authoritative: bool, emergency: bool) -> LevelSource {
    LevelSource::Bulletin {
        id: "DBLU_12/08h00/DBQG".into(),
        sender: "Trung tâm Dự báo KTTV quốc gia".into(),
        authoritative,
        emergency,
        // A vouched bulletin's sender graded it; the relayed CAP keeps that grade.
        grade: authoritative.then(|| domain::CapGrade::new("Expected", "Severe", "Observed").unwrap()),
        issued: now(),
    }
}

fn follow(decision: Decision, status: AlertStatus, refs: usize) -> Alert {
    let references = (0..refs).map(|i| id(&format!("earlier-{i}"))).collect();
    compose::follow_alert(
        &huu_lung(),
        decision,
        id("follow-1"),
        references,
        &topics(),
        &AlertPolicy::default(),
        status,
        now(),
    )
    .unwrap()
    .unwrap()
}

fn point(value: f64) -> Point {
    Point {
        at: now() - Duration::minutes(20),
        value,
    }
}

fn draft(h: Hazard, level: Option<u8>, status: AlertStatus) -> Draft {
    Draft {
        hazard: h,
        risk_level: level.and_then(RiskLevel::new),
        class: None,
        communes: vec![CommuneCode::new("06385").unwrap()],
        headline: "Nguy cơ lũ quét tại Hữu Lũng".into(),
        description: "Mưa lớn trên 150 mm trong 6 giờ qua ở thượng nguồn sông Trung.".into(),
        instruction: "Không đi qua ngầm tràn; người dân ven suối di chuyển đến nơi cao.".into(),
        status,
        effective: None,
        expires: None,
        valid_for: Duration::hours(6),
        escalation: None,
        english: None,
        sms: true,
    }
}

/// The CAP elements that say what to do and how sure, and the parameters, of the first
/// (Vietnamese) `<info>`.
fn cap_fields(alert: &Alert) -> String {
    let record = store::AlertRecord::of(alert, Signer::from_seed(&[7; 32]).sign_alert(alert));
    let ctx = CapContext {
        sender: "pctt.langson.gov.vn",
        sender_name: "Ban Chỉ huy PCTT tỉnh Lạng Sơn",
        commune_geocode: "MA_XA",
        level_parameter: "CAP_DO_RUI_RO",
        hazard_parameter: "LOAI_THIEN_TAI",
    };
    let xml = alert_cap_xml(&record, &[], &ctx, |_| Some("Hữu Lũng".into())).unwrap();
    let info = &xml[xml.find("<info>").unwrap()..xml.find("</info>").unwrap()];
    let tag = |name: &str| {
        let open = format!("<{name}>");
        info.find(&open).map(|i| {
            let rest = &info[i + open.len()..];
            rest[..rest.find('<').unwrap()].to_owned()
        })
    };
    let mut out = format!("msgType={} ", tag_in(&xml, "msgType"));
    for name in ["responseType", "urgency", "severity", "certainty"] {
        let _ = write!(out, "{name}={} ", tag(name).unwrap_or_else(|| "—".into()));
    }
    let mut params = Vec::new();
    let mut rest = info;
    while let Some(i) = rest.find("<valueName>") {
        rest = &rest[i + "<valueName>".len()..];
        let name = &rest[..rest.find('<').unwrap()];
        let v = &rest[rest.find("<value>").unwrap() + "<value>".len()..];
        params.push(format!("{name}={}", &v[..v.find('<').unwrap()]));
    }
    out.push_str(&params.join(" "));
    out
}

fn tag_in(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let rest = &xml[xml.find(&open).unwrap() + open.len()..];
    rest[..rest.find('<').unwrap()].to_owned()
}

/// One alert in full.
fn full(out: &mut String, title: &str, alert: &Alert) {
    let sms = SmsTemplates::builtin("PCTT Lạng Sơn").render(alert);
    let parts = sms_render(&sms, SmsPolicy::Ucs2).segments;
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(
        out,
        "- class: {} · repeat: {} × {} s · origin: {:?}{}",
        alert.class.code(),
        alert.repeat.times,
        alert.repeat.interval_s,
        alert.origin,
        alert
            .follow
            .map(|f| format!(" · follower: {}", f.code()))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "- headline: {}", alert.headline);
    let _ = writeln!(out, "- description: {}", alert.description);
    let _ = writeln!(out, "- instruction: {}", alert.instruction);
    let _ = writeln!(out, "- sms ({parts} UCS-2 parts): {sms}");
    let _ = writeln!(out, "- cap: {}\n", cap_fields(alert));
}

fn render_all() -> String {
    let mut out = String::from(
        "# canhbao's alert texts, rendered\n\n\
         Written by `tests/texts/main.rs`; reviewed as a duty officer reads them. \
         Times are local (UTC+7). The SMS is the built-in template with sender \"PCTT Lạng Sơn\".\n\n",
    );
    let actual = AlertStatus::Actual;

    out.push_str("## Flood at a station (the station follower)\n\n");
    let st = huu_lung();
    for (title, decision, status, refs) in [
        (
            "issue: above BĐ1",
            Decision::Issue {
                level: AlarmLevel::Bd1,
                reading: point(17.35),
            },
            actual,
            0,
        ),
        (
            "escalate: above BĐ2 (a [M] figure)",
            Decision::Escalate {
                from: Some(AlarmLevel::Bd1),
                to: AlarmLevel::Bd2,
                reading: point(18.2),
            },
            actual,
            1,
        ),
        (
            "escalate: exactly at BĐ3",
            Decision::Escalate {
                from: Some(AlarmLevel::Bd2),
                to: AlarmLevel::Bd3,
                reading: point(19.0),
            },
            actual,
            2,
        ),
        (
            "issue: above BĐ3, an exercise",
            Decision::Issue {
                level: AlarmLevel::Bd3,
                reading: point(19.4),
            },
            AlertStatus::Exercise,
            0,
        ),
        (
            "restate (every 2 hours at BĐ3): still above BĐ3",
            Decision::Renew {
                level: AlarmLevel::Bd3,
                reading: point(19.55),
                blind: false,
                restate: true,
            },
            actual,
            3,
        ),
        (
            "renew: still above BĐ3, no fresh reading",
            Decision::Renew {
                level: AlarmLevel::Bd3,
                reading: point(19.55),
                blind: true,
                restate: false,
            },
            actual,
            3,
        ),
        (
            "de-escalate: below BĐ3, above BĐ2",
            Decision::DeEscalate {
                from: AlarmLevel::Bd3,
                to: AlarmLevel::Bd2,
                reading: point(18.6),
            },
            actual,
            4,
        ),
        (
            "all-clear: below every level",
            Decision::AllClear {
                from: AlarmLevel::Bd1,
                reading: point(16.5),
            },
            actual,
            5,
        ),
    ] {
        full(&mut out, title, &follow(decision, status, refs));
    }
    let _ = st;

    out.push_str("## Risk levels: every hazard and level (computed, official)\n\n");
    out.push_str(
        "| hazard | level | class | headline | instruction | CAP responseType |\n|---|---|---|---|---|---|\n",
    );
    for h in Hazard::ALL {
        for l in levels(h) {
            let a = risk(h, l, LevelSource::Computed, true, actual);
            let cap = cap_fields(&a);
            let response = cap
                .split(' ')
                .find_map(|f| f.strip_prefix("responseType="))
                .unwrap_or("—")
                .to_owned();
            let _ = writeln!(
                out,
                "| {} | {l} | {} | {} | {} | {response} |",
                h.code(),
                a.class.code(),
                a.headline,
                a.instruction
            );
        }
    }
    out.push('\n');

    out.push_str("## Risk levels: where the level comes from\n\n");
    for (title, h, l, source, official, status) in [
        (
            "flood level 3, computed, official",
            Hazard::Flood,
            3,
            LevelSource::Computed,
            true,
            actual,
        ),
        (
            "flood level 2, computed, provisional",
            Hazard::Flood,
            2,
            LevelSource::Computed,
            false,
            actual,
        ),
        (
            "flash flood level 1, computed (Emergency class)",
            Hazard::FlashFlood,
            1,
            LevelSource::Computed,
            true,
            actual,
        ),
        (
            "heavy rain level 1, computed, provisional",
            Hazard::HeavyRain,
            1,
            LevelSource::Computed,
            false,
            actual,
        ),
        (
            "flood level 4, vouched bulletin",
            Hazard::Flood,
            4,
            bulletin(true, false),
            true,
            actual,
        ),
        (
            "flood level 2, bulletin marked khẩn cấp",
            Hazard::Flood,
            2,
            bulletin(true, true),
            true,
            actual,
        ),
        (
            "flood level 2, unvouched bulletin",
            Hazard::Flood,
            2,
            bulletin(false, false),
            false,
            actual,
        ),
        (
            "storm level 4, computed, exercise",
            Hazard::Storm,
            4,
            LevelSource::Computed,
            true,
            AlertStatus::Exercise,
        ),
        (
            "heat level 2, computed",
            Hazard::Heat,
            2,
            LevelSource::Computed,
            true,
            actual,
        ),
        (
            "cold level 3, computed",
            Hazard::Cold,
            3,
            LevelSource::Computed,
            true,
            actual,
        ),
    ] {
        full(&mut out, title, &risk(h, l, source, official, status));
    }

    // A level that holds, restated 2 hours on, citing the bulletin that states it now.
    let first = risk(Hazard::Flood, 4, bulletin(true, false), true, actual);
    let record = store::AlertRecord::of(&first, Signer::from_seed(&[7; 32]).sign_alert(&first));
    let restated = compose::restate_risk_alert(
        &record,
        first.communes.clone(),
        Some((
            "DBLU_12/10h00/DBQG",
            "Trung tâm Dự báo KTTV quốc gia",
            now() + Duration::hours(2),
        )),
        id("risk-2"),
        &topics(),
        &AlertPolicy::default(),
        now() + Duration::hours(2),
    )
    .unwrap()
    .unwrap();
    full(
        &mut out,
        "flood level 4, vouched bulletin, restated 2 hours on",
        &restated,
    );
    // The next bulletin lowers it; then the level ends.
    let lower = assessment(Hazard::Flood, 2, bulletin(true, false), true);
    let down = compose::risk_update(
        &lower,
        RiskLevel::new(2).unwrap(),
        restated.communes.clone(),
        vec![first.id.clone(), restated.id.clone()],
        id("risk-3"),
        &topics(),
        &AlertPolicy::default(),
        actual,
        now() + Duration::hours(3),
    )
    .unwrap();
    full(&mut out, "flood lowered to level 2 by the next bulletin", &down);
    let record = store::AlertRecord::of(&down, Signer::from_seed(&[7; 32]).sign_alert(&down));
    let end = compose::risk_end_alert(
        &record,
        id("risk-4"),
        &topics(),
        &AlertPolicy::default(),
        now() + Duration::hours(6),
    )
    .unwrap()
    .unwrap();
    full(&mut out, "the flood level ends", &end);

    out.push_str("## A duty officer's warning, its update and its cancel\n\n");
    let policy = AlertPolicy::default();
    let issued = compose::officer_alert(
        &draft(Hazard::FlashFlood, Some(3), actual),
        "nguyen.van.a",
        id("officer-1"),
        vec![],
        &topics(),
        &policy,
        now(),
    )
    .unwrap();
    full(&mut out, "alert: flash flood level 3", &issued);
    let mut d = draft(Hazard::FlashFlood, Some(3), actual);
    d.headline = "Nguy cơ lũ quét tại Hữu Lũng (cập nhật)".into();
    let update = compose::officer_alert(
        &d,
        "nguyen.van.a",
        id("officer-2"),
        vec![id("officer-1")],
        &topics(),
        &policy,
        now() + Duration::minutes(4),
    )
    .unwrap();
    full(&mut out, "update: flash flood level 3", &update);
    let drill = compose::officer_alert(
        &draft(Hazard::Flood, None, AlertStatus::Exercise),
        "nguyen.van.a",
        id("officer-3"),
        vec![],
        &topics(),
        &policy,
        now(),
    )
    .unwrap();
    full(&mut out, "alert: flood without a level, an exercise", &drill);
    let cancel = compose::cancel_alert(
        &Cancelled {
            id: update.id.clone(),
            references: vec![id("officer-1")],
            headline: update.headline.clone(),
            hazard: update.hazard,
            class: update.class,
            communes: update.communes.clone(),
            status: update.status,
            expires: update.expires,
        },
        "mưa đã giảm, mực nước suối hạ",
        "tran.thi.b",
        id("officer-4"),
        &topics(),
        now() + Duration::minutes(9),
    )
    .unwrap();
    full(&mut out, "cancel of the update", &cancel);
    out
}

#[test]
fn every_alert_text_reads_as_the_golden_copy() {
    let got = render_all();
    if std::env::var_os("CANHBAO_BLESS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(GOLDEN).parent().unwrap()).unwrap();
        std::fs::write(GOLDEN, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(GOLDEN).unwrap_or_default();
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "the rendered texts differ from {GOLDEN} from line {}:\n got: {}\nwant: {}\n\
             (after a deliberate change: CANHBAO_BLESS=1 cargo test -p ingest --test texts, and review the diff)",
            first + 1,
            got.lines().nth(first).unwrap_or("<end>"),
            want.lines().nth(first).unwrap_or("<end>")
        );
    }
}

/// What the golden copy must say whatever its wording: checked on the rendering itself,
/// so that blessing a regression cannot pass.
#[test]
fn the_texts_keep_the_rules_of_the_domain() {
    let text = render_all();
    // No UUID or alert id is read aloud; no prefix is said twice in an SMS.
    for line in text
        .lines()
        .filter(|l| l.starts_with("- sms") || l.starts_with("- description"))
    {
        assert!(!line.contains("officer-"), "an id in a text: {line}");
        let lower = line.to_lowercase();
        for twice in [
            "cảnh báo lũ: cảnh báo lũ",
            "hủy bỏ lũ quét, sạt lở đất, sụt lún đất: hủy bỏ",
            "0,00 m",
        ] {
            assert!(!lower.contains(twice), "{twice}: {line}");
        }
    }
    // Heat and cold never tell people to evacuate.
    for h in [Hazard::Heat, Hazard::Cold] {
        for l in levels(h) {
            let a = risk(h, l, LevelSource::Computed, true, AlertStatus::Actual);
            assert!(
                !a.instruction.contains("sơ tán"),
                "{}: {}",
                h.code(),
                a.instruction
            );
            assert!(!cap_fields(&a).contains("Evacuate"), "{}", h.code());
        }
    }
    // A bulletin's level cites the bulletin and its sender; the origin says bulletin.
    let b = risk(Hazard::Flood, 4, bulletin(true, false), true, AlertStatus::Actual);
    assert!(b.description.contains("DBLU_12/08h00/DBQG"), "{}", b.description);
    assert!(
        b.description.contains("Trung tâm Dự báo KTTV quốc gia"),
        "{}",
        b.description
    );
    assert!(
        !b.description.contains("hệ thống cảnh báo tự động"),
        "{}",
        b.description
    );
    assert!(
        matches!(b.origin, domain::AlertOrigin::Bulletin { .. }),
        "{:?}",
        b.origin
    );
    let cap = cap_fields(&b);
    assert!(
        cap.contains("urgency=Expected severity=Severe certainty=Observed"),
        "the sender's grade is kept: {cap}"
    );
    // Flash floods and bulletins marked khẩn cấp are Emergency at every level.
    for l in levels(Hazard::FlashFlood) {
        let a = risk(
            Hazard::FlashFlood,
            l,
            LevelSource::Computed,
            true,
            AlertStatus::Actual,
        );
        assert_eq!(a.class, domain::MessageClass::Emergency, "flash flood {l}");
    }
    let urgent = risk(Hazard::Flood, 1, bulletin(true, true), true, AlertStatus::Actual);
    assert_eq!(urgent.class, domain::MessageClass::Emergency);
    // An observed crossing is Observed, however provisional its threshold; a Cancel is
    // Past and AllClear.
    let crossing = follow(
        Decision::Issue {
            level: AlarmLevel::Bd2,
            reading: point(18.2),
        },
        AlertStatus::Actual,
        0,
    );
    assert!(!crossing.provisional.is_empty(), "BĐ2 of Hữu Lũng is [M]");
    let cap = cap_fields(&crossing);
    assert!(cap.contains("certainty=Observed"), "{cap}");
    assert!(cap.contains("provisional=true"), "{cap}");
    assert!(
        !cap.contains("provisionalReasons"),
        "the reasons are English: {cap}"
    );
    let rain = cap_fields(&risk(
        Hazard::HeavyRain,
        1,
        LevelSource::Computed,
        false,
        AlertStatus::Actual,
    ));
    assert!(rain.contains("certainty=Likely"), "{rain}");
    let issued = risk(Hazard::Flood, 3, LevelSource::Computed, true, AlertStatus::Actual);
    let cancel = compose::cancel_alert(
        &Cancelled {
            id: issued.id.clone(),
            references: vec![],
            headline: issued.headline.clone(),
            hazard: issued.hazard,
            class: issued.class,
            communes: issued.communes.clone(),
            status: issued.status,
            expires: issued.expires,
        },
        "",
        "tran.thi.b",
        id("c-1"),
        &topics(),
        now(),
    )
    .unwrap();
    let cap = cap_fields(&cancel);
    assert!(
        cap.contains("urgency=Past") && cap.contains("responseType=AllClear"),
        "{cap}"
    );
    assert!(!cancel.description.contains("risk-1"), "{}", cancel.description);
    // Times in one official form everywhere.
    assert!(
        text.contains("08 giờ 00 phút ngày 09/10/2026") || text.contains("07 giờ 40 phút ngày 09/10/2026")
    );
}
