//! Pure message rendering: the Vietnamese text of an alert, from an assessment.

use chrono::{DateTime, Utc};
use domain::{AlarmLevel, Station};
pub use protocol::time::{local_time_vi, vietnam};
use rules::Assessment;

/// A number in Vietnamese style with two decimals: `19,40`.
pub fn metres_vi(value: f64) -> String {
    format!("{value:.2}").replace('.', ",")
}

/// The three texts of an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertText {
    pub headline: String,
    pub description: String,
    pub instruction: String,
}

/// Where `value` stands against alarm level `n` at `threshold` m: "đạt mức báo động 3"
/// when it is at the level (to the centimetre), else "trên mức báo động 3 là 0,40 m".
pub fn against_alarm_vi(value: f64, n: u8, threshold: f64) -> String {
    let above = value - threshold;
    if above < 0.005 {
        format!("đạt mức báo động {n}")
    } else {
        format!("trên mức báo động {n} là {} m", metres_vi(above))
    }
}

/// What the text says of an alarm level that is provisional.
fn provisional_alarm_vi(n: u8, threshold: f64) -> String {
    format!(
        " Mức báo động {n} dùng để tính ({} m) là số liệu tạm thời, chưa được xác minh.",
        metres_vi(threshold)
    )
}

/// The text of a flood alarm-crossing pre-warning.
pub fn flood_crossing_text(station: &Station, a: &Assessment) -> AlertText {
    let n = a.alarm_level.number();
    let mut description = format!(
        "Lúc {}, mực nước sông {} tại trạm {} là {} m, {}.",
        local_time_vi(a.observed_at),
        station.river,
        station.name,
        metres_vi(a.value_m),
        against_alarm_vi(a.value_m, n, a.threshold_m.value),
    );
    description.push_str(COMPUTED_NOTE);
    if a.threshold_m.tag.is_provisional() {
        description.push_str(&provisional_alarm_vi(n, a.threshold_m.value));
    }
    let instruction = instruction_vi(a.alarm_level);
    AlertText {
        headline: format!(
            "Cảnh báo lũ: sông {} tại {} {} báo động {n}",
            station.river,
            station.name,
            if a.value_m - a.threshold_m.value < 0.005 {
                "đạt"
            } else {
                "vượt"
            }
        ),
        description,
        instruction: instruction.to_owned(),
    }
}

/// The advice for a flood at alarm level `level`: that of the flood risk level it
/// compares with (BĐ1 as level 1, BĐ2 as 2, BĐ3 as 3).
fn instruction_vi(level: AlarmLevel) -> &'static str {
    let as_risk = domain::RiskLevel::new(level.number()).unwrap_or(domain::RiskLevel::LOW);
    advice_vi(domain::Hazard::Flood, as_risk)
}

const COMPUTED_NOTE: &str = " Đây là cảnh báo sớm do hệ thống tự động tính từ số liệu quan trắc, \
     chưa được cơ quan dự báo khí tượng thủy văn xác nhận.";

/// The text of an alert of the station follower (see `rules::follow`): the river at the
/// station is still above the level (a renewal; `blind` when no fresh reading came since
/// `a.observed_at`), has fallen below `from` but is still above `a`'s level, or has
/// fallen below every level (`all_clear_from`).
pub fn flood_follow_text(
    station: &Station,
    a: &Assessment,
    kind: domain::FollowKind,
    from: Option<AlarmLevel>,
    blind: bool,
) -> AlertText {
    use domain::FollowKind;
    let river = format!("sông {} tại trạm {}", station.river, station.name);
    let at = local_time_vi(a.observed_at);
    let n = a.alarm_level.number();
    match kind {
        FollowKind::Issue | FollowKind::Escalate => flood_crossing_text(station, a),
        FollowKind::Renew | FollowKind::Restate => {
            let mut description = format!(
                "Lúc {at}, mực nước {river} là {} m, vẫn {}.",
                metres_vi(a.value_m),
                against_alarm_vi(a.value_m, n, a.threshold_m.value),
            );
            if blind {
                description.push_str(&format!(
                    " Chưa nhận được số liệu mới của trạm {} sau thời điểm này; cảnh báo được giữ theo số liệu cuối cùng.",
                    station.name
                ));
            }
            description.push_str(COMPUTED_NOTE);
            AlertText {
                headline: format!(
                    "Cảnh báo lũ (tiếp theo): sông {} tại {} vẫn trên báo động {n}",
                    station.river, station.name
                ),
                description,
                instruction: instruction_vi(a.alarm_level).to_owned(),
            }
        }
        FollowKind::DeEscalate => {
            let above = from.map(|f| f.number()).unwrap_or(n + 1);
            let mut description = format!(
                "Lúc {at}, mực nước {river} là {} m, đã xuống dưới mức báo động {above}, còn {}.",
                metres_vi(a.value_m),
                against_alarm_vi(a.value_m, n, a.threshold_m.value),
            );
            description.push_str(COMPUTED_NOTE);
            AlertText {
                headline: format!(
                    "Lũ đang xuống: sông {} tại {} dưới báo động {above}, còn trên báo động {n}",
                    station.river, station.name
                ),
                description,
                instruction: instruction_vi(a.alarm_level).to_owned(),
            }
        }
        FollowKind::AllClear => {
            let lowest = AlarmLevel::ALL
                .into_iter()
                .find_map(|l| station.alarm(l).map(|t| (l, t.value)));
            let below = match lowest {
                Some((l, t)) => format!("mức báo động {} ({} m)", l.number(), metres_vi(t)),
                None => "các mức báo động".to_owned(),
            };
            let mut description = format!(
                "Lúc {at}, mực nước {river} là {} m, đã xuống dưới {below}. Cảnh báo lũ tại trạm {} kết thúc.",
                metres_vi(a.value_m),
                station.name
            );
            description.push_str(COMPUTED_NOTE);
            AlertText {
                headline: format!(
                    "Hết cảnh báo lũ: sông {} tại {} đã xuống dưới báo động",
                    station.river, station.name
                ),
                description,
                instruction:
                    "Nước có thể còn ngập ở vùng trũng thấp; chỉ trở về nơi ở khi chính quyền địa phương \
                    thông báo an toàn."
                        .to_owned(),
            }
        }
    }
}

