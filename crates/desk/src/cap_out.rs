//! CAP 1.2 out (pure): a stored alert as an OASIS CAP 1.2 document that validates against
//! `CAP-v1.2.xsd`, Vietnamese in its one `<info>` block, with the Decision 18 level and the
//! loudspeaker class as parameters and each commune as a geocode, so that national hubs
//! and aggregators (and canhbao itself) can read it.

use chrono::{DateTime, Utc};
use domain::{Hazard, MessageClass};

/// What the document needs besides the alert.
#[derive(Debug, Clone)]
pub struct CapContext<'a> {
    /// `<sender>`: no spaces, commas, `<` or `&` (CAP 1.2 §3.2.1).
    pub sender: &'a str,
    pub sender_name: &'a str,
    /// The `<geocode>` name of a commune code (`[bulletins] commune_geocode`).
    pub commune_geocode: &'a str,
    /// The `<parameter>` name of the risk level (`[bulletins] level_parameters`' first).
    pub level_parameter: &'a str,
    /// The `<parameter>` name of the hazard code (`[bulletins] hazard_parameter`).
    pub hazard_parameter: &'a str,
}

/// An alert an Update or Cancel references: its identifier and when it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapReference {
    pub id: String,
    pub sent: DateTime<Utc>,
}

/// A CAP time: `2026-10-09T09:00:00+07:00` (CAP forbids `Z`).
pub fn cap_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&crate::render::vietnam())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab and newlines are not allowed in XML 1.0.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

fn category(hazard: Hazard) -> &'static str {
    match hazard {
        Hazard::Earthquake => "Geo",
        _ => "Met",
    }
}

/// Whether the alert says that no action is needed any more: a Cancel, or the station
/// follower's all-clear.
fn is_over(alert: &store::AlertRecord) -> bool {
    alert.msg_type == "Cancel" || alert.follow.as_deref() == Some("all-clear")
}

/// CAP urgency: Past once it is over; otherwise from the loudspeaker class (Circular 39:
/// emergency pre-empts the programme).
fn urgency(alert: &store::AlertRecord, class: MessageClass) -> &'static str {
    if is_over(alert) {
        return "Past";
    }
    if let Some(u) = sender_grade(alert, domain::CapGrade::urgency) {
        return u;
    }
    match class {
        MessageClass::Emergency => "Immediate",
        MessageClass::Priority => "Expected",
        MessageClass::Normal => "Future",
    }
}

/// CAP certainty, as the method warrants: Observed for a level read from observations
/// (an alarm-level crossing; flood, fog, cold and heat levels of the shipped rules, which
/// read observations), Likely for one computed from forecasts (heavy rain, flash flood and
/// landslide, storm) and for a bulletin's or an officer's warning. Whether a figure
/// behind it is provisional is its own parameter, not a lower certainty.
fn certainty(alert: &store::AlertRecord, hazard: Hazard) -> &'static str {
    if is_over(alert) || alert.alarm_level.is_some() || alert.follow.is_some() {
        return "Observed";
    }
    if let Some(c) = sender_grade(alert, domain::CapGrade::certainty) {
        return c;
    }
    match (alert.origin_kind.as_str(), hazard) {
        ("computed", Hazard::HeavyRain | Hazard::FlashFlood | Hazard::Storm) => "Likely",
        ("computed", _) => "Observed",
        _ => "Likely",
    }
}

/// CAP responseType, fitting the hazard and its level (or the alarm level, for a
/// crossing): AllClear once it is over.
pub fn response_type(
    hazard: Hazard,
    level: Option<i64>,
    alarm_level: Option<i64>,
    over: bool,
) -> &'static str {
    if over {
        return "AllClear";
    }
    let n = level.or(alarm_level).unwrap_or(1);
    match hazard {
        // Flash floods and landslides give no time to wait: from level 2 people leave;
        // at level 1 they get ready to (the advice of `render::advice_vi`).
        Hazard::FlashFlood if n >= 2 => "Evacuate",
        Hazard::FlashFlood => "Prepare",
        Hazard::Flood if n >= 3 => "Evacuate",
        Hazard::Flood if n == 2 => "Prepare",
        Hazard::HeavyRain if n >= 3 => "Prepare",
        Hazard::Flood | Hazard::HeavyRain | Hazard::Drought => "Monitor",
        Hazard::Storm if n >= 4 => "Evacuate",
        Hazard::Storm | Hazard::Cold | Hazard::Heat => "Prepare",
        Hazard::Thunderstorm | Hazard::Earthquake => "Shelter",
        Hazard::Fog => "Avoid",
    }
}

