//! The commune's announcement windows: when its loudspeakers carry the programme that the
//! commune operator schedules (Circular 39/2020). A Normal-class message waits for the
//! next window; Priority and Emergency messages never wait. Without windows, the
//! receiver plays everything as it comes.
//!
//! Pure: no clock (time is an argument). Windows are in the province's local time
//! (UTC+7).

use chrono::{DateTime, Duration, NaiveTime, Utc};

/// Daily windows, each `start` (included) to `end` (excluded), start before end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnouncementWindows(Vec<(NaiveTime, NaiveTime)>);

/// Why a window was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("announcement window {0:?} must be HH:MM-HH:MM in local time (UTC+7)")]
    Format(String),
    #[error("announcement window {0:?} must end after it starts (a window over midnight is two windows)")]
    Empty(String),
}

impl AnnouncementWindows {
    /// Windows from `HH:MM-HH:MM` strings.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self, WindowError> {
        let mut out = Vec::new();
        for spec in specs {
            let spec = spec.as_ref();
            let (a, b) = spec
                .split_once('-')
                .ok_or_else(|| WindowError::Format(spec.to_owned()))?;
            let time = |t: &str| {
                NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| WindowError::Format(spec.to_owned()))
            };
            let (start, end) = (time(a)?, time(b)?);
            if end <= start {
                return Err(WindowError::Empty(spec.to_owned()));
            }
            out.push((start, end));
        }
        out.sort();
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// When a Normal message arriving at `now` may play: `None` if it may play now (no
    /// windows, or inside one), otherwise the start of the next window.
    pub fn next_opening(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.0.is_empty() {
            return None;
        }
        let local = now.with_timezone(&protocol::time::vietnam());
        let time = local.time();
        if self.0.iter().any(|(s, e)| *s <= time && time < *e) {
            return None;
        }
        let today = local.date_naive();
        let start = match self.0.iter().map(|(s, _)| *s).find(|s| *s > time) {
            Some(s) => today.and_time(s),
            None => (today + Duration::days(1)).and_time(self.0[0].0),
        };
        start
            .and_local_timezone(protocol::time::vietnam())
            .single()
            .map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UTC time from a local (UTC+7) "YYYY-MM-DD HH:MM".
    fn local(s: &str) -> DateTime<Utc> {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .unwrap()
            .and_local_timezone(protocol::time::vietnam())
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_normal_message_waits_for_the_next_window_and_plays_inside_one() {
        let w = AnnouncementWindows::parse(&["17:00-17:30", "06:00-06:30"]).unwrap();
        for (now, want) in [
            ("2026-10-09 06:10", None),
            ("2026-10-09 06:00", None),
            ("2026-10-09 06:30", Some("2026-10-09 17:00")),
            ("2026-10-09 12:00", Some("2026-10-09 17:00")),
            ("2026-10-09 05:59", Some("2026-10-09 06:00")),
            ("2026-10-09 17:29", None),
            ("2026-10-09 21:00", Some("2026-10-10 06:00")),
            ("2026-12-31 23:59", Some("2027-01-01 06:00")),
        ] {
            assert_eq!(w.next_opening(local(now)), want.map(local), "at {now}");
        }
        assert_eq!(
            AnnouncementWindows::default().next_opening(local("2026-10-09 03:00")),
            None
        );
    }

    #[test]
    fn windows_are_checked() {
        assert_eq!(
            AnnouncementWindows::parse(&["6:00"]),
            Err(WindowError::Format("6:00".into()))
        );
        assert_eq!(
            AnnouncementWindows::parse(&["22:00-01:00"]),
            Err(WindowError::Empty("22:00-01:00".into()))
        );
        assert!(AnnouncementWindows::parse(&["25:00-26:00"]).is_err());
        assert!(AnnouncementWindows::parse(&["06:00-06:30"]).is_ok());
    }
}