/// Where a risk level comes from, as its text says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelFrom<'a> {
    /// Computed by canhbao's rules from observations and forecasts.
    Computed { official: bool },
    /// Stated by an official bulletin; `vouched` when its channel or signature vouched
    /// for its sender (`sender` may be empty where it is not known).
    Bulletin {
        id: &'a str,
        sender: &'a str,
        vouched: bool,
        /// When the bulletin was issued (its `effective` time), where it is known.
        issued: Option<DateTime<Utc>>,
    },
}

/// The text of an alert for a risk level: computed by the rules, or stated by a bulletin.
pub fn risk_level_text(
    hazard: domain::Hazard,
    level: domain::RiskLevel,
    from: LevelFrom<'_>,
    at: DateTime<Utc>,
) -> AlertText {
    let name = hazard.name_vi();
    let n = level.get();
    let colour = level.colour_vi();
    let description = match from {
        LevelFrom::Computed { official } => {
            let mut d = format!(
                "Lúc {}, hệ thống cảnh báo tự động xác định cấp độ rủi ro thiên tai do {name} là cấp {n} \
                 (màu {colour}), theo Quyết định 18/2021/QĐ-TTg, từ số liệu quan trắc và dự báo.",
                local_time_vi(at),
            );
            if !official {
                d.push_str(" Cấp độ này là tạm thời, chưa được cơ quan dự báo khí tượng thủy văn xác nhận.");
            }
            d
        }
        LevelFrom::Bulletin {
            id,
            sender,
            vouched,
            issued,
        } => {
            let of = if sender.trim().is_empty() {
                String::new()
            } else {
                format!(" của {sender}")
            };
            let when = issued
                .map(|t| format!(" phát hành lúc {}", local_time_vi(t)))
                .unwrap_or_default();
            let mut d = format!(
                "Theo bản tin {id}{of}{when}, cấp độ rủi ro thiên tai do {name} là cấp {n} (màu {colour}), \
                 theo Quyết định 18/2021/QĐ-TTg."
            );
            if !vouched {
                d.push_str(" Bản tin chưa được xác thực qua kênh tin cậy; cán bộ trực ban đang kiểm tra.");
            }
            d
        }
    };
    AlertText {
        headline: format!("Cảnh báo cấp độ rủi ro thiên tai do {name}: cấp {n}"),
        description,
        instruction: advice_vi(hazard, level).to_owned(),
    }
}

