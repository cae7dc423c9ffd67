//! The rules engine's persistent state: recent readings for evaluation, the current level
//! per area, and the log of transitions (pre-warnings and auto-issued alerts).

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, Tx, from_ms, ms, parse_json_list};

/// A stored reading, in storage form.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    pub station: String,
    pub parameter: String,
    pub at: DateTime<Utc>,
    pub value: f64,
}

/// Rows of (station, parameter, `time_column`, value) as readings.
pub(crate) fn readings(rows: &[sqlx::any::AnyRow], time_column: &str) -> Result<Vec<StoredReading>> {
    rows.iter()
        .map(|r| {
            Ok(StoredReading {
                station: r.try_get("station")?,
                parameter: r.try_get("parameter")?,
                at: from_ms(r.try_get(time_column)?)?,
                value: r.try_get("value")?,
            })
        })
        .collect()
}

/// A transition to record.
#[derive(Debug, Clone)]
pub struct NewAssessment<'a> {
    pub status: &'a str,
    pub at: DateTime<Utc>,
    pub hazard: &'a str,
    pub commune: &'a str,
    pub transition: &'a str,
    pub level: Option<u8>,
    pub action: &'a str,
    pub official: bool,
    pub source: &'a str,
    pub rules: &'a [String],
    /// JSON text: inputs, provisional reasons, diagnostics.
    pub detail: &'a str,
    pub alert_id: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct AssessmentRecord {
    pub id: i64,
    pub status: String,
    pub at: DateTime<Utc>,
    pub hazard: String,
    pub commune: String,
    pub transition: String,
    pub level: Option<i64>,
    pub action: String,
    pub official: bool,
    pub source: String,
    pub rules: Vec<String>,
    pub detail: String,
    pub alert_id: Option<String>,
}

/// A stored bulletin.
#[derive(Debug, Clone, PartialEq)]
pub struct BulletinRecord {
    pub identifier: String,
    pub status: String,
    pub sender: String,
    pub hazard: String,
    pub level: Option<i64>,
    pub communes: Vec<String>,
    pub effective: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    /// It came over a channel that vouches for its sender.
    pub authoritative: bool,
    /// Its sender marks it as an emergency ("khẩn cấp").
    pub emergency: bool,
    /// How its sender graded it: `urgency/severity/certainty` ([`domain::CapGrade::code`]).
    pub grade: Option<String>,
}

