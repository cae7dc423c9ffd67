//! Observations and alerts. An alert and its deliveries are written in one transaction.

use chrono::{DateTime, Duration, Utc};
use domain::{Alert, AlertOrigin, Observation};
use sqlx::Row;

/// How long after an Update or Cancel the retained messages of the alerts it replaces are
/// cleared: long enough for the new one to be published first.
pub const CLEAR_AFTER_SUPERSEDE: Duration = Duration::seconds(60);

use crate::{Result, Store, StoreError, Tx, from_ms, json_list, ms, parse_json_list};

pub use domain::SignedPayload;

/// One outbox row to create with an alert.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub commune: String,
    pub topic: String,
    /// Higher is claimed first.
    pub priority: i64,
}

/// An alert as stored, with its fields in storage form.
#[derive(Debug, Clone)]
pub struct AlertRecord {
    pub id: String,
    pub province: String,
    pub msg_type: String,
    pub status: String,
    pub references: Vec<String>,
    pub origin_kind: String,
    pub origin_detail: String,
    pub hazard: String,
    pub risk_level: Option<i64>,
    pub alarm_level: Option<i64>,
    pub station: Option<String>,
    pub class: String,
    pub communes: Vec<String>,
    pub sent: DateTime<Utc>,
    pub effective: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    pub headline: String,
    pub description: String,
    pub instruction: String,
    pub repeat_times: i64,
    pub repeat_interval_s: i64,
    pub provisional: Vec<String>,
    pub signed: SignedPayload,
    /// The newest message that references this one: (`Update` or `Cancel`, its id).
    pub replaced_by: Option<(String, String)>,
    /// The English text, when an officer gave one.
    pub english: Option<domain::Translation>,
    /// Whether it may go by SMS (the fallback to officials).
    pub sms: bool,
    /// For an alert of the station follower: why it was sent (`issue`, `escalate`,
    /// `renew`, `de-escalate`, `all-clear`).
    pub follow: Option<String>,
    /// For a bulletin's level: how its sender graded it (CAP urgency, severity, certainty).
    pub grade: Option<domain::CapGrade>,
    /// A computed Emergency on an unverified figure waits for a duty officer until then
    /// (or until released sooner, when this is the release time).
    pub held_until: Option<DateTime<Utc>>,
}

/// Which alerts to list: every field narrows; `before` is the cursor (the last row of
/// the previous page, as `created_ms` and id).
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub status: Option<String>,
    pub hazard: Option<String>,
    pub level: Option<i64>,
    pub commune: Option<String>,
    pub msg_type: Option<String>,
    /// Sent at or after.
    pub since: Option<DateTime<Utc>>,
    /// Sent before.
    pub until: Option<DateTime<Utc>>,
    /// The cursor: `created_ms` and rowid of the last row of the previous page.
    pub before: Option<(i64, i64)>,
}

const ALERT_COLUMNS: &str = "id, province, msg_type, status, refs, origin_kind, origin_detail, hazard, \
     risk_level, alarm_level, station, class, communes, sent_ms, effective_ms, expires_ms, headline, \
     description, instruction, repeat_times, repeat_interval_s, provisional, payload, key_id, sig, created_ms, text_en, sms, follow, grade, held_until_ms, \
     (SELECT b.msg_type || ' ' || b.id FROM alert_refs r JOIN alerts b ON b.id = r.alert_id \
      WHERE r.refers_to = alerts.id ORDER BY b.sent_ms DESC, b.id LIMIT 1) AS replaced_by";

