//! The rules engine inside the pipeline: after each batch, evaluate the recent readings
//! of the batch's series, step the per-area state machine, record every transition, and
//! issue an alert where a rule's action says `auto-issue`. Everything else is a
//! pre-warning for a duty officer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use domain::{AlertStatus, CommuneCode, Hazard, RiskLevel, StationId};
use rules::eval::{Assessment, Inputs, LevelSource};
use rules::series::Param;
use rules::state::{Change, Tracker, Transition};
use rules::{Action, RuleSet, evaluate, evaluate_held};
use serde_json::json;
use store::{NewAssessment, Store, Tx};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{AcceptReport, DeskError, Pipeline, compose, new_alert_id};

/// How far back readings are loaded for evaluation (the longest rule looks 11 days back).
const HISTORY: Duration = Duration::days(15);

/// How far ahead forecasts are loaded (the longest forward window is a few days).
const FORECAST_AHEAD: Duration = Duration::days(5);

const STATUSES: [AlertStatus; 3] = [AlertStatus::Actual, AlertStatus::Exercise, AlertStatus::Test];

#[derive(Clone)]
pub(crate) struct Engine {
    rules: Arc<RuleSet>,
    base: Arc<Inputs>,
    hold: Duration,
    /// One state machine per CAP status series.
    trackers: Arc<Mutex<HashMap<String, Tracker>>>,
}

/// A stepped state machine, applied only once the batch's transaction commits.
pub(crate) struct Staged {
    guard: OwnedMutexGuard<HashMap<String, Tracker>>,
    tracker: Tracker,
}

fn action_code(a: Action) -> &'static str {
    match a {
        Action::AutoIssue => "auto-issue",
        Action::PreWarning => "pre-warning",
    }
}

