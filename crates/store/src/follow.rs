//! What quality control and the station follower read and write: a station's readings
//! with their flags, the events of flagging, and the newest message of a station's
//! incident.

use chrono::{DateTime, Utc};
use sqlx::Row;

pub use domain::CommuneState;

use crate::{Result, Store, Tx, from_ms, ms, parse_json_list};

/// A stored reading with its quality flag.
#[derive(Debug, Clone, PartialEq)]
pub struct FlaggedReading {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub value: f64,
    pub quality: String,
    pub reason: Option<String>,
}

/// A reading flagged (or confirmed after a flag), for duty officers.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub status: String,
    pub station: String,
    pub parameter: String,
    pub observed_at: DateTime<Utc>,
    pub value: f64,
    pub quality: String,
    pub reason: Option<String>,
}

/// The newest message of a station's incident: the alerts whose station it is, and every
/// message that references one of them (an officer's Update or Cancel).
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentHead {
    pub id: String,
    pub msg_type: String,
    pub origin_kind: String,
    pub alarm_level: Option<i64>,
    pub sent: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    /// Every earlier message of the incident.
    pub references: Vec<String>,
    pub follow: Option<String>,
    /// The highest alarm level of the head and the messages it references.
    pub incident_max: Option<i64>,
    pub class: String,
}

impl Tx<'_> {
    /// Readings of `parameter` at `station` in the series of `status` observed at or after
    /// `since`, oldest first, with their flags.
    pub async fn series_since(
        &mut self,
        station: &str,
        parameter: &str,
        status: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<FlaggedReading>> {
        let rows = sqlx::query(
            "SELECT id, observed_ms, value, quality, quality_reason FROM observations
             WHERE station = $1 AND parameter = $2 AND status = $3 AND observed_ms >= $4
             ORDER BY observed_ms",
        )
        .bind(station)
        .bind(parameter)
        .bind(status)
        .bind(ms(since))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FlaggedReading {
                    id: r.try_get("id")?,
                    at: from_ms(r.try_get("observed_ms")?)?,
                    value: r.try_get("value")?,
                    quality: r.try_get("quality")?,
                    reason: r.try_get("quality_reason")?,
                })
            })
            .collect()
    }

    /// Whether the series has a reading before `before`.
    pub async fn has_reading_before(
        &mut self,
        station: &str,
        parameter: &str,
        status: &str,
        before: DateTime<Utc>,
    ) -> Result<bool> {
        let row = sqlx::query(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM observations WHERE station = $1 AND parameter = $2
                AND status = $3 AND observed_ms < $4) THEN 1 ELSE 0 END AS earlier",
        )
        .bind(station)
        .bind(parameter)
        .bind(status)
        .bind(ms(before))
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get::<i64, _>("earlier")? != 0)
    }

    /// Sets a reading's flag and why.
    pub async fn set_quality(&mut self, id: i64, quality: &str, reason: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE observations SET quality = $1, quality_reason = $2 WHERE id = $3")
            .bind(quality)
            .bind(reason)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Records that a reading was flagged (or confirmed).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_quality_event(
        &mut self,
        status: &str,
        station: &str,
        parameter: &str,
        observed_at: DateTime<Utc>,
        value: f64,
        quality: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO quality_events (at_ms, status, station, parameter, observed_ms, value, quality, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(ms(now))
        .bind(status)
        .bind(station)
        .bind(parameter)
        .bind(ms(observed_at))
        .bind(value)
        .bind(quality)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The `ok` readings of `parameter` at `station` since `since`, oldest first.
    pub async fn ok_readings(
        &mut self,
        station: &str,
        parameter: &str,
        status: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, f64)>> {
        ok_readings(&mut *self.tx, station, parameter, status, since).await
    }

    /// Who must be told when a reading is flagged: every enabled duty officer, approver
    /// and administrator.
    pub async fn duty_users(&mut self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT username FROM users WHERE role IN ('officer', 'approver', 'admin') AND disabled_ms IS NULL
             ORDER BY username",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok(format!("user:{}", r.try_get::<String, _>("username")?)))
            .collect()
    }

    /// The newest message of `station`'s incident for `hazard` in the series of `status`.
    pub async fn incident_head(
        &mut self,
        station: &str,
        hazard: &str,
        status: &str,
    ) -> Result<Option<IncidentHead>> {
        incident_head(&mut self.tx, station, hazard, status).await
    }
}

async fn ok_readings<'e, E>(
    ex: E,
    station: &str,
    parameter: &str,
    status: &str,
    since: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, f64)>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = sqlx::query(
        "SELECT observed_ms, value FROM observations
         WHERE station = $1 AND parameter = $2 AND status = $3 AND observed_ms >= $4 AND quality = 'ok'
         ORDER BY observed_ms",
    )
    .bind(station)
    .bind(parameter)
    .bind(status)
    .bind(ms(since))
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| Ok((from_ms(r.try_get("observed_ms")?)?, r.try_get("value")?)))
        .collect()
}

