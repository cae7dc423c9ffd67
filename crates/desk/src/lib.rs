//! Deciding and issuing: everything between "an input was accepted" and "an alert is
//! signed and in the outbox". Validated readings are stored with their quality flags, the
//! station follower and the rules look at them, and any alert they call for is composed
//! ([`compose`], its Vietnamese text in [`render`]), signed and written with its outbox
//! rows in the same transaction; official bulletins set levels ([`bulletin`]); duty
//! officers' warnings pass the two-person rule ([`warnings`]); updates and cancels chain
//! to what they replace. The alert's public CAP and Atom forms are in [`cap_out`].
//!
//! The desk decides no levels itself (the `rules` crate does), takes in nothing from the
//! outside (`ingest` parses and polls, then calls [`Pipeline`]) and sends nothing (the
//! channel crates do); it wakes the outbox worker after a commit. Entry points:
//! [`Pipeline::accept`], [`Pipeline::accept_bulletin`], [`Pipeline::cancel`],
//! [`follow::run_follower`] and the pure [`compose::follow_alert`].

pub mod bulletin;
pub mod cap_out;
pub mod compose;
mod engine;
pub mod follow;
pub mod historic;
pub mod render;
mod restate;
pub mod warnings;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use domain::{AlertId, AlertStatus, Observation, Parameter, Station, StationId};
use protocol::{Signer, Topics};
use store::{NewDelivery, Store};
use tokio::sync::Notify;

pub use compose::AlertPolicy;

#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error("station {0:?} is not configured")]
    UnknownStation(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("alert for {station} could not be built: {source}")]
    Alert {
        station: StationId,
        source: domain::AlertError,
    },
    #[error("stored alert {0} is not valid: {1}")]
    Corrupt(String, String),
    #[error("{hazard} alert could not be built: {source}")]
    RiskAlert {
        hazard: domain::Hazard,
        source: domain::AlertError,
    },
}

/// Why an alert could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no alert {0:?}")]
    NotFound(String),
    #[error("alert {id} already expired at {expires}")]
    Expired { id: String, expires: DateTime<Utc> },
    #[error("alert {id} is already cancelled by {by}")]
    AlreadyCancelled { id: String, by: String },
    #[error("alert {0} is itself a Cancel")]
    IsCancel(String),
    #[error("alert {id} was replaced by {by}; cancel {by}, the latest of the incident")]
    NotLatest { id: String, by: String },
    #[error("stored alert {0} is not valid: {1}")]
    Corrupt(String, String),
    #[error(transparent)]
    Desk(#[from] DeskError),
}

impl From<store::StoreError> for CancelError {
    fn from(e: store::StoreError) -> Self {
        Self::Desk(DeskError::Store(e))
    }
}

/// Where a batch of observations came from.
#[derive(Debug, Clone)]
pub struct Source {
    /// Who sent it (token label, feed id, `demo`), stored with each reading.
    pub name: String,
    /// Status of alerts the batch raises: `Exercise` for the demo feed.
    pub alert_status: AlertStatus,
}

/// What [`Pipeline::accept`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AcceptReport {
    pub stored: usize,
    pub duplicates: usize,
    pub alerts: Vec<AlertId>,
    /// Transitions of the rules engine that the batch caused (new, escalate, ...).
    pub transitions: usize,
    /// Readings that quality control flagged (stored, but deciding nothing until
    /// confirmed), with why; also earlier readings the batch showed to be spikes.
    pub flagged: Vec<String>,
}

/// The observation-to-alert path, shared by the API and every feed.
#[derive(Clone)]
pub struct Pipeline {
    store: Store,
    stations: Arc<HashMap<StationId, Station>>,
    signer: Arc<Signer>,
    topics: Topics,
    policy: AlertPolicy,
    wake: Arc<Notify>,
    engine: Option<engine::Engine>,
    approval: warnings::ApprovalPolicy,
}

impl Pipeline {
    pub fn new(
        store: Store,
        stations: Vec<Station>,
        signer: Arc<Signer>,
        topics: Topics,
        policy: AlertPolicy,
        wake: Arc<Notify>,
    ) -> Self {
        let stations = stations.into_iter().map(|s| (s.id.clone(), s)).collect();
        Self {
            store,
            stations: Arc::new(stations),
            signer,
            topics,
            policy,
            wake,
            engine: None,
            approval: warnings::ApprovalPolicy::default(),
        }
    }

    /// Adds the rules engine: after each batch, the rules run over the recent readings of
    /// the batch's series and their transitions are recorded (and alerts auto-issued where
    /// a rule says so). `base` carries the stations, communes and province group.
    /// Sets when a second person must approve an officer's warning.
    pub fn with_approval(mut self, approval: warnings::ApprovalPolicy) -> Self {
        self.approval = approval;
        self
    }