impl Tx<'_> {
    /// Stores a bulletin; `false` if the same identifier and hazard is already stored.
    pub async fn insert_bulletin(&mut self, b: &BulletinRecord, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO bulletins (identifier, status, sender, hazard, level, communes, effective_ms, expires_ms,
                received_ms, authoritative, emergency, grade) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
        )
        .bind(&b.identifier)
        .bind(&b.status)
        .bind(&b.sender)
        .bind(&b.hazard)
        .bind(b.level)
        .bind(crate::json_list(&b.communes))
        .bind(ms(b.effective))
        .bind(ms(b.expires))
        .bind(ms(now))
        .bind(i64::from(b.authoritative))
        .bind(i64::from(b.emergency))
        .bind(b.grade.as_deref())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks the bulletins with these identifiers as replaced (by an Update or a Cancel).
    /// A change whose channel did not vouch for its sender (`authoritative` false) never
    /// replaces one that came over a channel that did.
    pub async fn replace_bulletins(
        &mut self,
        identifiers: &[String],
        authoritative: bool,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let mut n = 0;
        for id in identifiers {
            let done = sqlx::query(
                "UPDATE bulletins SET replaced_ms = $1 WHERE identifier = $2 AND replaced_ms IS NULL
                   AND (authoritative = 0 OR $3 = 1)",
            )
            .bind(ms(now))
            .bind(id)
            .bind(i64::from(authoritative))
            .execute(&mut *self.tx)
            .await?;
            n += done.rows_affected();
        }
        Ok(n)
    }

    /// Bulletins of a series live at `now`: effective, not expired, not replaced.
    pub async fn live_bulletins(&mut self, status: &str, now: DateTime<Utc>) -> Result<Vec<BulletinRecord>> {
        let rows = sqlx::query(
            "SELECT identifier, status, sender, hazard, level, communes, effective_ms, expires_ms, authoritative, emergency, grade FROM bulletins
             WHERE status = $1 AND replaced_ms IS NULL AND effective_ms <= $2 AND expires_ms > $2 ORDER BY effective_ms",
        )
        .bind(status)
        .bind(ms(now))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BulletinRecord {
                    identifier: r.try_get("identifier")?,
                    status: r.try_get("status")?,
                    sender: r.try_get("sender")?,
                    hazard: r.try_get("hazard")?,
                    level: r.try_get("level")?,
                    communes: parse_json_list("communes", r.try_get("communes")?)?,
                    effective: from_ms(r.try_get("effective_ms")?)?,
                    expires: from_ms(r.try_get("expires_ms")?)?,
                    authoritative: r.try_get::<i64, _>("authoritative")? != 0,
                    emergency: r.try_get::<i64, _>("emergency")? != 0,
                    grade: r.try_get("grade")?,
                })
            })
            .collect()
    }

    /// The `ok` readings of the series `status` observed at or after `since`, oldest first
    /// (flagged readings decide nothing).
    pub async fn readings_since(&mut self, status: &str, since: DateTime<Utc>) -> Result<Vec<StoredReading>> {
        let rows = sqlx::query(
            "SELECT station, parameter, observed_ms, value FROM observations
             WHERE status = $1 AND observed_ms >= $2 AND quality = 'ok' ORDER BY observed_ms",
        )
        .bind(status)
        .bind(ms(since))
        .fetch_all(&mut *self.tx)
        .await?;
        readings(&rows, "observed_ms")
    }

    pub async fn record_assessment(&mut self, a: &NewAssessment<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO assessments (status, at_ms, hazard, commune, transition, level, action, official,
                source, rules, detail, alert_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(a.status)
        .bind(ms(a.at))
        .bind(a.hazard)
        .bind(a.commune)
        .bind(a.transition)
        .bind(a.level.map(i64::from))
        .bind(a.action)
        .bind(i64::from(a.official))
        .bind(a.source)
        .bind(crate::json_list(a.rules))
        .bind(a.detail)
        .bind(a.alert_id)
        .execute(&mut *self.tx)
        .await?;
        match a.level {
            Some(level) => {
                sqlx::query(
                    "INSERT INTO area_levels (status, hazard, commune, level, since_ms) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (status, hazard, commune) DO UPDATE SET level = excluded.level,
                        since_ms = excluded.since_ms",
                )
                .bind(a.status)
                .bind(a.hazard)
                .bind(a.commune)
                .bind(i64::from(level))
                .bind(ms(a.at))
                .execute(&mut *self.tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM area_levels WHERE status = $1 AND hazard = $2 AND commune = $3")
                    .bind(a.status)
                    .bind(a.hazard)
                    .bind(a.commune)
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        Ok(())
    }
}

impl Tx<'_> {
    /// [`Store::area_levels`], in this transaction: what the last writer committed.
    pub async fn area_levels(&mut self, status: &str) -> Result<Vec<(String, String, i64)>> {
        area_levels(&mut *self.tx, status).await
    }
}

async fn area_levels<'e, E>(ex: E, status: &str) -> Result<Vec<(String, String, i64)>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = sqlx::query(
        "SELECT hazard, commune, level FROM area_levels WHERE status = $1 ORDER BY commune, hazard",
    )
    .bind(status)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("hazard")?, r.try_get("commune")?, r.try_get("level")?)))
        .collect()
}

impl Store {
    /// The current levels of a series, as (hazard, commune, level).
    pub async fn area_levels(&self, status: &str) -> Result<Vec<(String, String, i64)>> {
        area_levels(&self.pool, status).await
    }

    /// The most recent transitions, newest first.
    pub async fn list_assessments(&self, limit: i64) -> Result<Vec<AssessmentRecord>> {
        let sql = format!("SELECT {ASSESSMENT_COLUMNS} FROM assessments ORDER BY id DESC LIMIT $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(assessment).collect()
    }

    pub async fn get_assessment(&self, id: i64) -> Result<Option<AssessmentRecord>> {
        let sql = format!("SELECT {ASSESSMENT_COLUMNS} FROM assessments WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(assessment).transpose()
    }

    /// Pre-warnings of the rules engine on real observations (CAP status Actual) with a
    /// level, that nobody has confirmed or dismissed, newest first.
    pub async fn open_prewarnings(&self, limit: i64) -> Result<Vec<AssessmentRecord>> {
        let sql = format!(
            "SELECT {ASSESSMENT_COLUMNS} FROM assessments a
             WHERE a.action = 'pre-warning' AND a.status = 'Actual' AND a.level IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM warnings w WHERE w.prewarning_id = a.id AND w.state <> 'discarded')
               AND NOT EXISTS (SELECT 1 FROM prewarning_dismissals d WHERE d.assessment_id = a.id)
             ORDER BY a.id DESC LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(assessment).collect()
    }
}

const ASSESSMENT_COLUMNS: &str = "id, status, at_ms, hazard, commune, transition, level, action, official, source, rules, detail, alert_id";

fn assessment(r: &sqlx::any::AnyRow) -> Result<AssessmentRecord> {
    Ok(AssessmentRecord {
        id: r.try_get("id")?,
        status: r.try_get("status")?,
        at: from_ms(r.try_get("at_ms")?)?,
        hazard: r.try_get("hazard")?,
        commune: r.try_get("commune")?,
        transition: r.try_get("transition")?,
        level: r.try_get("level")?,
        action: r.try_get("action")?,
        official: r.try_get::<i64, _>("official")? != 0,
        source: r.try_get("source")?,
        rules: parse_json_list("rules", r.try_get("rules")?)?,
        detail: r.try_get("detail")?,
        alert_id: r.try_get("alert_id")?,
    })
}