impl AlertRecord {
    /// The record that storing `alert`, signed as `signed`, writes (before anything
    /// replaces it): for rendering an alert as it will be served.
    pub fn of(alert: &Alert, signed: SignedPayload) -> Self {
        let (origin_kind, origin_detail) = origin_columns(&alert.origin);
        Self {
            id: alert.id.to_string(),
            province: alert.province.to_string(),
            msg_type: alert.msg_type.code().to_owned(),
            status: alert.status.code().to_owned(),
            references: alert.references.iter().map(ToString::to_string).collect(),
            origin_kind: origin_kind.to_owned(),
            origin_detail: origin_detail.to_owned(),
            hazard: alert.hazard.code().to_owned(),
            risk_level: alert.risk_level.map(|l| i64::from(l.get())),
            alarm_level: alert.alarm_level.map(|l| i64::from(l.number())),
            station: alert.station.as_ref().map(ToString::to_string),
            class: alert.class.code().to_owned(),
            communes: alert.communes.iter().map(ToString::to_string).collect(),
            sent: alert.sent,
            effective: alert.effective,
            expires: alert.expires,
            headline: alert.headline.clone(),
            description: alert.description.clone(),
            instruction: alert.instruction.clone(),
            repeat_times: i64::from(alert.repeat.times),
            repeat_interval_s: i64::from(alert.repeat.interval_s),
            provisional: alert.provisional.clone(),
            signed,
            replaced_by: None,
            english: alert.english.clone(),
            sms: true,
            follow: alert.follow.map(|f| f.code().to_owned()),
            grade: match &alert.origin {
                AlertOrigin::Bulletin { grade, .. } => grade.clone(),
                _ => None,
            },
            held_until: None,
        }
    }
}

/// The `origin_kind` and `origin_detail` columns of an origin.
fn origin_columns(origin: &AlertOrigin) -> (&'static str, &str) {
    match origin {
        AlertOrigin::Computed { rule_id } => ("computed", rule_id.as_str()),
        AlertOrigin::Officer { user } => ("officer", user.as_str()),
        AlertOrigin::Bulletin { source, .. } => ("bulletin", source.as_str()),
    }
}

fn alert_from_row(row: &sqlx::any::AnyRow) -> Result<AlertRecord> {
    Ok(AlertRecord {
        id: row.try_get("id")?,
        province: row.try_get("province")?,
        msg_type: row.try_get("msg_type")?,
        status: row.try_get("status")?,
        references: parse_json_list("refs", row.try_get("refs")?)?,
        origin_kind: row.try_get("origin_kind")?,
        origin_detail: row.try_get("origin_detail")?,
        hazard: row.try_get("hazard")?,
        risk_level: row.try_get("risk_level")?,
        alarm_level: row.try_get("alarm_level")?,
        station: row.try_get("station")?,
        class: row.try_get("class")?,
        communes: parse_json_list("communes", row.try_get("communes")?)?,
        sent: from_ms(row.try_get("sent_ms")?)?,
        effective: from_ms(row.try_get("effective_ms")?)?,
        expires: from_ms(row.try_get("expires_ms")?)?,
        headline: row.try_get("headline")?,
        description: row.try_get("description")?,
        instruction: row.try_get("instruction")?,
        repeat_times: row.try_get("repeat_times")?,
        repeat_interval_s: row.try_get("repeat_interval_s")?,
        provisional: parse_json_list("provisional", row.try_get("provisional")?)?,
        signed: SignedPayload {
            payload: row.try_get("payload")?,
            key_id: row.try_get("key_id")?,
            sig: row.try_get("sig")?,
        },
        replaced_by: row
            .try_get::<Option<String>, _>("replaced_by")?
            .and_then(|r| r.split_once(' ').map(|(t, id)| (t.to_owned(), id.to_owned()))),
        english: row
            .try_get::<Option<String>, _>("text_en")?
            .map(|t| {
                let v: serde_json::Value = serde_json::from_str(&t)
                    .map_err(|e| StoreError::Corrupt(format!("alerts.text_en: {e}")))?;
                let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
                Ok::<_, StoreError>(domain::Translation {
                    headline: field("headline"),
                    description: field("description"),
                    instruction: field("instruction"),
                })
            })
            .transpose()?,
        held_until: row
            .try_get::<Option<i64>, _>("held_until_ms")?
            .map(from_ms)
            .transpose()?,
        sms: row.try_get::<i64, _>("sms")? != 0,
        follow: row.try_get("follow")?,
        grade: row
            .try_get::<Option<String>, _>("grade")?
            .map(|g| {
                domain::CapGrade::from_code(&g)
                    .ok_or_else(|| StoreError::Corrupt(format!("alerts.grade: {g}")))
            })
            .transpose()?,
    })
}

