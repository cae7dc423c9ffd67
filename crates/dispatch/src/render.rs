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

/// The text of a flood alarm-crossing pre-warning.
pub fn flood_crossing_text(station: &Station, a: &Assessment) -> AlertText {
    let n = a.alarm_level.number();
    let above = a.value_m - a.threshold_m.value;
    let mut description = format!(
        "Lúc {}, mực nước sông {} tại trạm {} là {} m, trên mức báo động {} ({} m) {} m.",
        local_time_vi(a.observed_at),
        station.river,
        station.name,
        metres_vi(a.value_m),
        n,
        metres_vi(a.threshold_m.value),
        metres_vi(above),
    );
    description.push_str(COMPUTED_NOTE);
    if a.threshold_m.tag.is_provisional() {
        description.push_str(" Mức báo động dùng để tính là số liệu tạm thời, chưa được xác minh.");
    }
    let instruction = instruction_vi(a.alarm_level);
    AlertText {
        headline: format!(
            "Cảnh báo lũ: sông {} tại {} vượt báo động {}",
            station.river, station.name, n
        ),
        description,
        instruction: instruction.to_owned(),
    }
}

fn instruction_vi(level: AlarmLevel) -> &'static str {
    match level {
        AlarmLevel::Bd3 => {
            "Người dân vùng ven sông, vùng trũng thấp khẩn trương di chuyển người và tài sản đến nơi an toàn; \
             tuyệt đối không qua sông, suối, ngầm tràn khi nước lớn; theo dõi thông báo của chính quyền."
        }
        AlarmLevel::Bd2 => {
            "Người dân vùng ven sông, vùng trũng thấp chủ động chuẩn bị di dời người và tài sản; \
             không qua sông, suối khi nước lớn; theo dõi thông báo tiếp theo."
        }
        AlarmLevel::Bd1 => {
            "Theo dõi chặt chẽ diễn biến mực nước và thông báo của chính quyền; hạn chế đi lại qua sông, suối."
        }
    }
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
        FollowKind::Renew => {
            let mut description = format!(
                "Lúc {at}, mực nước {river} là {} m, vẫn trên mức báo động {n} ({} m) {} m.",
                metres_vi(a.value_m),
                metres_vi(a.threshold_m.value),
                metres_vi(a.value_m - a.threshold_m.value),
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
                "Lúc {at}, mực nước {river} là {} m, đã xuống dưới mức báo động {above}, còn trên mức báo động {n} ({} m) {} m.",
                metres_vi(a.value_m),
                metres_vi(a.threshold_m.value),
                metres_vi(a.value_m - a.threshold_m.value),
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

/// The text of an alert that the rules engine issues automatically for a risk level.
pub fn risk_level_text(
    hazard: domain::Hazard,
    level: domain::RiskLevel,
    official: bool,
    at: DateTime<Utc>,
) -> AlertText {
    let name = hazard.name_vi();
    let n = level.get();
    let mut description = format!(
        "Lúc {}, hệ thống cảnh báo tự động xác định cấp độ rủi ro thiên tai do {name} là cấp {n} \
         (màu {}), theo Quyết định 18/2021/QĐ-TTg, từ số liệu quan trắc và dự báo.",
        local_time_vi(at),
        level.colour_vi()
    );
    if !official {
        description
            .push_str(" Cấp độ này là tạm thời, chưa được cơ quan dự báo khí tượng thủy văn xác nhận.");
    }
    let instruction = if n >= 3 {
        "Người dân theo dõi chặt chẽ thông báo của chính quyền, chuẩn bị sẵn sàng sơ tán khi có lệnh."
    } else {
        "Theo dõi các bản tin tiếp theo và chủ động phòng tránh."
    };
    AlertText {
        headline: format!("Cảnh báo cấp độ rủi ro thiên tai do {name}: cấp {n}"),
        description,
        instruction: instruction.to_owned(),
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
                "Lúc 08 giờ 00 ngày 09/10/2026, mực nước sông Trung tại trạm Hữu Lũng là 19,40 m, \
                 trên mức báo động 3 (19,00 m) 0,40 m."
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
    }
}
