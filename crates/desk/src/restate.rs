//! Risk-level alerts that follow their level for as long as it holds.
//!
//! An alert the rules or an authoritative bulletin raised is sent when its level is new or
//! higher; while the level holds, it is restated at its class's cadence (an Emergency every
//! 2 hours, others every 3, and in any case before it expires), as the station follower
//! does for a river's alarm level, so that a level that lasts days is never left without a
//! live alert. A bulletin's level is restated only while a live authoritative bulletin
//! states it, and cites that bulletin.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use domain::{AlertId, AlertStatus, CommuneCode};

use crate::{DeskError, Pipeline, compose, new_alert_id};

impl Pipeline {
    /// Runs the rules at `now` on what is stored, in each series, without new data: a
    /// level whose bulletin ended, or that failed to hold for the hold time, comes down
    /// on time, and one that a forecast window or a bulletin's `effective` time brings
    /// starts on time. Returns the transitions and alerts.
    pub async fn evaluate_rules(&self, now: DateTime<Utc>) -> Result<crate::AcceptReport, DeskError> {
        let mut all = crate::AcceptReport::default();
        if !self.has_engine() {
            return Ok(all);
        }
        for status in [AlertStatus::Actual, AlertStatus::Exercise, AlertStatus::Test] {
            let tx = self.store.begin().await?;
            let r = self
                .finish(tx, status.code(), now, crate::AcceptReport::default())
                .await?;
            all.transitions += r.transitions;
            all.alerts.extend(r.alerts);
        }
        Ok(all)
    }

    /// Restates every live risk-level alert that is due at `now` and whose level still
    /// holds somewhere it was sent; returns the restatements sent.
    pub async fn restate_risk_alerts(&self, now: DateTime<Utc>) -> Result<Vec<AlertId>, DeskError> {
        let mut out = Vec::new();
        for status in [AlertStatus::Actual, AlertStatus::Exercise, AlertStatus::Test] {
            // A read first: most minutes, nothing is due, and no write lock is taken.
            let due: Vec<_> = self
                .store
                .live_risk_alerts(status.code(), now)
                .await?
                .into_iter()
                .filter(|a| compose::risk_restate_due(a, self.policy(), now))
                .collect();
            if due.is_empty() {
                continue;
            }
            let levels: BTreeSet<(String, String, i64)> =
                self.store.area_levels(status.code()).await?.into_iter().collect();
            for previous in due {
                let Some(level) = previous.risk_level else {
                    continue;
                };
                let mut tx = self.store.begin().await?;
                if tx.is_replaced(&previous.id).await? {
                    continue;
                }
                // Where the level still holds.
                let mut communes: Vec<CommuneCode> = previous
                    .communes
                    .iter()
                    .filter(|c| levels.contains(&(previous.hazard.clone(), (*c).clone(), level)))
                    .filter_map(|c| CommuneCode::new(c).ok())
                    .collect();
                // A bulletin's level, only while a live authoritative bulletin states it.
                let mut cited = None;
                if previous.origin_kind == "bulletin" {
                    let stating: Vec<_> = tx
                        .live_bulletins(status.code(), now)
                        .await?
                        .into_iter()
                        .filter(|b| b.authoritative && b.hazard == previous.hazard && b.level == Some(level))
                        .collect();
                    communes.retain(|c| stating.iter().any(|b| b.communes.iter().any(|x| x == c.as_str())));
                    cited = stating.into_iter().max_by_key(|b| b.effective);
                }
                if communes.is_empty() {
                    // The level changed or its bulletin ended: the rules' next transition
                    // decides, and the alert expires as it stands.
                    continue;
                }
                let Some(alert) = compose::restate_risk_alert(
                    &previous,
                    communes,
                    cited
                        .as_ref()
                        .map(|b| (b.identifier.as_str(), b.sender.as_str(), b.effective)),
                    new_alert_id(),
                    self.topics(),
                    self.policy(),
                    now,
                ) else {
                    tracing::warn!(alert_id = %previous.id, "stored risk alert not restated: a stored code is not known");
                    continue;
                };
                let alert = alert.map_err(|e| DeskError::Corrupt(previous.id.clone(), e.to_string()))?;
                self.write_alert(&mut tx, &alert, now).await?;
                tx.commit().await?;
                tracing::info!(alert_id = %alert.id, previous = %previous.id, hazard = %previous.hazard, level,
                    communes = alert.communes.len(), "risk-level alert restated while its level holds");
                out.push(alert.id.clone());
            }
        }
        if !out.is_empty() {
            self.wake();
        }
        Ok(out)
    }
}