/// What people should do, fitting the hazard and its level.
pub fn advice_vi(hazard: domain::Hazard, level: domain::RiskLevel) -> &'static str {
    use domain::Hazard::*;
    let n = level.get();
    match hazard {
        Flood if n >= 3 => {
            "Người dân vùng ven sông, vùng trũng thấp khẩn trương di chuyển người và tài sản đến nơi an toàn; \
             không qua sông, suối, ngầm tràn khi nước lớn; theo dõi thông báo của chính quyền."
        }
        Flood if n == 2 => {
            "Người dân vùng ven sông, vùng trũng thấp chủ động chuẩn bị di dời người và tài sản; \
             không qua sông, suối khi nước lớn; theo dõi thông báo tiếp theo."
        }
        Flood => {
            "Theo dõi chặt chẽ diễn biến mực nước và thông báo của chính quyền; hạn chế đi lại qua sông, suối."
        }
        FlashFlood if n >= 2 => {
            "Người dân ở ven suối, chân núi, sườn đồi dốc khẩn trương di chuyển đến nơi an toàn; \
             không ở lại trong nhà có nguy cơ sạt lở; không qua suối, ngầm tràn."
        }
        FlashFlood => {
            "Người dân ở ven suối, chân núi, sườn đồi dốc theo dõi dấu hiệu sạt lở (nứt đất, nước suối đục, \
             tiếng động lạ) và sẵn sàng di chuyển đến nơi an toàn."
        }
        HeavyRain => {
            "Đề phòng lũ quét, sạt lở đất và ngập úng cục bộ; hạn chế ra ngoài khi mưa to; \
             không qua suối, ngầm tràn."
        }
        Storm if n >= 4 => {
            "Chằng chống nhà cửa; di chuyển người ở nhà yếu, vùng nguy hiểm đến nơi an toàn; \
             không ra ngoài khi bão, áp thấp nhiệt đới ảnh hưởng."
        }
        Storm => {
            "Chằng chống nhà cửa, thu hoạch sớm hoa màu; theo dõi thông báo và sẵn sàng sơ tán khi có lệnh."
        }
        Cold => {
            "Giữ ấm cơ thể, nhất là người già và trẻ nhỏ; che chắn, giữ ấm cho vật nuôi; \
             không đốt than sưởi trong phòng kín."
        }
        Heat => "Hạn chế ra ngoài trời nắng từ 11 giờ đến 16 giờ; uống đủ nước; đề phòng cháy rừng, cháy nổ.",
        Fog => {
            "Hạn chế đi qua đèo dốc và đường cao tốc khi sương mù dày; bật đèn, giảm tốc độ, giữ khoảng cách."
        }
        Thunderstorm => {
            "Trú ẩn trong nhà kiên cố; không đứng dưới gốc cây, cột điện; không ra đồng, \
             không tắm sông suối khi có dông sét."
        }
        Drought => "Sử dụng nước tiết kiệm; dự trữ nước sinh hoạt; theo dõi thông báo của chính quyền.",
        Earthquake => {
            "Khi rung lắc: nằm xuống, che đầu, bám chắc vào vật cứng; tránh xa cửa kính và vật dễ đổ; \
             sau đó ra nơi trống trải."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{CommuneCode, StationId, Tag, Tagged};

    #[test]
    fn flood_text_is_vietnamese_local_time_and_says_it_is_a_pre_warning() {
        let station = Station {
            id: StationId::new("HUULUNG").unwrap(),
            name: "Hữu Lũng".into(),
            river: "Trung".into(),
            basin: "Thương".into(),
            area_class: None,
            bd1_m: Some(Tagged::new(17.0, Tag::D)),
            bd2_m: Some(Tagged::new(18.0, Tag::M)),
            bd3_m: Some(Tagged::new(19.0, Tag::D)),
            historic_m: None,
            communes: vec![CommuneCode::new("06385").unwrap()],
            communes_provisional: None,
        };
        let t = "2026-10-09T01:00:00Z".parse().unwrap();
        let a = rules::alarm_assessment(&station, domain::AlarmLevel::Bd3, 19.4, t).unwrap();
        let text = flood_crossing_text(&station, &a);
        assert_eq!(
            text.headline,
            "Cảnh báo lũ: sông Trung tại Hữu Lũng vượt báo động 3"
        );
        assert!(
            text.description.starts_with(
                "Lúc 08 giờ 00 phút ngày 09/10/2026, mực nước sông Trung tại trạm Hữu Lũng là 19,40 m, \
                 trên mức báo động 3 là 0,40 m."
            ),
            "{}",
            text.description
        );
        assert!(text.description.contains("cảnh báo sớm"));
        assert!(
            !text.description.contains("tạm thời"),
            "BĐ3 of Hữu Lũng is tagged D"
        );
        assert!(text.instruction.contains("khẩn trương"));

        // Exactly at the level, the text says so instead of "0,00 m above".
        let at = rules::alarm_assessment(&station, domain::AlarmLevel::Bd3, 19.0, t).unwrap();
        let text = flood_crossing_text(&station, &at);
        assert_eq!(
            text.headline,
            "Cảnh báo lũ: sông Trung tại Hữu Lũng đạt báo động 3"
        );
        assert!(
            text.description.contains("là 19,00 m, đạt mức báo động 3."),
            "{}",
            text.description
        );
        assert!(!text.description.contains("0,00 m"));
    }
}