    pub fn approval(&self) -> &warnings::ApprovalPolicy {
        &self.approval
    }

    /// Wakes the outbox worker after a commit that queued deliveries.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn with_engine(mut self, rules: rules::RuleSet, base: rules::Inputs) -> Self {
        self.engine = Some(engine::Engine::new(rules, base));
        self
    }

    /// Whether a rules engine runs.
    pub(crate) fn has_engine(&self) -> bool {
        self.engine.is_some()
    }

    /// Loads the engine's levels from storage, so that a restart does not announce them again.
    pub async fn restore_levels(&self) -> Result<usize, DeskError> {
        match &self.engine {
            Some(e) => e.restore(&self.store).await,
            None => Ok(0),
        }
    }

    pub fn station(&self, id: &StationId) -> Option<&Station> {
        self.stations.get(id)
    }

    /// Which of `communes` the rules can give a level to, per hazard, and what is missing
    /// elsewhere; empty without a rules engine.
    pub fn coverage(&self, communes: &[domain::CommuneCode]) -> Vec<rules::coverage::Cover> {
        self.engine
            .as_ref()
            .map(|e| e.coverage(communes))
            .unwrap_or_default()
    }

    /// Every configured station.
    pub fn stations(&self) -> impl Iterator<Item = &Station> {
        self.stations.values()
    }

    /// Stores a batch and raises the alerts it calls for, all in one transaction: on any
    /// error nothing of the batch is kept. Every reading is stored; quality control flags
    /// what it doubts ([`follow`]), and only `ok` readings decide a level. Then the
    /// station follower decides, once per station of the batch, what the station's
    /// incident needs: whatever order the readings came in, what counts is what the
    /// newest fresh one says. Readings already stored are counted as duplicates.
    pub async fn accept(
        &self,
        mut observations: Vec<Observation>,
        source: &Source,
        now: DateTime<Utc>,
    ) -> Result<AcceptReport, DeskError> {
        for o in &observations {
            if !self.stations.contains_key(o.station()) {
                return Err(DeskError::UnknownStation(o.station().to_string()));
            }
        }
        observations.sort_by_key(|o| o.observed_at());
        let mut report = AcceptReport::default();
        let status = source.alert_status.code();
        let mut tx = self.store.begin().await?;
        // The earliest new reading of each series: quality control starts there.
        let mut series: std::collections::BTreeMap<(StationId, &'static str), (Parameter, DateTime<Utc>)> =
            Default::default();
        for o in &observations {
            if !tx.insert_observation(o, &source.name, status, now).await? {
                report.duplicates += 1;
                continue;
            }
            report.stored += 1;
            series
                .entry((o.station().clone(), o.parameter().code()))
                .or_insert((o.parameter(), o.observed_at()));
        }
        for ((station, _), (parameter, from)) in &series {
            self.check_series(
                &mut tx,
                station,
                *parameter,
                source.alert_status,
                *from,
                now,
                &mut report,
            )
            .await?;
        }
        let followed: Vec<&Station> = series
            .iter()
            .filter(|(_, (p, _))| *p == Parameter::WaterLevel)
            .filter_map(|((station, _), _)| self.stations.get(station))
            .collect();
        for station in followed {
            if let Some(f) = self
                .follow_station(&mut tx, station, source.alert_status, now)
                .await?
            {
                report.alerts.push(f.alert);
            }
        }
        self.finish(tx, status, now, report).await
    }
}

impl Pipeline {
    /// Stores forecast values (a newer issue replaces an older one for the same hour) and
    /// runs the rules, in one transaction. The rules read forecasts as the readings after
    /// `now`; past hours of a forecast are kept for operators but never mixed with
    /// observations.
    pub async fn accept_forecasts(
        &self,
        forecasts: &[domain::Forecast],
        source: &Source,
        now: DateTime<Utc>,
    ) -> Result<AcceptReport, DeskError> {
        for f in forecasts {
            if !self.stations.contains_key(f.station()) {
                return Err(DeskError::UnknownStation(f.station().to_string()));
            }
        }
        let status = source.alert_status.code();
        let mut report = AcceptReport::default();
        let mut tx = self.store.begin().await?;
        for f in forecasts {
            if tx.upsert_forecast(f, &source.name, status, now).await? {
                report.stored += 1;
            } else {
                report.duplicates += 1;
            }
        }
        self.finish(tx, status, now, report).await
    }