impl Tx<'_> {
    /// Stores an observation in the series of its CAP `status` (`Actual`, `Exercise` or
    /// `Test`: they never mix). Returns `false`, and changes nothing, if that series
    /// already has a reading of the parameter at that time.
    pub async fn insert_observation(
        &mut self,
        observation: &Observation,
        source: &str,
        status: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO observations (station, parameter, value, observed_ms, received_ms, source, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(observation.station().as_str())
        .bind(observation.parameter().code())
        .bind(observation.value())
        .bind(ms(observation.observed_at()))
        .bind(ms(now))
        .bind(source)
        .bind(status)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Keeps an alert off SMS (its officer chose loudspeakers only).
    pub async fn alert_without_sms(&mut self, alert_id: &str) -> Result<()> {
        sqlx::query("UPDATE alerts SET sms = 0 WHERE id = $1")
            .bind(alert_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Writes an alert, its signed payload and one outbox row per delivery.
    /// Writes an alert, its outbox rows, one tracked delivery per registered receiver of
    /// its communes, and the clearing of its retained messages at expiry; an Update or
    /// Cancel also supersedes what the alerts it references had not delivered.
    pub async fn insert_alert(
        &mut self,
        alert: &Alert,
        signed: &SignedPayload,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if self.backend == crate::Backend::Postgres {
            // Sent when this transaction commits: idle workers of every instance wake.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(crate::OUTBOX_CHANNEL)
                .execute(&mut *self.tx)
                .await?;
        }
        // A request with an Idempotency-Key that sends this alert says so on its claim,
        // in this transaction: a retry after its instance died answers with this alert.
        if let Ok(claim) = crate::idempotency::CLAIM.try_with(Clone::clone) {
            crate::Store::idempotency_sent(self, &claim, alert.id.as_str()).await?;
        }
        let (origin_kind, origin_detail) = origin_columns(&alert.origin);
        sqlx::query(
            "INSERT INTO alerts (id, province, msg_type, status, refs, origin_kind, origin_detail, hazard,
                risk_level, alarm_level, station, class, communes, sent_ms, effective_ms, expires_ms,
                headline, description, instruction, repeat_times, repeat_interval_s, provisional,
                payload, key_id, sig, created_ms, text_en, follow, grade)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29)",
        )
        .bind(alert.id.as_str())
        .bind(alert.province.as_str())
        .bind(alert.msg_type.code())
        .bind(alert.status.code())
        .bind(json_list(&alert.references))
        .bind(origin_kind)
        .bind(origin_detail)
        .bind(alert.hazard.code())
        .bind(alert.risk_level.map(|l| i64::from(l.get())))
        .bind(alert.alarm_level.map(|l| i64::from(l.number())))
        .bind(alert.station.as_ref().map(|s| s.as_str()))
        .bind(alert.class.code())
        .bind(json_list(&alert.communes))
        .bind(ms(alert.sent))
        .bind(ms(alert.effective))
        .bind(ms(alert.expires))
        .bind(&alert.headline)
        .bind(&alert.description)
        .bind(&alert.instruction)
        .bind(i64::from(alert.repeat.times))
        .bind(i64::from(alert.repeat.interval_s))
        .bind(json_list(&alert.provisional))
        .bind(&signed.payload)
        .bind(&signed.key_id)
        .bind(&signed.sig)
        .bind(ms(now))
        .bind(alert.english.as_ref().map(|e| {
            serde_json::json!({"headline": e.headline, "description": e.description, "instruction": e.instruction})
                .to_string()
        }))
        .bind(alert.follow.map(|f| f.code()))
        .bind(match &alert.origin {
            AlertOrigin::Bulletin { grade: Some(g), .. } => Some(g.code()),
            _ => None,
        })
        .execute(&mut *self.tx)
        .await?;
        for d in deliveries {
            sqlx::query(
                "INSERT INTO deliveries (alert_id, commune, topic, priority, state, next_attempt_ms)
                 VALUES ($1, $2, $3, $4, 'queued', $5)",
            )
            .bind(alert.id.as_str())
            .bind(&d.commune)
            .bind(&d.topic)
            .bind(d.priority)
            .bind(ms(now))
            .execute(&mut *self.tx)
            .await?;
        }
        let topics: Vec<(String, String)> = deliveries
            .iter()
            .map(|d| (d.commune.clone(), d.topic.clone()))
            .collect();
        self.track_receivers(alert, &topics, CLEAR_AFTER_SUPERSEDE, now)
            .await?;
        Ok(())
    }
}

/// See [`Store::live_risk_alerts`].
async fn live_risk_alerts<'e, E>(ex: E, status: &str, now: DateTime<Utc>) -> Result<Vec<AlertRecord>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alerts
         WHERE status = $1 AND expires_ms > $2 AND risk_level IS NOT NULL AND follow IS NULL
           AND msg_type <> 'Cancel' AND origin_kind IN ('computed', 'bulletin')
           AND (held_until_ms IS NULL OR held_until_ms <= $2)
           AND NOT EXISTS (SELECT 1 FROM alert_refs x WHERE x.refers_to = alerts.id)
         ORDER BY sent_ms, id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(status)
        .bind(ms(now))
        .fetch_all(ex)
        .await?;
    rows.iter().map(alert_from_row).collect()
}