/// A bulletin's level keeps its sender's grade, where the sender gave one.
fn sender_grade(
    alert: &store::AlertRecord,
    field: fn(&domain::CapGrade) -> &'static str,
) -> Option<&'static str> {
    alert.grade.as_ref().map(field).filter(|v| *v != "Unknown")
}

/// CAP severity from the Decision 18 risk level, or the class without one.
fn severity(level: Option<i64>, class: MessageClass) -> &'static str {
    match (level, class) {
        (Some(4..), _) => "Extreme",
        (Some(3), _) => "Severe",
        (Some(2), _) => "Moderate",
        (Some(_), _) => "Minor",
        (None, MessageClass::Emergency) => "Severe",
        (None, MessageClass::Priority) => "Moderate",
        (None, MessageClass::Normal) => "Minor",
    }
}

/// The CAP 1.2 document of `alert`; `None` if a stored code is not one canhbao knows.
/// `references` are the alerts it references, with their sent times; `commune_name`
/// names communes for `<areaDesc>`.
pub fn alert_cap_xml(
    alert: &store::AlertRecord,
    references: &[CapReference],
    ctx: &CapContext<'_>,
    commune_name: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let hazard = Hazard::from_code(&alert.hazard)?;
    let class = MessageClass::from_code(&alert.class)?;
    let mut x = String::with_capacity(2048);
    let mut el = |name: &str, value: &str, indent: usize| {
        x.push_str(&" ".repeat(indent));
        x.push_str(&format!("<{name}>{}</{name}>\n", escape(value)));
    };
    el("identifier", &alert.id, 2);
    el("sender", ctx.sender, 2);
    el("sent", &cap_time(alert.sent), 2);
    el("status", &alert.status, 2);
    el("msgType", &alert.msg_type, 2);
    el("scope", "Public", 2);
    if !references.is_empty() {
        let refs: Vec<String> = references
            .iter()
            .map(|r| format!("{},{},{}", ctx.sender, r.id, cap_time(r.sent)))
            .collect();
        el("references", &refs.join(" "), 2);
    }
    let head = std::mem::take(&mut x);
    let vietnamese = Text {
        language: "vi-VN",
        event: hazard.name_vi(),
        headline: &alert.headline,
        description: &alert.description,
        instruction: &alert.instruction,
    };
    let mut blocks = info_block(alert, &vietnamese, hazard, class, ctx, &commune_name);
    if let Some(en) = &alert.english {
        let english = Text {
            language: "en-US",
            event: hazard.name_en(),
            headline: &en.headline,
            description: &en.description,
            instruction: &en.instruction,
        };
        blocks.push_str(&info_block(alert, &english, hazard, class, ctx, &commune_name));
    }
    Some(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">\n{head}{blocks}</alert>\n"
    ))
}

/// The text of one `<info>` block, in one language.
struct Text<'a> {
    language: &'a str,
    event: &'a str,
    headline: &'a str,
    description: &'a str,
    instruction: &'a str,
}

