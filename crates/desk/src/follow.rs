//! Quality control and the station follower inside the pipeline.
//!
//! After a batch is stored, each of its series is checked again from just before its
//! earliest new reading ([`rules::quality::classify`]): new readings get their flags, and
//! a reading that waited for the next one is confirmed or found to be a spike. Every
//! change of flag is an event for duty officers, and the first flagged reading after good
//! ones is also a notification. Then, for every station of the batch, the follower
//! ([`rules::follow::decide`]) says what the station's incident needs, and that alert is
//! written in the same transaction. [`run_follower`] asks the same question of every
//! station once a minute, so that an alert is renewed, brought down or reissued even when
//! no reading arrives (and after a restart).

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use domain::{AlarmLevel, AlertId, AlertStatus, Parameter, Station, StationId};
use rules::follow::{Decision, Head, Live, decide};
use rules::quality::{Flag, Point, Quality, classify};
use store::{IncidentHead, Tx};
use tokio_util::sync::CancellationToken;

use crate::{AcceptReport, DeskError, Pipeline, compose, new_alert_id};

/// The hazard the follower follows at water-level stations.
const FLOOD: &str = "flood";

/// How far back the follower looks at most (an officer's Cancel older than this no
/// longer holds it back).
const LOOK_BACK: Duration = Duration::days(15);

/// What the follower did for one station.
#[derive(Debug, Clone, PartialEq)]
pub struct Followed {
    pub station: StationId,
    pub decision: Decision,
    pub alert: AlertId,
}

/// The incident head as the follower sees it at `now`.
pub fn head_view(head: Option<&IncidentHead>, now: DateTime<Utc>) -> Head {
    let Some(h) = head else {
        return Head::None;
    };
    let level = h
        .alarm_level
        .and_then(|l| u8::try_from(l).ok())
        .and_then(AlarmLevel::from_number);
    let incident_max = h
        .incident_max
        .and_then(|l| u8::try_from(l).ok())
        .and_then(AlarmLevel::from_number);
    if h.msg_type == "Cancel" {
        return Head::Cancelled {
            at: h.sent,
            level: incident_max,
        };
    }
    if h.expires <= now {
        return Head::None;
    }
    Head::Live(Live {
        level,
        incident_max,
        expires: h.expires,
        sent: h.sent,
        officer: h.origin_kind == "officer",
    })
}

/// Since when the follower needs `ok` readings for `head`.
fn readings_since(pipeline: &Pipeline, head: &Head, now: DateTime<Utc>) -> DateTime<Utc> {
    let p = pipeline.policy();
    let span = p.max_reading_age.max(p.hold).max(p.blind_renew);
    let since = now - span;
    match head {
        Head::Cancelled { at, .. } => since.min(*at).max(now - LOOK_BACK),
        _ => since,
    }
}