    /// Stores an official bulletin (or the Update or Cancel that replaces earlier ones) and
    /// runs the rules, all in one transaction. An authoritative bulletin's stated level
    /// overrides the computed one for its hazard and communes, up or down; another only
    /// raises it, as a pre-warning, and never replaces an authoritative one.
    pub async fn accept_bulletin(
        &self,
        change: &bulletin::BulletinChange,
        now: DateTime<Utc>,
    ) -> Result<AcceptReport, DeskError> {
        let status = change.status.code();
        let mut report = AcceptReport::default();
        let mut tx = self.store.begin().await?;
        let replaced = tx
            .replace_bulletins(&change.replaces, change.authoritative, now)
            .await?;
        for b in &change.bulletins {
            let record = store::BulletinRecord {
                identifier: b.id.clone(),
                status: status.to_owned(),
                sender: b.sender.clone(),
                hazard: b.hazard.code().to_owned(),
                level: b.level.map(|l| i64::from(l.get())),
                communes: b.communes.iter().map(ToString::to_string).collect(),
                effective: b.effective,
                expires: b.expires,
                authoritative: change.authoritative,
                emergency: b.emergency,
                grade: b.grade.as_ref().map(domain::CapGrade::code),
            };
            if tx.insert_bulletin(&record, now).await? {
                report.stored += 1;
            } else {
                report.duplicates += 1;
            }
        }
        tracing::info!(bulletin = %change.identifier, stored = report.stored, replaced, status,
            authoritative = change.authoritative, "bulletin accepted");
        self.finish(tx, status, now, report).await
    }

    /// Runs the rules engine in `tx`, commits, applies the engine's new state, and wakes
    /// the outbox worker if anything is to be sent.
    async fn finish(
        &self,
        mut tx: store::Tx<'_>,
        status: &str,
        now: DateTime<Utc>,
        mut report: AcceptReport,
    ) -> Result<AcceptReport, DeskError> {
        let staged = match &self.engine {
            Some(engine) => Some(engine.run(self, &mut tx, status, now, &mut report).await?),
            None => None,
        };
        tx.commit().await?;
        if let (Some(engine), Some(staged)) = (&self.engine, staged) {
            engine.commit(status, staged).await;
        }
        if !report.alerts.is_empty() {
            self.wake.notify_one();
        }
        Ok(report)
    }

    /// Signs an alert and writes it with one outbox row per commune, in `tx`.
    pub(crate) async fn write_alert(
        &self,
        tx: &mut store::Tx<'_>,
        alert: &domain::Alert,
        now: DateTime<Utc>,
    ) -> Result<(), DeskError> {
        let signed = self.signer.sign_alert(alert);
        let deliveries: Vec<NewDelivery> = alert
            .communes
            .iter()
            .map(|c| NewDelivery {
                commune: c.to_string(),
                topic: self.topics.alert(c, &alert.id),
                priority: alert.class.priority(),
            })
            .collect();
        tx.insert_alert(alert, &signed, &deliveries, now).await?;
        Ok(())
    }

