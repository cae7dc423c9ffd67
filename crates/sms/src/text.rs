//! SMS text: the encoding, the text as it will be sent, and the number of parts. Pure.
//!
//! Vietnamese with its diacritics needs UCS-2: 70 UTF-16 units in a single SMS, 67 per
//! part of a concatenated one. Without diacritics (stripped here, including đ → d) it fits
//! the GSM-7 default alphabet: 160 septets, 153 per part, where the extension characters
//! (`^{}\[~]|€` and form feed) take two septets and are never split across parts.

/// How a message is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Ucs2,
    Gsm7,
}

impl Encoding {
    pub fn label(self) -> &'static str {
        match self {
            Self::Ucs2 => "UCS-2",
            Self::Gsm7 => "GSM-7",
        }
    }
}

/// Which encoding to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsPolicy {
    /// Full diacritics, always.
    Ucs2,
    /// Diacritics stripped, always.
    Gsm7,
    /// GSM-7 when the text needs nothing else; UCS-2 while it fits in this many parts;
    /// GSM-7 with diacritics stripped beyond.
    Auto { max_ucs2_segments: u32 },
}

impl SmsPolicy {
    /// `ucs2`, `gsm7` or `auto` (with `max_ucs2_segments` for auto).
    pub fn from_code(code: &str, max_ucs2_segments: u32) -> Option<Self> {
        match code {
            "ucs2" => Some(Self::Ucs2),
            "gsm7" => Some(Self::Gsm7),
            "auto" => Some(Self::Auto { max_ucs2_segments }),
            _ => None,
        }
    }
}

/// A message ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsText {
    pub text: String,
    pub encoding: Encoding,
    pub segments: u32,
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{000C}";

const VI_FROM: &str = "àáãảạăằắẵẳặâầấẫẩậèéẽẻẹêềếễểệìíĩỉịòóõỏọôồốỗổộơờớỡởợùúũủụưừứữửựỳýỹỷỵÀÁÃẢẠĂẰẮẴẲẶÂẦẤẪẨẬÈÉẼẺẸÊỀẾỄỂỆÌÍĨỈỊÒÓÕỎỌÔỒỐỖỔỘƠỜỚỠỞỢÙÚŨỦỤƯỪỨỮỬỰỲÝỸỶỴđĐ";
const VI_TO: &str = "aaaaaaaaaaaaaaaaaeeeeeeeeeeeiiiiiooooooooooooooooouuuuuuuuuuuyyyyyAAAAAAAAAAAAAAAAAEEEEEEEEEEEIIIIIOOOOOOOOOOOOOOOOOUUUUUUUUUUUYYYYYdD";

/// Septets a character takes in GSM-7, or `None` if it is not in the alphabet.
fn gsm7_septets(c: char) -> Option<u32> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Whether `text` can be sent in GSM-7 as it is.
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm7_septets(c).is_some())
}

/// The text in the GSM-7 alphabet: Vietnamese letters lose their marks (đ → d), common
/// typography becomes ASCII, and anything else becomes `?`.
pub fn to_gsm7(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if gsm7_septets(c).is_some() && !VI_FROM.contains(c) {
            out.push(c);
            continue;
        }
        if let Some(i) = VI_FROM.chars().position(|v| v == c) {
            out.extend(VI_TO.chars().nth(i));
            continue;
        }
        match c {
            '‘' | '’' | '‚' | '′' => out.push('\''),
            '“' | '”' | '„' | '″' => out.push('"'),
            '–' | '—' | '−' => out.push('-'),
            '…' => out.push_str("..."),
            '\t' | '\u{00A0}' => out.push(' '),
            '°' => out.push_str(" do"),
            _ => out.push('?'),
        }
    }
    out
}

/// Parts of a GSM-7 text: 160 septets alone, else 153 per part, never splitting an
/// extension character's two septets.
pub fn gsm7_segments(text: &str) -> u32 {
    let septets: Vec<u32> = text.chars().map(|c| gsm7_septets(c).unwrap_or(1)).collect();
    if septets.iter().sum::<u32>() <= 160 {
        return 1;
    }
    pack(&septets, 153)
}