/// One `<info>` block: the same facts (urgency, severity, parameters, area) in the
/// language of `text`.
fn info_block(
    alert: &store::AlertRecord,
    text: &Text<'_>,
    hazard: Hazard,
    class: MessageClass,
    ctx: &CapContext<'_>,
    commune_name: &impl Fn(&str) -> Option<String>,
) -> String {
    let mut info = String::new();
    let mut el = |name: &str, value: &str| {
        info.push_str(&format!("    <{name}>{}</{name}>\n", escape(value)));
    };
    el("language", text.language);
    el("category", category(hazard));
    el("event", text.event);
    el(
        "responseType",
        response_type(hazard, alert.risk_level, alert.alarm_level, is_over(alert)),
    );
    el("urgency", urgency(alert, class));
    el(
        "severity",
        sender_grade(alert, domain::CapGrade::severity).unwrap_or_else(|| severity(alert.risk_level, class)),
    );
    el("certainty", certainty(alert, hazard));
    el("effective", &cap_time(alert.effective));
    el("expires", &cap_time(alert.expires));
    el("senderName", ctx.sender_name);
    el("headline", text.headline);
    el("description", text.description);
    if !text.instruction.trim().is_empty() {
        el("instruction", text.instruction);
    }
    let mut parameter = |name: &str, value: &str| {
        info.push_str(&format!(
            "    <parameter>\n      <valueName>{}</valueName>\n      <value>{}</value>\n    </parameter>\n",
            escape(name),
            escape(value)
        ));
    };
    parameter(ctx.hazard_parameter, hazard.code());
    if let Some(level) = alert.risk_level {
        parameter(ctx.level_parameter, &level.to_string());
    }
    if let Some(level) = alert.alarm_level {
        parameter("alarmLevel", &level.to_string());
    }
    parameter("messageClass", class.code());
    // Whether it rests on a provisional figure is said in every language; why, in English
    // (the reasons are written in English), only in the English block.
    if !alert.provisional.is_empty() {
        parameter("provisional", "true");
        if text.language.starts_with("en") {
            parameter("provisionalReasons", &alert.provisional.join("; "));
        }
    }
    let names: Vec<String> = alert
        .communes
        .iter()
        .map(|c| commune_name(c).unwrap_or_else(|| c.clone()))
        .collect();
    info.push_str("    <area>\n");
    info.push_str(&format!(
        "      <areaDesc>{}</areaDesc>\n",
        escape(&names.join(", "))
    ));
    for c in &alert.communes {
        info.push_str(&format!(
            "      <geocode>\n        <valueName>{}</valueName>\n        <value>{}</value>\n      </geocode>\n",
            escape(ctx.commune_geocode),
            escape(c)
        ));
    }
    info.push_str("    </area>\n");
    format!("  <info>\n{info}  </info>\n")
}

/// An Atom feed of `alerts` (newest first), each entry linking to its CAP document at
/// `cap/<id>.cap` relative to the feed. `updated` is the newest alert's sent time, or
/// `now` for an empty feed.
pub fn alerts_atom(alerts: &[store::AlertRecord], feed_id: &str, title: &str, now: DateTime<Utc>) -> String {
    let updated = alerts.iter().map(|a| a.sent).max().unwrap_or(now);
    let mut x = String::with_capacity(512 + alerts.len() * 512);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    x.push_str(&format!("  <id>{}</id>\n", escape(feed_id)));
    x.push_str(&format!("  <title>{}</title>\n", escape(title)));
    x.push_str(&format!("  <updated>{}</updated>\n", cap_time(updated)));
    x.push_str("  <author><name>canhbao</name></author>\n");
    x.push_str("  <link rel=\"self\" href=\"alerts.atom\"/>\n");
    for a in alerts {
        x.push_str("  <entry>\n");
        x.push_str(&format!("    <id>urn:canhbao:alert:{}</id>\n", escape(&a.id)));
        x.push_str(&format!("    <title>{}</title>\n", escape(&a.headline)));
        x.push_str(&format!("    <updated>{}</updated>\n", cap_time(a.sent)));
        x.push_str(&format!("    <summary>{}</summary>\n", escape(&a.description)));
        x.push_str(&format!(
            "    <link rel=\"alternate\" type=\"application/cap+xml\" href=\"cap/{}.cap\"/>\n",
            escape(&a.id)
        ));
        x.push_str("  </entry>\n");
    }
    x.push_str("</feed>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_times_carry_the_vietnam_offset_and_text_is_escaped() {
        let t: DateTime<Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        assert_eq!(cap_time(t), "2026-10-09T09:00:00+07:00");
        assert_eq!(
            escape("Lũ <cấp 3> & \"sơ tán\"\u{1}"),
            "Lũ &lt;cấp 3&gt; &amp; &quot;sơ tán&quot;"
        );
        assert_eq!(severity(Some(5), MessageClass::Normal), "Extreme");
        assert_eq!(severity(None, MessageClass::Priority), "Moderate");
        assert_eq!(category(Hazard::Earthquake), "Geo");
    }
}
