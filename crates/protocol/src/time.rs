//! Times as the people of the province read them.

use chrono::{DateTime, FixedOffset, Utc};

/// Vietnam's time zone (UTC+7, no daylight saving). Times in messages are local.
pub fn vietnam() -> FixedOffset {
    #[allow(clippy::expect_used)]
    FixedOffset::east_opt(7 * 3600).expect("UTC+7 is a valid offset")
}

/// `08 giờ 00 phút ngày 09/10/2026`: the official form of bulletins, used in every text.
pub fn local_time_vi(t: DateTime<Utc>) -> String {
    t.with_timezone(&vietnam())
        .format("%H giờ %M phút ngày %d/%m/%Y")
        .to_string()
}