/// Parts of a UCS-2 text: 70 UTF-16 units alone, else 67 per part, never splitting a
/// surrogate pair.
pub fn ucs2_segments(text: &str) -> u32 {
    let units: Vec<u32> = text.chars().map(|c| c.len_utf16() as u32).collect();
    if units.iter().sum::<u32>() <= 70 {
        return 1;
    }
    pack(&units, 67)
}

/// Greedy packing of indivisible sizes into parts of `capacity`.
fn pack(sizes: &[u32], capacity: u32) -> u32 {
    let mut parts = 1;
    let mut used = 0;
    for &s in sizes {
        if used + s > capacity {
            parts += 1;
            used = 0;
        }
        used += s;
    }
    parts
}

/// The message as it will be sent under `policy`.
pub fn render(text: &str, policy: SmsPolicy) -> SmsText {
    let gsm7 = || {
        let t = to_gsm7(text);
        SmsText {
            segments: gsm7_segments(&t),
            text: t,
            encoding: Encoding::Gsm7,
        }
    };
    let ucs2 = || SmsText {
        text: text.to_owned(),
        encoding: Encoding::Ucs2,
        segments: ucs2_segments(text),
    };
    match policy {
        SmsPolicy::Ucs2 => ucs2(),
        SmsPolicy::Gsm7 => gsm7(),
        SmsPolicy::Auto { max_ucs2_segments } => {
            if is_gsm7(text) {
                return gsm7();
            }
            let u = ucs2();
            if u.segments <= max_ucs2_segments {
                u
            } else {
                gsm7()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_loses_its_marks_for_gsm7_and_keeps_them_for_ucs2() {
        let t = "Cảnh báo lũ cấp 3 tại xã Hữu Lũng. Đề nghị sơ tán!";
        assert_eq!(to_gsm7(t), "Canh bao lu cap 3 tai xa Huu Lung. De nghi so tan!");
        assert!(!is_gsm7(t));
        assert!(is_gsm7(&to_gsm7(t)));
        assert_eq!(render(t, SmsPolicy::Ucs2).encoding, Encoding::Ucs2);
        assert_eq!(render(t, SmsPolicy::Ucs2).text, t);
        assert_eq!(to_gsm7("“Lũ” – 25°C…"), "\"Lu\" - 25 doC...");
        assert_eq!(to_gsm7("🌊"), "?");
    }

    #[test]
    fn segment_limits_are_the_standard_ones() {
        let a = |n: usize| "a".repeat(n);
        assert_eq!(gsm7_segments(&a(160)), 1);
        assert_eq!(gsm7_segments(&a(161)), 2);
        assert_eq!(gsm7_segments(&a(306)), 2);
        assert_eq!(gsm7_segments(&a(307)), 3);
        // An extension character takes two septets: 159 + '€' overflows a single SMS.
        assert_eq!(gsm7_segments(&format!("{}€", a(159))), 2);
        // ...and is not split: 152 + '€' needs a second part.
        assert_eq!(gsm7_segments(&format!("{}€{}", a(152), a(10))), 2);
        let u = |n: usize| "ữ".repeat(n);
        assert_eq!(ucs2_segments(&u(70)), 1);
        assert_eq!(ucs2_segments(&u(71)), 2);
        assert_eq!(ucs2_segments(&u(134)), 2);
        assert_eq!(ucs2_segments(&u(135)), 3);
        // A character outside the BMP is a surrogate pair, never split.
        assert_eq!(ucs2_segments(&format!("{}🌊", u(68))), 1);
        assert_eq!(ucs2_segments(&format!("{}🌊", u(69))), 2);
        assert_eq!(ucs2_segments(&format!("{}🌊{}", u(66), u(66))), 3);
    }

    #[test]
    fn auto_prefers_gsm7_when_nothing_is_lost_and_ucs2_up_to_its_limit() {
        let auto = SmsPolicy::Auto { max_ucs2_segments: 2 };
        assert_eq!(render("Lu tai Huu Lung", auto).encoding, Encoding::Gsm7);
        let short = "Cảnh báo lũ cấp 3 tại xã Hữu Lũng";
        assert_eq!(render(short, auto).encoding, Encoding::Ucs2);
        let long = short.repeat(6);
        let r = render(&long, auto);
        assert_eq!((r.encoding, r.segments), (Encoding::Gsm7, 2), "{}", r.text);
    }

    /// Property: for random texts over both alphabets, the parts always hold the text
    /// (each part within its limit) and no fewer parts would do.
    #[test]
    fn segment_counts_hold_for_random_texts() {
        let mut seed: u64 = 0x5eed_5eed;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let gsm: Vec<char> = GSM7_BASIC.chars().chain(GSM7_EXTENSION.chars()).collect();
        let wide: Vec<char> = VI_FROM.chars().chain(['🌊', 'a', ' ']).collect();
        for _ in 0..500 {
            let len = next() % 700;
            let g: String = (0..len).map(|_| gsm[next() % gsm.len()]).collect();
            let septets: u32 = g.chars().map(|c| gsm7_septets(c).unwrap_or(1)).sum();
            let n = gsm7_segments(&g);
            if septets <= 160 {
                assert_eq!(n, 1);
            } else {
                assert!(n * 153 >= septets, "{n} parts cannot hold {septets} septets");
                assert!(
                    (n - 1) * 153 < septets + 2 * (n - 1),
                    "{n} parts are too many for {septets}"
                );
            }
            let w: String = (0..len / 2).map(|_| wide[next() % wide.len()]).collect();
            let units = w.encode_utf16().count() as u32;
            let n = ucs2_segments(&w);
            if units <= 70 {
                assert_eq!(n, 1);
            } else {
                assert!(n * 67 >= units);
                assert!((n - 1) * 67 < units + (n - 1));
            }
            // Stripping always yields GSM-7 text of the same number of characters or more.
            let stripped = to_gsm7(&w);
            assert!(is_gsm7(&stripped));
        }
    }
}

/// SMS wording per hazard and risk level, with placeholders: `{prefix}` (`[DIỄN TẬP] ` or
/// `[THỬ NGHIỆM] ` for non-real alerts), `{sender}`, `{kind}` (`CẢNH BÁO`, `CẬP NHẬT`,
/// `HỦY BỎ`), `{hazard}`, `{level}` (` cấp N` or empty), `{headline}`, `{instruction}`,
/// `{expires}`. The most specific template wins: hazard and level, then hazard, then the
/// default. A Cancel has its own wording (`cancel`, which may use `{description}`: what
/// was cancelled and why), since nothing is left to do and no validity to state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsTemplates {
    pub sender: String,
    pub default: String,
    pub cancel: String,
    pub by_hazard: std::collections::BTreeMap<(domain::Hazard, Option<u8>), String>,
}

impl SmsTemplates {
    /// canhbao's built-in wording: short, with the official level and what to do.
    pub fn builtin(sender: &str) -> Self {
        Self {
            sender: sender.to_owned(),
            default:
                "{prefix}[{sender}] {kind} {hazard}{level}: {headline}. {instruction} Hiệu lực đến {expires}."
                    .to_owned(),
            cancel: "{prefix}[{sender}] {kind} {hazard}: {description}".to_owned(),
            by_hazard: std::collections::BTreeMap::new(),
        }
    }

    /// The SMS text of `alert`.
    pub fn render(&self, alert: &domain::Alert) -> String {
        self.render_view(&SmsAlert {
            status: alert.status,
            msg_type: alert.msg_type,
            hazard: alert.hazard,
            level: alert.risk_level.map(domain::RiskLevel::get),
            headline: &alert.headline,
            description: &alert.description,
            instruction: &alert.instruction,
            expires: alert.expires,
        })
    }

    /// The SMS text of a stored alert; `None` if a stored code is not one canhbao knows.
    pub fn render_record(&self, alert: &store::AlertRecord) -> Option<String> {
        Some(self.render_view(&SmsAlert {
            status: domain::AlertStatus::from_code(&alert.status)?,
            msg_type: domain::MsgType::from_code(&alert.msg_type)?,
            hazard: domain::Hazard::from_code(&alert.hazard)?,
            level: alert.risk_level.and_then(|l| u8::try_from(l).ok()),
            headline: &alert.headline,
            description: &alert.description,
            instruction: &alert.instruction,
            expires: alert.expires,
        }))
    }

    fn render_view(&self, alert: &SmsAlert<'_>) -> String {
        let level = alert.level;
        let template = if alert.msg_type == domain::MsgType::Cancel {
            &self.cancel
        } else {
            self.by_hazard
                .get(&(alert.hazard, level))
                .or_else(|| self.by_hazard.get(&(alert.hazard, None)))
                .unwrap_or(&self.default)
        };
        let prefix = match alert.status {
            domain::AlertStatus::Actual => "",
            domain::AlertStatus::Exercise => "[DIỄN TẬP] ",
            domain::AlertStatus::Test => "[THỬ NGHIỆM] ",
        };
        let kind = match alert.msg_type {
            domain::MsgType::Alert => "CẢNH BÁO",
            domain::MsgType::Update => "CẬP NHẬT",
            domain::MsgType::Cancel => "HỦY BỎ",
        };
        let headline = sms_headline(alert.headline, alert.hazard);
        let template = if headline.is_empty() {
            template.replace(": {headline}.", ".").replace(": {headline}", "")
        } else {
            template.clone()
        };
        // A headline that states the level itself ("hạ xuống cấp 2") says it once.
        let level_text = level
            .map(|l| format!(" cấp {l}"))
            .filter(|l| !headline.contains(l.trim_start()))
            .unwrap_or_default();
        let text = template
            .replace("{prefix}", prefix)
            .replace("{sender}", &self.sender)
            .replace("{kind}", kind)
            .replace("{hazard}", &alert.hazard.name_vi().to_uppercase())
            .replace("{level}", &level_text)
            .replace("{headline}", headline.trim_end_matches('.'))
            .replace("{instruction}", alert.instruction.trim())
            .replace("{description}", alert.description.trim())
            .replace("{expires}", &protocol::time::local_time_vi(alert.expires));
        // An empty placeholder leaves double spaces behind.
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// The headline as an SMS carries it after `{kind} {hazard}{level}`: without what that
/// already says ("[DIỄN TẬP]", "HỦY BỎ:", "Cảnh báo lũ:", "Cảnh báo cấp độ rủi ro thiên
/// tai do lũ: cấp 3"), so that no text says its prefix twice. Empty when nothing else is
/// left.
pub fn sms_headline(headline: &str, hazard: domain::Hazard) -> &str {
    let name = hazard.name_vi();
    let prefixes = [
        "[diễn tập]".to_owned(),
        "[thử nghiệm]".to_owned(),
        "hủy bỏ:".to_owned(),
        "cập nhật:".to_owned(),
        format!("cảnh báo {name} (tiếp theo):"),
        format!("cảnh báo {name}:"),
        format!("cảnh báo cấp độ rủi ro thiên tai do {name}:"),
        format!("cảnh báo cấp độ rủi ro thiên tai do {name} (tiếp theo):"),
    ];
    let mut h = headline.trim();
    'strip: loop {
        for p in &prefixes {
            if let Some(rest) = strip_prefix_ci(h, p) {
                h = rest.trim_start();
                continue 'strip;
            }
        }
        break;
    }
    // "cấp N" alone repeats the level the SMS already states.
    if let Some(rest) = strip_prefix_ci(h, "cấp ")
        && rest.len() == 1
        && rest.chars().all(|c| c.is_ascii_digit())
    {
        return "";
    }
    h
}

/// `text` without `prefix` (lower case), compared without regard to case.
fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let mut chars = text.char_indices();
    for want in prefix.chars() {
        let (_, c) = chars.next()?;
        if !c.to_lowercase().eq(std::iter::once(want)) {
            return None;
        }
    }
    Some(chars.next().map_or("", |(i, _)| &text[i..]))
}

/// The fields of an alert that its SMS text uses.
struct SmsAlert<'a> {
    status: domain::AlertStatus,
    msg_type: domain::MsgType,
    hazard: domain::Hazard,
    level: Option<u8>,
    headline: &'a str,
    description: &'a str,
    instruction: &'a str,
    expires: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod template_tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};
    use domain::{AlertId, AlertOrigin, AlertSpec, AlertStatus, CommuneCode, Hazard, MessageClass, MsgType};

    fn alert(status: AlertStatus, level: Option<u8>) -> domain::Alert {
        let now: DateTime<Utc> = "2026-10-09T02:00:00Z".parse().unwrap();
        domain::Alert::new(AlertSpec {
            id: AlertId::new("a-1").unwrap(),
            province: domain::ProvinceCode::new("20").unwrap(),
            msg_type: MsgType::Alert,
            status,
            references: vec![],
            origin: AlertOrigin::Computed {
                rule_id: "r@1".into(),
            },
            hazard: Hazard::Flood,
            risk_level: level.and_then(domain::RiskLevel::new),
            alarm_level: None,
            station: None,
            class: MessageClass::Emergency,
            communes: vec![CommuneCode::new("06385").unwrap()],
            sent: now,
            effective: now,
            expires: now + Duration::hours(6),
            headline: "Lũ trên báo động 3 tại Hữu Lũng".into(),
            description: "d".into(),
            instruction: "Di chuyển ngay đến nơi an toàn.".into(),
            repeat: domain::Repeat {
                times: 3,
                interval_s: 60,
            },
            provisional: vec![],
            english: None,
            follow: None,
        })
        .unwrap()
    }

    #[test]
    fn a_lowered_level_is_said_once() {
        let t = SmsTemplates::builtin("PCTT Lạng Sơn");
        let a = alert(AlertStatus::Actual, Some(2));
        let view = SmsAlert {
            status: a.status,
            msg_type: MsgType::Update,
            hazard: a.hazard,
            level: Some(2),
            headline: "Cảnh báo cấp độ rủi ro thiên tai do lũ: hạ xuống cấp 2",
            description: &a.description,
            instruction: &a.instruction,
            expires: a.expires,
        };
        assert_eq!(
            t.render_view(&view),
            "[PCTT Lạng Sơn] CẬP NHẬT LŨ: hạ xuống cấp 2. Di chuyển ngay đến nơi an toàn. Hiệu lực đến 15 giờ 00 phút ngày 09/10/2026."
        );
    }

    #[test]
    fn the_most_specific_template_wins_and_exercises_say_so() {
        let mut t = SmsTemplates::builtin("PCTT Lạng Sơn");
        let text = t.render(&alert(AlertStatus::Actual, Some(3)));
        assert_eq!(
            text,
            "[PCTT Lạng Sơn] CẢNH BÁO LŨ cấp 3: Lũ trên báo động 3 tại Hữu Lũng. Di chuyển ngay đến nơi an toàn. Hiệu lực đến 15 giờ 00 phút ngày 09/10/2026."
        );
        assert_eq!(render(&text, SmsPolicy::Ucs2).segments, 3);
        assert!(
            t.render(&alert(AlertStatus::Exercise, None))
                .starts_with("[DIỄN TẬP] [PCTT Lạng Sơn] CẢNH BÁO LŨ: ")
        );
        t.by_hazard
            .insert((Hazard::Flood, None), "{kind} {hazard}{level}".into());
        t.by_hazard
            .insert((Hazard::Flood, Some(3)), "LŨ CẤP 3 - SƠ TÁN NGAY".into());
        assert_eq!(
            t.render(&alert(AlertStatus::Actual, Some(3))),
            "LŨ CẤP 3 - SƠ TÁN NGAY"
        );
        assert_eq!(
            t.render(&alert(AlertStatus::Actual, Some(2))),
            "CẢNH BÁO LŨ cấp 2"
        );
    }
}
