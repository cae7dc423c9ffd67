//! CAP 1.2 bulletins for tests and benchmarks.

use chrono::Utc;

/// How the service under test reads a bulletin: the CAP parameter names and the geocode
/// of the whole province (its `[bulletins]` settings).
#[derive(Debug, Clone)]
pub struct BulletinTerms {
    pub hazard_parameter: String,
    pub level_parameter: String,
    pub province_geocode: String,
    pub province: String,
}

/// A CAP `Alert` from `sender` that states `hazard` at risk `level` for the whole
/// province, sent a minute ago and expiring in two hours.
pub fn province_bulletin(
    identifier: &str,
    sender: &str,
    hazard: &str,
    level: u8,
    status: &str,
    terms: &BulletinTerms,
) -> String {
    let now = Utc::now();
    let t = |d: chrono::Duration| (now + d).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>{sender}</sender>
  <sent>{sent}</sent>
  <status>{status}</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>vi-VN</language>
    <category>Met</category>
    <event>{hazard}</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <effective>{sent}</effective>
    <expires>{expires}</expires>
    <senderName>canhbao</senderName>
    <headline>Tin {hazard} toàn tỉnh</headline>
    <description>Bản tin {hazard} cấp {level} cho toàn tỉnh.</description>
    <parameter><valueName>{hazard_name}</valueName><value>{hazard}</value></parameter>
    <parameter><valueName>{level_name}</valueName><value>{level}</value></parameter>
    <area>
      <areaDesc>Toàn tỉnh</areaDesc>
      <geocode><valueName>{geocode}</valueName><value>{province}</value></geocode>
    </area>
  </info>
</alert>
"#,
        sent = t(chrono::Duration::minutes(-1)),
        expires = t(chrono::Duration::hours(2)),
        hazard_name = terms.hazard_parameter,
        level_name = terms.level_parameter,
        geocode = terms.province_geocode,
        province = terms.province,
    )
}