impl Pipeline {
    /// Checks the series of `parameter` at `station` from `from` (the earliest reading the
    /// batch added) on, writing each changed flag with an event, and notifying duty
    /// officers of the first flagged reading after good ones.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn check_series(
        &self,
        tx: &mut Tx<'_>,
        station: &StationId,
        parameter: Parameter,
        status: AlertStatus,
        from: DateTime<Utc>,
        now: DateTime<Utc>,
        report: &mut AcceptReport,
    ) -> Result<(), DeskError> {
        let qc = self.policy().qc(station, parameter, status);
        // Context before the batch: enough for the persistence check, and the reading that
        // a first new one may confirm.
        let context = qc.stuck_after.unwrap_or(Duration::zero()) + Duration::hours(1);
        let start = from - context;
        let stored = tx
            .series_since(station.as_str(), parameter.code(), status.code(), start)
            .await?;
        let earlier = tx
            .has_reading_before(station.as_str(), parameter.code(), status.code(), start)
            .await?;
        let settled_len = stored.iter().take_while(|r| r.at < from).count();
        let settled: Vec<Flag> = stored[..settled_len]
            .iter()
            .map(|r| Flag {
                quality: Quality::from_code(&r.quality).unwrap_or(Quality::Ok),
                reason: r.reason.clone(),
            })
            .collect();
        let points: Vec<Point> = stored
            .iter()
            .map(|r| Point {
                at: r.at,
                value: r.value,
            })
            .collect();
        let flags = classify(&points, &settled, earlier, &qc);
        let mut previous_ok = true;
        for (r, flag) in stored.iter().zip(&flags) {
            let was = Quality::from_code(&r.quality).unwrap_or(Quality::Ok);
            let changed = was != flag.quality || (flag.quality != Quality::Ok && r.reason != flag.reason);
            if changed {
                tx.set_quality(r.id, flag.quality.code(), flag.reason.as_deref())
                    .await?;
                tx.record_quality_event(
                    status.code(),
                    station.as_str(),
                    parameter.code(),
                    r.at,
                    r.value,
                    flag.quality.code(),
                    flag.reason.as_deref(),
                    now,
                )
                .await?;
                if flag.quality != Quality::Ok {
                    tracing::warn!(station = %station, parameter = parameter.code(), observed_at = %r.at,
                        value = r.value, quality = flag.quality.code(), reason = flag.reason.as_deref().unwrap_or(""),
                        "reading flagged by quality control");
                    report.flagged.push(format!(
                        "{station} {} {}: {}: {}",
                        parameter.code(),
                        r.at.to_rfc3339(),
                        flag.quality.code(),
                        flag.reason.as_deref().unwrap_or("")
                    ));
                    // Officers hear of the first flagged reading after good ones, and of
                    // every spike found.
                    if status == AlertStatus::Actual && (previous_ok || flag.quality == Quality::SuspectSpike)
                    {
                        let text = format!(
                            "SỐ LIỆU NGHI VẤN: {station} {} {:.2} lúc {}: {} ({})",
                            parameter.code(),
                            r.value,
                            crate::render::local_time_vi(r.at),
                            flag.quality.code(),
                            flag.reason.as_deref().unwrap_or("")
                        );
                        for user in tx.duty_users().await? {
                            tx.notify(&user, "reading.flagged", None, None, &text, now)
                                .await?;
                        }
                    }
                } else {
                    tracing::info!(station = %station, parameter = parameter.code(), observed_at = %r.at,
                        value = r.value, was = was.code(), reason = flag.reason.as_deref().unwrap_or(""),
                        "flagged reading confirmed");
                }
            }
            previous_ok = flag.quality == Quality::Ok;
        }
        if parameter == Parameter::WaterLevel && status == AlertStatus::Actual {
            let highest = stored
                .iter()
                .zip(&flags)
                .filter(|(r, f)| f.quality == Quality::Ok && r.at >= from)
                .map(|(r, _)| (r.at, r.value))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((at, value)) = highest {
                self.notice_historic(tx, station, value, at, now).await?;
            }
        }
        Ok(())
    }

    /// Decides, in `tx`, what `station`'s incident needs at `now` and writes that alert.
    pub(crate) async fn follow_station(
        &self,
        tx: &mut Tx<'_>,
        station: &Station,
        status: AlertStatus,
        now: DateTime<Utc>,
    ) -> Result<Option<Followed>, DeskError> {
        let head = tx
            .incident_head(station.id.as_str(), FLOOD, status.code())
            .await?;
        let view = head_view(head.as_ref(), now);
        let since = readings_since(self, &view, now);
        let ok: Vec<Point> = tx
            .ok_readings(
                station.id.as_str(),
                Parameter::WaterLevel.code(),
                status.code(),
                since,
            )
            .await?
            .into_iter()
            .map(|(at, value)| Point { at, value })
            .collect();
        let decision = decide(station, &ok, &view, now, &self.policy().follow());
        if decision == Decision::Nothing {
            return Ok(None);
        }
        // A new incident after nothing live (or a Cancel); otherwise an Update of the
        // incident, referencing every earlier message of it.
        let references = match (&view, head) {
            (Head::Live(_), Some(h)) => h
                .references
                .iter()
                .chain([&h.id])
                .map(|r| AlertId::new(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| DeskError::Corrupt(h.id.clone(), e.to_string()))?,
            _ => Vec::new(),
        };
        let id = new_alert_id();
        let Some(alert) = compose::follow_alert(
            station,
            decision,
            id,
            references,
            self.topics(),
            self.policy(),
            status,
            now,
        ) else {
            return Ok(None);
        };
        let alert = alert.map_err(|source| DeskError::Alert {
            station: station.id.clone(),
            source,
        })?;
        self.write_alert(tx, &alert, now).await?;
        // An Emergency on an alarm level that is not verified waits for an officer.
        let unverified = decision
            .level()
            .and_then(|l| station.alarm(l))
            .is_some_and(|t| t.tag.is_provisional());
        if let Some(wait) = compose::confirmation_wait(&alert, unverified, self.policy()) {
            let why = format!(
                "mức báo động {} của trạm {} là số liệu chưa được xác minh",
                decision.level().map(|l| l.number()).unwrap_or_default(),
                station.name
            );
            self.hold(tx, &alert, now + wait, &why, now).await?;
        }
        tracing::info!(alert_id = %alert.id, station = %station.id, decision = decision.name(),
            level = decision.level().map(|l| l.short_vi()), msg_type = alert.msg_type.code(),
            communes = alert.communes.len(), status = alert.status.code(), provisional = alert.is_provisional(),
            "alert issued by the station follower");
        Ok(Some(Followed {
            station: station.id.clone(),
            decision,
            alert: alert.id.clone(),
        }))
    }

    /// Asks the follower about every station with alarm levels, in each series, at `now`:
    /// a station with something to send gets a transaction of its own. Returns what was
    /// sent.
    pub async fn follow_all(&self, now: DateTime<Utc>) -> Result<Vec<Followed>, DeskError> {
        let mut out = Vec::new();
        let mut stations: Vec<&Station> = self
            .stations
            .values()
            .filter(|s| AlarmLevel::ALL.into_iter().any(|l| s.alarm(l).is_some()))
            .collect();
        stations.sort_by(|a, b| a.id.cmp(&b.id));
        for status in [AlertStatus::Actual, AlertStatus::Exercise, AlertStatus::Test] {
            for station in &stations {
                // A read first: most minutes, nothing is due, and no write lock is taken.
                let head = self
                    .store
                    .incident_head(station.id.as_str(), FLOOD, status.code())
                    .await?;
                let view = head_view(head.as_ref(), now);
                let ok: Vec<Point> = self
                    .store
                    .ok_readings(
                        station.id.as_str(),
                        Parameter::WaterLevel.code(),
                        status.code(),
                        readings_since(self, &view, now),
                    )
                    .await?
                    .into_iter()
                    .map(|(at, value)| Point { at, value })
                    .collect();
                if decide(station, &ok, &view, now, &self.policy().follow()) == Decision::Nothing {
                    continue;
                }
                let mut tx = self.store.begin().await?;
                let done = self.follow_station(&mut tx, station, status, now).await?;
                tx.commit().await?;
                if let Some(f) = done {
                    out.push(f);
                }
            }
        }
        if !out.is_empty() {
            self.wake();
        }
        Ok(out)
    }
}

/// Runs the follower over every station every `interval` until `shutdown`, and once at
/// once: after a restart, a state that no live alert covers is covered without waiting
/// for the next reading. Store errors are logged and tried again next time.
pub async fn run_follower(pipeline: Pipeline, interval: StdDuration, shutdown: CancellationToken) {
    loop {
        match pipeline.follow_all(Utc::now()).await {
            Ok(done) => {
                for f in done {
                    tracing::info!(station = %f.station, alert_id = %f.alert, decision = f.decision.name(),
                        "station follower: alert sent between readings");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "station follower failed; a renewal or all-clear may be late");
            }
        }
        if let Err(e) = pipeline.evaluate_rules(Utc::now()).await {
            tracing::error!(error = %e, "rules evaluation on the timer failed; a level may change late");
        }
        if let Err(e) = pipeline.restate_risk_alerts(Utc::now()).await {
            tracing::error!(error = %e, "risk-level restatement failed; a live level may go unannounced");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