async fn incident_head(
    conn: &mut sqlx::AnyConnection,
    station: &str,
    hazard: &str,
    status: &str,
) -> Result<Option<IncidentHead>> {
    let row = sqlx::query(
        "SELECT id, msg_type, origin_kind, alarm_level, sent_ms, expires_ms, refs, follow, class FROM alerts
         WHERE status = $3 AND hazard = $2
           AND (station = $1 OR id IN (SELECT r.alert_id FROM alert_refs r JOIN alerts b ON b.id = r.refers_to
                                       WHERE b.station = $1 AND b.hazard = $2 AND b.status = $3))
         ORDER BY created_ms DESC, sent_ms DESC, rowid DESC LIMIT 1",
    )
    .bind(station)
    .bind(hazard)
    .bind(status)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let id: String = r.try_get("id")?;
    let references = parse_json_list("refs", r.try_get("refs")?)?;
    let max_ref = sqlx::query(
        "SELECT MAX(a.alarm_level) AS m FROM alert_refs r JOIN alerts a ON a.id = r.refers_to WHERE r.alert_id = $1",
    )
    .bind(&id)
    .fetch_one(&mut *conn)
    .await?
    .try_get::<Option<i64>, _>("m")?;
    let alarm_level: Option<i64> = r.try_get("alarm_level")?;
    Ok(Some(IncidentHead {
        id,
        msg_type: r.try_get("msg_type")?,
        origin_kind: r.try_get("origin_kind")?,
        alarm_level,
        sent: from_ms(r.try_get("sent_ms")?)?,
        expires: from_ms(r.try_get("expires_ms")?)?,
        references,
        follow: r.try_get("follow")?,
        incident_max: alarm_level.max(max_ref),
        class: r.try_get("class")?,
    }))
}

impl Store {
    /// [`Tx::ok_readings`], outside a transaction.
    pub async fn ok_readings(
        &self,
        station: &str,
        parameter: &str,
        status: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, f64)>> {
        ok_readings(&self.pool, station, parameter, status, since).await
    }

    /// [`Tx::incident_head`], outside a transaction.
    pub async fn incident_head(
        &self,
        station: &str,
        hazard: &str,
        status: &str,
    ) -> Result<Option<IncidentHead>> {
        let mut conn = self.pool.acquire().await?;
        incident_head(&mut conn, station, hazard, status).await
    }

    /// Flagging events, newest first, before the cursor `before` (an event id) if given.
    pub async fn quality_events(&self, before: Option<i64>, limit: i64) -> Result<Vec<QualityEvent>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, status, station, parameter, observed_ms, value, quality, reason FROM quality_events
             WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(quality_event).collect()
    }

    /// Flagging events after `after` (an event id), oldest first: the events feed.
    pub async fn quality_events_after(&self, after: i64, limit: i64) -> Result<Vec<QualityEvent>> {
        let rows = sqlx::query(
            "SELECT id, at_ms, status, station, parameter, observed_ms, value, quality, reason FROM quality_events
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(quality_event).collect()
    }

    /// Readings by quality flag (for `/metrics`), over every series.
    pub async fn readings_by_quality(&self) -> Result<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT quality, COUNT(*) AS n FROM observations GROUP BY quality ORDER BY quality")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("quality")?, r.try_get("n")?)))
            .collect()
    }

    /// Each station's newest reading of `parameter` in the series of `status`, with its
    /// flag: which stations are flagged now.
    pub async fn latest_flags(&self, parameter: &str, status: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT o.station, o.quality FROM observations o
             WHERE o.parameter = $1 AND o.status = $2
               AND o.observed_ms = (SELECT MAX(x.observed_ms) FROM observations x
                                    WHERE x.station = o.station AND x.parameter = $1 AND x.status = $2)
             ORDER BY o.station",
        )
        .bind(parameter)
        .bind(status)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("station")?, r.try_get("quality")?)))
            .collect()
    }
}

