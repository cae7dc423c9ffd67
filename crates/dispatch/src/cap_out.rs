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

/// CAP urgency from the loudspeaker class (Circular 39: emergency pre-empts the programme).
fn urgency(class: MessageClass) -> &'static str {
    match class {
        MessageClass::Emergency => "Immediate",
        MessageClass::Priority => "Expected",
        MessageClass::Normal => "Future",
    }
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
    el("urgency", urgency(class));
    el("severity", severity(alert.risk_level, class));
    el(
        "certainty",
        if alert.provisional.is_empty() {
            "Likely"
        } else {
            "Possible"
        },
    );
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
    if !alert.provisional.is_empty() {
        parameter("provisional", &alert.provisional.join("; "));
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