    /// Holds `alert`, just written in `tx`, until `until` for a duty officer's
    /// confirmation, and tells every duty officer why and until when.
    pub(crate) async fn hold(
        &self,
        tx: &mut store::Tx<'_>,
        alert: &domain::Alert,
        until: DateTime<Utc>,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DeskError> {
        tx.hold_alert(alert.id.as_str(), until).await?;
        tracing::warn!(alert_id = %alert.id, until = %until, why,
            "a computed emergency on an unverified figure waits for a duty officer's confirmation");
        let text = format!(
            "CHỜ XÁC NHẬN: cảnh báo khẩn cấp \"{}\" chờ cán bộ trực ban xác nhận vì {why}. \
             Nếu không được xác nhận, cảnh báo sẽ tự phát lúc {}. Xác nhận: POST /api/v1/alerts/{}/release; \
             hủy: POST /api/v1/alerts/{}/cancel.",
            alert.headline,
            crate::render::local_time_vi(until),
            alert.id,
            alert.id
        );
        for user in tx.duty_users().await? {
            tx.notify(&user, "alert.held", None, Some(alert.id.as_str()), &text, now)
                .await?;
        }
        Ok(())
    }

    /// A duty officer confirms a held alert: it goes out now. `Ok(false)` if it was not
    /// waiting (never held, already released, or its time came).
    pub async fn release(&self, alert_id: &str, by: &str, now: DateTime<Utc>) -> Result<bool, DeskError> {
        let mut tx = self.store.begin().await?;
        if !tx.release_alert(alert_id, now).await? {
            return Ok(false);
        }
        tx.append_audit(by, "alert.release", alert_id, &serde_json::json!({}), now)
            .await?;
        tx.commit().await?;
        self.wake.notify_one();
        tracing::info!(alert_id, by, "held alert confirmed by a duty officer");
        Ok(true)
    }

    /// Cancels a live alert: a Cancel that references it, to the same communes, signed and
    /// queued in one transaction; what the original had not yet delivered is superseded.
    pub async fn cancel(
        &self,
        original_id: &str,
        reason: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<domain::Alert, CancelError> {
        let a = self
            .store
            .get_alert(original_id)
            .await?
            .ok_or_else(|| CancelError::NotFound(original_id.to_owned()))?;
        if a.msg_type == "Cancel" {
            return Err(CancelError::IsCancel(a.id));
        }
        if a.expires <= now {
            return Err(CancelError::Expired {
                id: a.id,
                expires: a.expires,
            });
        }
        let corrupt = |what: &str| CancelError::Corrupt(a.id.clone(), what.to_owned());
        let original = compose::Cancelled {
            id: AlertId::new(&a.id).map_err(|e| corrupt(&e.to_string()))?,
            references: a
                .references
                .iter()
                .map(|r| AlertId::new(r))
                .collect::<Result<_, _>>()
                .map_err(|e| corrupt(&e.to_string()))?,
            headline: a.headline.clone(),
            hazard: domain::Hazard::from_code(&a.hazard).ok_or_else(|| corrupt("hazard"))?,
            class: domain::MessageClass::from_code(&a.class).ok_or_else(|| corrupt("class"))?,
            communes: a
                .communes
                .iter()
                .map(|c| domain::CommuneCode::new(c))
                .collect::<Result<_, _>>()
                .map_err(|e| corrupt(&e.to_string()))?,
            status: AlertStatus::from_code(&a.status).ok_or_else(|| corrupt("status"))?,
            expires: a.expires,
        };
        let cancel = compose::cancel_alert(&original, reason, by, new_alert_id(), &self.topics, now)
            .map_err(|source| DeskError::RiskAlert {
                hazard: original.hazard,
                source,
            })?;
        // A cancel needs no second person (a false alarm must end at once), but every
        // approver is told, as of an override.
        let approvers = self.store.approvers().await?;
        let mut tx = self.store.begin().await?;
        if let Some(by) = tx.cancelled_by(&a.id).await? {
            return Err(CancelError::AlreadyCancelled { id: a.id, by });
        }
        if let Some(by) = tx.superseded_by(&a.id).await? {
            return Err(CancelError::NotLatest { id: a.id, by });
        }
        self.write_alert(&mut tx, &cancel, now).await?;
        tx.append_audit(
            by,
            "alert.cancel",
            &a.id,
            &serde_json::json!({
                "cancel_id": cancel.id.as_str(),
                "reason": reason,
                "references": cancel.references.iter().map(AlertId::as_str).collect::<Vec<_>>(),
                "communes": cancel.communes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "channels": {"loudspeaker": "queued", "sms": "to every number that had a version"},
            }),
            now,
        )
        .await?;
        let text = format!(
            "CANCELLED: {by} cancelled alert {} ({}): {}",
            a.id,
            a.headline,
            reason.trim()
        );
        for approver in approvers.iter().filter(|x| x.as_str() != by) {
            tx.notify(approver, "cancel", None, Some(cancel.id.as_str()), &text, now)
                .await?;
        }
        tx.commit().await?;
        self.wake.notify_one();
        tracing::info!(alert_id = %a.id, cancel_id = %cancel.id, by, "alert cancelled");
        Ok(cancel)
    }

    /// What `draft` would be if `by` issued it now: nothing is written or sent.
    pub fn draft_alert(
        &self,
        draft: &compose::Draft,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<domain::Alert, compose::DraftError> {
        compose::officer_alert(draft, by, new_alert_id(), vec![], &self.topics, &self.policy, now)
    }

    /// The commune topics an alert is published on.
    pub fn alert_topics(&self, alert: &domain::Alert) -> Vec<String> {
        alert
            .communes
            .iter()
            .map(|c| self.topics.alert(c, &alert.id))
            .collect()
    }

    pub(crate) fn topics(&self) -> &Topics {
        &self.topics
    }

    pub(crate) fn policy(&self) -> &AlertPolicy {
        &self.policy
    }
}

pub(crate) fn new_alert_id() -> AlertId {
    // A v4 UUID is 36 characters of hex digits and '-', always a valid id.
    #[allow(clippy::expect_used)]
    AlertId::new(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid alert id")
}

/// The default age past which a reading is stored but raises no alert.
pub const DEFAULT_MAX_READING_AGE: Duration = Duration::hours(3);