fn detail(a: Option<&Assessment>) -> String {
    match a {
        None => "{}".into(),
        Some(a) => json!({
            "computed_level": a.computed_level.map(RiskLevel::get),
            "inputs": a.inputs.iter().map(|i| json!({"name": i.name, "value": i.value})).collect::<Vec<_>>(),
            "provisional_reasons": a.provisional_reasons,
            "diagnostics": a.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
        .to_string(),
    }
}

impl Engine {
    /// The rules' coverage of `communes` (see [`rules::coverage`]).
    pub(crate) fn coverage(&self, communes: &[CommuneCode]) -> Vec<rules::coverage::Cover> {
        rules::coverage::coverage(&self.rules, &self.base, communes)
    }

    pub(crate) fn new(rules: RuleSet, base: Inputs) -> Self {
        let hold = Duration::minutes(rules.limits.hold_minutes.unwrap_or(180));
        Self {
            rules: Arc::new(rules),
            base: Arc::new(base),
            hold,
            trackers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub(crate) async fn restore(&self, store: &Store) -> Result<usize, DeskError> {
        let mut trackers = self.trackers.lock().await;
        let mut n = 0;
        for status in STATUSES {
            let tracker = trackers
                .entry(status.code().to_owned())
                .or_insert_with(|| Tracker::new(self.hold));
            for (hazard, commune, level) in store.area_levels(status.code()).await? {
                let (Some(h), Ok(c), Some(l)) = (
                    Hazard::from_code(&hazard),
                    CommuneCode::new(&commune),
                    u8::try_from(level).ok().and_then(RiskLevel::new),
                ) else {
                    tracing::warn!(hazard, commune, level, "stored area level ignored: not valid");
                    continue;
                };
                tracker.restore(h, c, l);
                n += 1;
            }
        }
        Ok(n)
    }

    pub(crate) async fn run(
        &self,
        pipeline: &Pipeline,
        tx: &mut Tx<'_>,
        status: &str,
        now: DateTime<Utc>,
        report: &mut AcceptReport,
    ) -> Result<Staged, DeskError> {
        let guard = self.trackers.clone().lock_owned().await;
        let mut tracker = guard
            .get(status)
            .cloned()
            .unwrap_or_else(|| Tracker::new(self.hold));
        // Another instance may have moved a level since this one last stepped: start from
        // what is stored (writers take turns, so this is the latest), never announcing a
        // level twice.
        let stored: Vec<(Hazard, CommuneCode, RiskLevel)> = tx
            .area_levels(status)
            .await?
            .into_iter()
            .filter_map(|(h, c, l)| {
                Some((
                    Hazard::from_code(&h)?,
                    CommuneCode::new(&c).ok()?,
                    u8::try_from(l).ok().and_then(RiskLevel::new)?,
                ))
            })
            .collect();
        tracker.sync(&stored);
        let mut inputs = (*self.base).clone();
        crate::historic::apply(&mut inputs.stations, &tx.historic_levels().await?);
        for r in tx.readings_since(status, now - HISTORY).await? {
            if let (Ok(station), Some(param)) = (StationId::new(&r.station), Param::from_code(&r.parameter)) {
                inputs.readings.push(&station, param, r.at, r.value);
            }
        }
        for r in tx.forecasts_between(status, now, now + FORECAST_AHEAD).await? {
            if let (Ok(station), Some(param)) = (StationId::new(&r.station), Param::from_code(&r.parameter)) {
                inputs.readings.push(&station, param, r.at, r.value);
            }
        }
        for b in tx.live_bulletins(status, now).await? {
            let (Some(hazard), Ok(communes)) = (
                Hazard::from_code(&b.hazard),
                b.communes
                    .iter()
                    .map(|c| CommuneCode::new(c))
                    .collect::<Result<Vec<_>, _>>(),
            ) else {
                tracing::warn!(bulletin = %b.identifier, "stored bulletin ignored: not valid");
                continue;
            };
            inputs.bulletins.push(rules::eval::Bulletin {
                id: b.identifier,
                sender: b.sender,
                hazard,
                level: b
                    .level
                    .and_then(|l| u8::try_from(l).ok())
                    .and_then(RiskLevel::new),
                communes,
                effective: b.effective,
                expires: b.expires,
                authoritative: b.authoritative,
                emergency: b.emergency,
                grade: b.grade.as_deref().and_then(domain::CapGrade::from_code),
            });
        }
        let current = evaluate(&self.rules, &inputs, now);
        let held = if tracker.is_empty() {
            Vec::new()
        } else {
            evaluate_held(&self.rules, &inputs, now)
        };
        let changes = tracker.step(now, &current, &held);
        let mut alerts = self.auto_issue(pipeline, tx, status, now, &changes).await?;
        alerts.extend(self.follow_down(pipeline, tx, status, now, &changes).await?);
        for id in alerts.values() {
            if !report.alerts.contains(id) {
                report.alerts.push(id.clone());
            }
        }
        for c in &changes {
            let a = c.assessment.as_ref();
            let alert_id = alerts
                .get(&(c.hazard, c.commune.clone()))
                .map(|id| id.to_string());
            let action = a.map(|a| a.action).unwrap_or(Action::PreWarning);
            let source = match a.map(|a| &a.source) {
                Some(LevelSource::Bulletin {
                    id,
                    authoritative: true,
                    ..
                }) => format!("bulletin:{id}"),
                Some(LevelSource::Bulletin { id, .. }) => format!("bulletin-unvouched:{id}"),
                _ => "computed".to_owned(),
            };
            let rules = a.map(|a| a.rules.clone()).unwrap_or_default();
            tx.record_assessment(&NewAssessment {
                status,
                at: now,
                hazard: c.hazard.code(),
                commune: c.commune.as_str(),
                transition: c.transition.name(),
                level: c.transition.level().map(RiskLevel::get),
                action: action_code(action),
                official: a.is_some_and(|a| a.official),
                source: &source,
                rules: &rules,
                detail: &detail(a),
                alert_id: alert_id.as_deref(),
            })
            .await?;
            tracing::info!(hazard = c.hazard.code(), commune = %c.commune, transition = c.transition.name(),
                level = c.transition.level().map(RiskLevel::get), action = action_code(action), status,
                "risk level transition");
        }
        report.transitions += changes.len();
        Ok(Staged { guard, tracker })
    }

    /// Announces a risk level that came down or ended where a live alert of the rules or
    /// of a bulletin announced it: an Update at the lower level ("hạ xuống cấp N"), or the
    /// end ("Hết cảnh báo", CAP AllClear). Only when every commune of that alert came down
    /// the same way: otherwise its restatement narrows it to where its level holds (see
    /// `restate`), or it expires. Returns the alert id per hazard and commune.
    async fn follow_down(
        &self,
        pipeline: &Pipeline,
        tx: &mut Tx<'_>,
        status: &str,
        now: DateTime<Utc>,
        changes: &[Change],
    ) -> Result<BTreeMap<(Hazard, CommuneCode), domain::AlertId>, DeskError> {
        let mut out = BTreeMap::new();
        let down: Vec<(&Change, RiskLevel, Option<RiskLevel>)> = changes
            .iter()
            .filter_map(|c| match c.transition {
                Transition::DeEscalate { from, to } => Some((c, from, Some(to))),
                Transition::End { from } => Some((c, from, None)),
                _ => None,
            })
            .collect();
        if down.is_empty() {
            return Ok(out);
        }
        let code = AlertStatus::from_code(status).unwrap_or(AlertStatus::Actual);
        for previous in tx.live_risk_alerts(status, now).await? {
            let (Some(hazard), Some(level)) = (Hazard::from_code(&previous.hazard), previous.risk_level)
            else {
                continue;
            };
            let mine: Vec<&(&Change, RiskLevel, Option<RiskLevel>)> = down
                .iter()
                .filter(|(c, from, _)| {
                    c.hazard == hazard
                        && i64::from(from.get()) == level
                        && previous.communes.iter().any(|x| x == c.commune.as_str())
                })
                .collect();
            let Some(&&(first, _, to)) = mine.first() else {
                continue;
            };
            if mine.len() != previous.communes.len() || mine.iter().any(|d| d.2 != to) {
                continue;
            }
            let Some(references) = compose::incident_references(&previous) else {
                continue;
            };
            let alert = match (to, first.assessment.as_ref()) {
                (Some(to), Some(a)) => compose::risk_update(
                    a,
                    to,
                    mine.iter().map(|d| d.0.commune.clone()).collect(),
                    references,
                    new_alert_id(),
                    pipeline.topics(),
                    pipeline.policy(),
                    code,
                    now,
                ),
                (Some(_), None) => continue,
                (None, _) => {
                    match compose::risk_end_alert(
                        &previous,
                        new_alert_id(),
                        pipeline.topics(),
                        pipeline.policy(),
                        now,
                    ) {
                        Some(a) => a,
                        None => continue,
                    }
                }
            }
            .map_err(|source| DeskError::RiskAlert { hazard, source })?;
            pipeline.write_alert(tx, &alert, now).await?;
            tracing::info!(alert_id = %alert.id, previous = %previous.id, hazard = hazard.code(),
                to = to.map(RiskLevel::get), "risk level came down: announced");
            for d in mine {
                out.insert((hazard, d.0.commune.clone()), alert.id.clone());
            }
        }
        Ok(out)
    }

    /// Issues one alert per hazard, level and rule set for the new and escalated levels
    /// whose rules say `auto-issue`. Returns the alert id per hazard and commune.
    async fn auto_issue(
        &self,
        pipeline: &Pipeline,
        tx: &mut Tx<'_>,
        status: &str,
        now: DateTime<Utc>,
        changes: &[Change],
    ) -> Result<BTreeMap<(Hazard, CommuneCode), domain::AlertId>, DeskError> {
        type Group<'a> = (Vec<CommuneCode>, &'a Assessment);
        let mut groups: BTreeMap<(Hazard, RiskLevel, Vec<String>), Group> = BTreeMap::new();
        for c in changes {
            let (Transition::New { level } | Transition::Escalate { to: level, .. }) = c.transition else {
                continue;
            };
            let Some(a) = c.assessment.as_ref().filter(|a| a.action == Action::AutoIssue) else {
                continue;
            };
            groups
                .entry((c.hazard, level, a.rules.clone()))
                .or_insert_with(|| (Vec::new(), a))
                .0
                .push(c.commune.clone());
        }
        let status = AlertStatus::from_code(status).unwrap_or(AlertStatus::Actual);
        let mut out = BTreeMap::new();
        for ((hazard, level, _), (communes, a)) in groups {
            let alert = compose::risk_alert(
                a,
                level,
                communes.clone(),
                new_alert_id(),
                pipeline.topics(),
                pipeline.policy(),
                status,
                now,
            )
            .map_err(|source| DeskError::RiskAlert { hazard, source })?;
            pipeline.write_alert(tx, &alert, now).await?;
            let unverified = !a.official && matches!(a.source, rules::eval::LevelSource::Computed);
            if let Some(wait) = compose::confirmation_wait(&alert, unverified, pipeline.policy()) {
                let why = format!(
                    "cấp độ được tính từ số liệu hoặc quy tắc tạm thời ({})",
                    a.provisional_reasons.join("; ")
                );
                pipeline.hold(tx, &alert, now + wait, &why, now).await?;
            }
            tracing::info!(alert_id = %alert.id, hazard = hazard.code(), level = level.get(),
                communes = communes.len(), "alert auto-issued by the rules");
            for c in communes {
                out.insert((hazard, c), alert.id.clone());
            }
        }
        Ok(out)
    }

    pub(crate) async fn commit(&self, status: &str, staged: Staged) {
        let Staged { mut guard, tracker } = staged;
        guard.insert(status.to_owned(), tracker);
    }
}