impl Tx<'_> {
    /// [`Store::live_risk_alerts`], in this transaction.
    pub async fn live_risk_alerts(&mut self, status: &str, now: DateTime<Utc>) -> Result<Vec<AlertRecord>> {
        live_risk_alerts(&mut *self.tx, status, now).await
    }

    /// Whether a later message (an Update or a Cancel) references `alert_id`.
    pub async fn is_replaced(&mut self, alert_id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM alert_refs WHERE refers_to = $1 LIMIT 1")
            .bind(alert_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.is_some())
    }

    /// Holds `alert_id`, just written, until `until`: its queued deliveries wait for then.
    pub async fn hold_alert(&mut self, alert_id: &str, until: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE alerts SET held_until_ms = $1 WHERE id = $2")
            .bind(ms(until))
            .bind(alert_id)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query("UPDATE deliveries SET next_attempt_ms = $1 WHERE alert_id = $2 AND state = 'queued' AND attempts = 0")
            .bind(ms(until))
            .bind(alert_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Releases a held alert at `now`: its waiting deliveries are due at once. False if it
    /// was not waiting (never held, already released, or its time came).
    pub async fn release_alert(&mut self, alert_id: &str, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query("UPDATE alerts SET held_until_ms = $1 WHERE id = $2 AND held_until_ms > $1")
            .bind(ms(now))
            .bind(alert_id)
            .execute(&mut *self.tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE deliveries SET next_attempt_ms = $1 WHERE alert_id = $2 AND state = 'queued' AND attempts = 0
               AND next_attempt_ms > $1",
        )
        .bind(ms(now))
        .bind(alert_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(true)
    }
}

/// What the alert list shows of each alert's delivery: communes published, receivers
/// that played it, refusals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertCounts {
    pub communes_published: i64,
    pub receivers_played: i64,
    pub receivers_rejected: i64,
}

impl Store {
    /// [`AlertCounts`] of each of `ids`, in one query (an id without rows counts zero).
    pub async fn alert_counts(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, AlertCounts>> {
        let sql = format!(
            "SELECT a.id,
                (SELECT COUNT(*) FROM deliveries d WHERE d.alert_id = a.id AND d.state = 'published') AS published,
                (SELECT COUNT(*) FROM receipts r WHERE r.alert_id = a.id AND r.status = 'played') AS played,
                (SELECT COUNT(*) FROM receipts r WHERE r.alert_id = a.id AND r.status = 'rejected') AS rejected
             FROM alerts a WHERE a.id IN (SELECT ids.value FROM {})",
            self.backend.json_each("$1", "ids")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(crate::json_list(ids))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    AlertCounts {
                        communes_published: r.try_get("published")?,
                        receivers_played: r.try_get("played")?,
                        receivers_rejected: r.try_get("rejected")?,
                    },
                ))
            })
            .collect()
    }

    /// Alerts, newest first.
    pub async fn list_alerts(&self, limit: i64) -> Result<Vec<AlertRecord>> {
        Ok(self
            .find_alerts(&AlertFilter::default(), limit)
            .await?
            .into_iter()
            .map(|(a, _)| a)
            .collect())
    }

    /// Alerts matching `f`, newest first (ties in insertion order), each with its cursor
    /// (`created_ms`, rowid).
    pub async fn find_alerts(&self, f: &AlertFilter, limit: i64) -> Result<Vec<(AlertRecord, (i64, i64))>> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS}, rowid AS row_id FROM alerts
             WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR hazard = $2)
               AND ($3 IS NULL OR risk_level = $3)
               AND ($4 IS NULL OR EXISTS (SELECT 1 FROM {communes} WHERE c.value = $4))
               AND ($5 IS NULL OR msg_type = $5)
               AND ($6 IS NULL OR sent_ms >= $6) AND ($7 IS NULL OR sent_ms < $7)
               AND ($8 IS NULL OR created_ms < $8 OR (created_ms = $8 AND rowid < $9))
             ORDER BY created_ms DESC, rowid DESC LIMIT $10",
            communes = self.backend.json_each("alerts.communes", "c")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&f.status)
            .bind(&f.hazard)
            .bind(f.level)
            .bind(&f.commune)
            .bind(&f.msg_type)
            .bind(f.since.map(ms))
            .bind(f.until.map(ms))
            .bind(f.before.as_ref().map(|b| b.0))
            .bind(f.before.as_ref().map(|b| b.1))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    alert_from_row(r)?,
                    (r.try_get("created_ms")?, r.try_get("row_id")?),
                ))
            })
            .collect()
    }

    /// Live public alerts at `now`: CAP status Actual, not expired, and not replaced by an
    /// Update or Cancel (a live Cancel is listed: it is the news). Newest first.
    /// Alerts signed by `key_id` that receivers may still hold or repeat at `now` (any
    /// status, not expired, not replaced by an Update or Cancel): (id, expiry), soonest
    /// expiry first. Retiring the key revokes it, and receivers drop what it signed.
    pub async fn live_alerts_signed_by(
        &self,
        key_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>> {
        let rows = sqlx::query(
            "SELECT id, expires_ms FROM alerts
             WHERE key_id = $1 AND expires_ms > $2
               AND NOT EXISTS (SELECT 1 FROM alert_refs x WHERE x.refers_to = alerts.id)
             ORDER BY expires_ms, id",
        )
        .bind(key_id)
        .bind(ms(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, from_ms(r.try_get("expires_ms")?)?)))
            .collect()
    }

    pub async fn live_public_alerts(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<AlertRecord>> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE status = 'Actual' AND expires_ms > $1
               AND NOT EXISTS (SELECT 1 FROM alert_refs x WHERE x.refers_to = alerts.id)
             ORDER BY sent_ms DESC, id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(now))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(alert_from_row).collect()
    }

    /// Live risk-level alerts of the series `status` at `now` that the rules or a
    /// bulletin raised (not the station follower's, not an officer's): sent (not waiting),
    /// not expired, and not replaced by an Update or Cancel. Oldest first.
    pub async fn live_risk_alerts(&self, status: &str, now: DateTime<Utc>) -> Result<Vec<AlertRecord>> {
        live_risk_alerts(&self.pool, status, now).await
    }

    pub async fn get_alert(&self, id: &str) -> Result<Option<AlertRecord>> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(alert_from_row).transpose()
    }

    /// Number of stored observations (for health and tests).
    pub async fn count_observations(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM observations")
            .fetch_one(&self.pool)
            .await?;
        row.try_get("n").map_err(StoreError::from)
    }
}