fn quality_event(r: &sqlx::any::AnyRow) -> Result<QualityEvent> {
    Ok(QualityEvent {
        id: r.try_get("id")?,
        at: from_ms(r.try_get("at_ms")?)?,
        status: r.try_get("status")?,
        station: r.try_get("station")?,
        parameter: r.try_get("parameter")?,
        observed_at: from_ms(r.try_get("observed_ms")?)?,
        value: r.try_get("value")?,
        quality: r.try_get("quality")?,
        reason: r.try_get("reason")?,
    })
}

impl Store {
    /// The commune states of `communes` at `now`, in two queries whatever their number.
    pub async fn commune_states(
        &self,
        communes: &[String],
        now: DateTime<Utc>,
    ) -> Result<std::collections::BTreeMap<String, CommuneState>> {
        let mut out: std::collections::BTreeMap<String, CommuneState> = self
            .commune_seqs(communes)
            .await?
            .into_iter()
            .map(|(c, seq)| {
                (
                    c,
                    CommuneState {
                        seq,
                        ..CommuneState::default()
                    },
                )
            })
            .collect();
        let sql = format!(
            "SELECT d.commune, a.id, a.expires_ms, a.sent_ms,
                (SELECT b.id FROM alert_refs r JOIN alerts b ON b.id = r.alert_id WHERE r.refers_to = a.id
                 ORDER BY b.sent_ms DESC, b.rowid DESC LIMIT 1) AS by_id,
                (SELECT MAX(b.expires_ms) FROM alert_refs r JOIN alerts b ON b.id = r.alert_id
                 WHERE r.refers_to = a.id) AS by_expires_ms
             FROM deliveries d JOIN alerts a ON a.id = d.alert_id
             WHERE d.commune IN (SELECT c.value FROM {})
               AND (a.expires_ms > $2 OR EXISTS (SELECT 1 FROM alert_refs r JOIN alerts b ON b.id = r.alert_id
                                                 WHERE r.refers_to = a.id AND b.expires_ms > $2))
             ORDER BY d.commune, a.rowid",
            self.backend.json_each("$1", "c")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(crate::json_list(communes))
            .bind(ms(now))
            .fetch_all(&self.pool)
            .await?;
        for r in &rows {
            let commune: String = r.try_get("commune")?;
            let id: String = r.try_get("id")?;
            let expires = from_ms(r.try_get("expires_ms")?)?;
            let sent = from_ms(r.try_get("sent_ms")?)?;
            let state = out.entry(commune).or_default();
            state.newest_sent = state.newest_sent.max(Some(sent));
            match r.try_get::<Option<String>, _>("by_id")? {
                None => state.live.push((id, expires)),
                Some(by) => {
                    let until = match r.try_get::<Option<i64>, _>("by_expires_ms")? {
                        Some(b) => expires.max(from_ms(b)?),
                        None => expires,
                    };
                    state.replaced.push((id, by, until));
                }
            }
        }
        Ok(out)
    }

    /// The newest alert of each of `communes`, as [`CommuneState::seq`] (0 for none).
    pub async fn commune_seqs(&self, communes: &[String]) -> Result<std::collections::BTreeMap<String, i64>> {
        let sql = format!(
            "SELECT d.commune, MAX(a.rowid) AS seq FROM deliveries d JOIN alerts a ON a.id = d.alert_id
             WHERE d.commune IN (SELECT c.value FROM {}) GROUP BY d.commune",
            self.backend.json_each("$1", "c")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(crate::json_list(communes))
            .fetch_all(&self.pool)
            .await?;
        let mut out: std::collections::BTreeMap<String, i64> =
            communes.iter().map(|c| (c.clone(), 0)).collect();
        for r in &rows {
            out.insert(r.try_get("commune")?, r.try_get("seq")?);
        }
        Ok(out)
    }
}
