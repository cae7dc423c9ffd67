//! The SMS outbox: fallback decisions per alert and commune, one message per alert
//! version and number, a `sending` mark committed before any gateway call, outcomes, and
//! delivery reports. The store decides nothing: dispatch says which gateway, when, and
//! what a report does to a message.

use chrono::{DateTime, Duration, Utc};
use sqlx::Row;

use crate::{Result, Store, from_ms, from_ms_opt, json_list, ms, parse_json_list};

/// A live alert's commune whose fallback is not decided yet, with what its loudspeakers did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackCandidate {
    pub alert_id: String,
    pub class: String,
    pub sent: DateTime<Utc>,
    pub commune: String,
    /// Receivers of the commune tracked for the alert.
    pub registered: i64,
    pub online_at_issue: i64,
    pub played: i64,
}

/// One SMS to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSms {
    pub phone: String,
    pub commune: String,
    pub role: String,
    /// `fallback` or `follow_up`.
    pub cause: String,
    pub message_ref: String,
    pub text: String,
    pub encoding: String,
    pub segments: i64,
    pub priority: i64,
    /// The gateway to try first.
    pub gateway: String,
}

/// A message claimed for sending: already marked `sending` in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsClaim {
    pub id: i64,
    pub alert_id: String,
    pub phone: String,
    pub text: String,
    pub encoding: String,
    pub message_ref: String,
    pub gateway: String,
    pub tried: Vec<String>,
    pub refused: Vec<String>,
    pub attempts: i64,
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsOutcome {
    /// The gateway took it; a delivery report is due by `report_deadline`.
    Submitted { report_deadline: DateTime<Utc> },
    /// The gateway may have it (no answer came): wait for a report until `report_deadline`.
    Unconfirmed {
        error: String,
        report_deadline: DateTime<Utc>,
    },
    /// Nothing was sent: try again at `next_attempt` through `gateway`; with
    /// `refused_for_good`, the gateway that refused joins `refused`.
    Retry {
        error: String,
        gateway: String,
        next_attempt: DateTime<Utc>,
        refused_for_good: bool,
    },
    /// Nothing was sent and no gateway is left to try.
    Failed { error: String },
    /// No gateway is left to try, but one it left may have sent it.
    Unreported { error: String },
}

/// A message waiting for a delivery report past its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverdueSms {
    pub id: i64,
    pub gateway: String,
    pub tried: Vec<String>,
    pub refused: Vec<String>,
    pub state: String,
}

/// A message as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsRecord {
    pub id: i64,
    pub alert_id: String,
    pub phone: String,
    pub commune: String,
    pub role: String,
    pub cause: String,
    pub message_ref: String,
    pub text: String,
    pub encoding: String,
    pub segments: i64,
    pub state: String,
    pub gateway: Option<String>,
    pub tried: Vec<String>,
    pub attempts: i64,
    pub submitted: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// A fallback decision, shown on its alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackRecord {
    pub commune: String,
    pub reason: String,
    pub recipients: i64,
    pub decided: DateTime<Utc>,
}

/// An authenticated delivery report, to record and apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingReport {
    pub message_ref: String,
    /// The gateway it came from.
    pub gateway: String,
    pub status: String,
    pub detail: String,
    pub reported: Option<DateTime<Utc>>,
}

/// What a delivery report does to its message (decided by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportDecision {
    Keep,
    Set(String),
    MoveTo(String),
}

/// What a delivery report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsReportApplied {
    /// No message has this reference.
    Unknown,
    /// The message's state after the report (unchanged for a repeat).
    Applied { state: String, repeat: bool },
}

/// States in which the person may have the message: a cancel or an update follows it.
const REACHED: &str =
    "('sending', 'submitted', 'buffered', 'smsc_accepted', 'delivered', 'unconfirmed', 'unreported')";

impl Store {
    /// Communes of live, current (not updated or cancelled) Actual alerts that may go by
    /// SMS, whose fallback is not decided, oldest alert first.
    pub async fn fallback_candidates(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<FallbackCandidate>> {
        // A commune where every registered receiver already played needs no decision: it is
        // left out, so that it never crowds out communes that do.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM (
                SELECT a.id, a.class, COALESCE(a.held_until_ms, a.sent_ms) AS sent_ms, c.value AS commune,
                    (SELECT COUNT(*) FROM receiver_deliveries d
                      WHERE d.alert_id = a.id AND d.commune = c.value) AS registered,
                    (SELECT COUNT(*) FROM receiver_deliveries d
                      WHERE d.alert_id = a.id AND d.commune = c.value AND d.online_at_issue = 1) AS online,
                    (SELECT COUNT(*) FROM receiver_deliveries d
                      WHERE d.alert_id = a.id AND d.commune = c.value AND d.state = 'played') AS played
                FROM alerts a, {}
                WHERE a.expires_ms > $1 AND a.msg_type <> 'Cancel' AND a.status = 'Actual' AND a.sms = 1
                  AND (a.held_until_ms IS NULL OR a.held_until_ms <= $1)
                  AND NOT EXISTS (SELECT 1 FROM alert_refs r WHERE r.refers_to = a.id)
                  AND NOT EXISTS (SELECT 1 FROM sms_fallbacks f WHERE f.alert_id = a.id AND f.commune = c.value)
             ) AS candidates
             WHERE NOT (registered > 0 AND played >= registered)
             ORDER BY sent_ms, id, commune LIMIT $2",
            self.backend.json_each("a.communes", "c")
        )))
        .bind(ms(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FallbackCandidate {
                    alert_id: r.try_get("id")?,
                    class: r.try_get("class")?,
                    sent: from_ms(r.try_get("sent_ms")?)?,
                    commune: r.try_get("commune")?,
                    registered: r.try_get("registered")?,
                    online_at_issue: r.try_get("online")?,
                    played: r.try_get("played")?,
                })
            })
            .collect()
    }

    /// The directory entries of `commune` with one of `roles`, not opted out.
    pub async fn sms_recipients(&self, commune: &str, roles: &[String]) -> Result<Vec<crate::ContactRecord>> {
        let all = self.list_contacts(Some(commune), i64::MAX).await?;
        Ok(all
            .into_iter()
            .filter(|c| !c.opted_out && roles.contains(&c.role))
            .collect())
    }

    /// Records that `commune`'s officials get `alert_id` by SMS, and why, with their
    /// messages, in one transaction. A decision already taken (another instance) is kept
    /// and nothing is written; returns whether this one was.
    pub async fn decide_fallback(
        &self,
        alert_id: &str,
        commune: &str,
        reason: &str,
        messages: &[NewSms],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "INSERT INTO sms_fallbacks (alert_id, commune, reason, recipients, decided_ms)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (alert_id, commune) DO NOTHING",
        )
        .bind(alert_id)
        .bind(commune)
        .bind(reason)
        .bind(i64::try_from(messages.len()).unwrap_or(i64::MAX))
        .bind(ms(now))
        .execute(&mut *tx.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_sms(&mut tx, alert_id, messages, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Messages of Updates and Cancels still to write: for each live alert that references
    /// another, the numbers that may have the referenced one by SMS and have no message of
    /// this one yet. Returns (new alert id, phone, commune, role).
    pub async fn follow_up_candidates(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(String, String, String, String)>> {
        // Every alert an Update or Cancel replaces, directly or through a chain of them.
        let sql = format!(
            "WITH RECURSIVE chain (alert_id, ancestor) AS (
                SELECT alert_id, refers_to FROM alert_refs
                UNION
                SELECT c.alert_id, r.refers_to FROM chain c JOIN alert_refs r ON r.alert_id = c.ancestor
             )
             SELECT DISTINCT b.id AS alert_id, m.phone, m.commune, m.role
             FROM chain c
             JOIN alerts b ON b.id = c.alert_id
             JOIN sms_messages m ON m.alert_id = c.ancestor
             WHERE b.expires_ms > $1 AND m.state IN {REACHED}
               AND NOT EXISTS (SELECT 1 FROM alert_refs x WHERE x.refers_to = b.id)
               AND NOT EXISTS (SELECT 1 FROM sms_messages n WHERE n.alert_id = b.id AND n.phone = m.phone)
             ORDER BY b.id, m.phone LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(now))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("alert_id")?,
                    r.try_get("phone")?,
                    r.try_get("commune")?,
                    r.try_get("role")?,
                ))
            })
            .collect()
    }

    /// Writes messages of `alert_id`; a number that already has one for this alert keeps it.
    pub async fn queue_sms(&self, alert_id: &str, messages: &[NewSms], now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = insert_sms(&mut tx, alert_id, messages, now).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Claims up to `limit` due messages under a lease: they stay `queued`, invisible to
    /// other senders until the lease runs out, so a sender that dies before trying them
    /// leaves them to be claimed again. Each is marked `sending` by
    /// [`Store::mark_sms_sending`] just before its gateway call.
    pub async fn claim_sms(&self, now: DateTime<Utc>, lease: Duration, limit: i64) -> Result<Vec<SmsClaim>> {
        let mut tx = self.begin_claim().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE sms_messages SET lease_until_ms = $2, attempts = attempts + 1
             WHERE id IN (
                SELECT id FROM sms_messages WHERE state = 'queued' AND next_attempt_ms <= $1
                  AND (lease_until_ms IS NULL OR lease_until_ms <= $1)
                ORDER BY priority DESC, next_attempt_ms, id LIMIT $3 {})
             RETURNING id, alert_id, phone, text, encoding, message_ref, gateway, tried, refused, attempts, priority",
            self.backend.skip_locked()
        )))
        .bind(ms(now))
        .bind(ms(now + lease))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                let tried: String = r.try_get("tried")?;
                let refused: String = r.try_get("refused")?;
                let gateway: Option<String> = r.try_get("gateway")?;
                Ok((
                    r.try_get::<i64, _>("priority")?,
                    SmsClaim {
                        id: r.try_get("id")?,
                        alert_id: r.try_get("alert_id")?,
                        phone: r.try_get("phone")?,
                        text: r.try_get("text")?,
                        encoding: r.try_get("encoding")?,
                        message_ref: r.try_get("message_ref")?,
                        gateway: gateway.unwrap_or_default(),
                        tried: parse_json_list("tried", &tried)?,
                        refused: parse_json_list("refused", &refused)?,
                        attempts: r.try_get("attempts")?,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|(priority, c)| (std::cmp::Reverse(*priority), c.id));
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    /// Marks claimed messages `sending`, in one commit, just before their gateway calls;
    /// returns the ids marked. A message no longer `queued` (superseded by a cancel or an
    /// update since it was claimed) is not marked and must not be sent. A crash after this
    /// commit leaves the message `sending`, and [`Store::recover_sms_sending`] never sends
    /// it again blindly.
    pub async fn mark_sms_sending(
        &self,
        ids: &[i64],
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<i64>> {
        let mut tx = self.begin().await?;
        let mut marked = Vec::with_capacity(ids.len());
        for id in ids {
            // A message of an alert that was updated, cancelled or ended since it was
            // queued is never sent, however it came back to the queue.
            sqlx::query(
                "UPDATE sms_messages SET state = CASE
                        WHEN EXISTS (SELECT 1 FROM alert_refs r WHERE r.refers_to = sms_messages.alert_id)
                        THEN 'superseded' ELSE 'expired' END,
                    final_ms = $1, lease_until_ms = NULL,
                    last_error = CASE
                        WHEN EXISTS (SELECT 1 FROM alert_refs r WHERE r.refers_to = sms_messages.alert_id)
                        THEN 'the alert was updated or cancelled before this was sent'
                        ELSE 'the alert expired before it could be sent' END
                 WHERE id = $2 AND state = 'queued'
                   AND (EXISTS (SELECT 1 FROM alert_refs r WHERE r.refers_to = sms_messages.alert_id)
                        OR (SELECT expires_ms FROM alerts a WHERE a.id = sms_messages.alert_id) <= $1)",
            )
            .bind(ms(now))
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
            let done = sqlx::query(
                "UPDATE sms_messages SET state = 'sending', sending_ms = $1, lease_until_ms = $2
                 WHERE id = $3 AND state = 'queued'",
            )
            .bind(ms(now))
            .bind(ms(now + lease))
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
            if done.rows_affected() == 1 {
                marked.push(*id);
            }
        }
        tx.commit().await?;
        Ok(marked)
    }

    /// Records the outcomes of a batch of sends in one transaction. A message a delivery
    /// report already moved on (reports can beat the gateway's answer) keeps its state.
    pub async fn record_sms_outcomes(
        &self,
        outcomes: &[(SmsClaim, SmsOutcome)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        for (claim, outcome) in outcomes {
            let mut refused = claim.refused.clone();
            if let SmsOutcome::Retry {
                refused_for_good: true,
                ..
            } = outcome
                && !refused.contains(&claim.gateway)
            {
                refused.push(claim.gateway.clone());
            }
            let refused = json_list(&refused);
            // Only the attempt that marked the message may record its outcome.
            let guard = "WHERE id = $1 AND state = 'sending' AND attempts = $2";
            let q = match outcome {
                SmsOutcome::Submitted { report_deadline } => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE sms_messages SET state = 'submitted', submitted_ms = $3, report_deadline_ms = $4,
                        lease_until_ms = NULL, last_error = NULL, refused = $5 {guard}"
                )))
                .bind(claim.id)
                .bind(claim.attempts)
                .bind(ms(now))
                .bind(ms(*report_deadline)),
                SmsOutcome::Unconfirmed {
                    error,
                    report_deadline,
                } => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE sms_messages SET state = 'unconfirmed', last_error = $3, report_deadline_ms = $4,
                        lease_until_ms = NULL, refused = $5 {guard}"
                )))
                .bind(claim.id)
                .bind(claim.attempts)
                .bind(error)
                .bind(ms(*report_deadline)),
                SmsOutcome::Retry {
                    error, next_attempt, ..
                } => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE sms_messages SET state = 'queued', last_error = $3, next_attempt_ms = $4, gateway = $6,
                        lease_until_ms = NULL, refused = $5 {guard}"
                )))
                .bind(claim.id)
                .bind(claim.attempts)
                .bind(error)
                .bind(ms(*next_attempt)),
                SmsOutcome::Failed { error } | SmsOutcome::Unreported { error } => {
                    let state = if matches!(outcome, SmsOutcome::Failed { .. }) {
                        "failed"
                    } else {
                        "unreported"
                    };
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE sms_messages SET state = '{state}', last_error = $3, final_ms = $4,
                            lease_until_ms = NULL, refused = $5 {guard}"
                    )))
                    .bind(claim.id)
                    .bind(claim.attempts)
                    .bind(error)
                    .bind(ms(now))
                }
            };
            let q = q.bind(&refused);
            let q = match outcome {
                SmsOutcome::Retry { gateway, .. } => q.bind(gateway),
                _ => q,
            };
            q.execute(&mut *tx.tx).await?;
        }
        tx.commit().await
    }

    /// Messages left `sending` by a process that stopped (their lease ran out): the gateway
    /// may have them, so they are not sent again; they wait for a report until
    /// `sending + deadline`, like an unanswered send. Returns how many.
    pub async fn recover_sms_sending(&self, now: DateTime<Utc>, deadline: Duration) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE sms_messages SET state = 'unconfirmed', lease_until_ms = NULL,
                report_deadline_ms = (CASE WHEN sending_ms > $2 THEN sending_ms ELSE $2 END) + $1,
                last_error = 'the sender stopped while handing it to the gateway; waiting for a delivery report'
             WHERE state = 'sending' AND lease_until_ms <= $2",
        )
        .bind(deadline.num_milliseconds())
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Gives every message waiting for a report a full `deadline` from `now`: called once
    /// when the sender starts, since reports that came while no sender was running are
    /// retried by the gateways (Kannel's `http-request-retry`, Jasmin's 3 tries) and must
    /// not be mistaken for lost ones. Returns how many.
    pub async fn extend_sms_deadlines(&self, now: DateTime<Utc>, deadline: Duration) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE sms_messages SET report_deadline_ms = CASE WHEN report_deadline_ms > $1 THEN report_deadline_ms ELSE $1 END
             WHERE state IN ('submitted', 'unconfirmed') AND report_deadline_ms < $1",
        )
        .bind(ms(now + deadline))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Queued messages of alerts that ended before they were sent become `expired`.
    pub async fn expire_sms(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE sms_messages SET state = 'expired', final_ms = $1,
                last_error = 'the alert expired before it could be sent'
             WHERE state = 'queued' AND alert_id IN (SELECT id FROM alerts WHERE expires_ms <= $1)",
        )
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Messages still without a final report past their deadline.
    pub async fn overdue_sms(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<OverdueSms>> {
        let rows = sqlx::query(
            "SELECT id, gateway, tried, refused, state FROM sms_messages
             WHERE state IN ('submitted', 'unconfirmed') AND report_deadline_ms <= $1
             ORDER BY report_deadline_ms LIMIT $2",
        )
        .bind(ms(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let tried: String = r.try_get("tried")?;
                let refused: String = r.try_get("refused")?;
                let gateway: Option<String> = r.try_get("gateway")?;
                Ok(OverdueSms {
                    id: r.try_get("id")?,
                    gateway: gateway.unwrap_or_default(),
                    tried: parse_json_list("tried", &tried)?,
                    refused: parse_json_list("refused", &refused)?,
                    state: r.try_get("state")?,
                })
            })
            .collect()
    }

    /// Moves an overdue message to `gateway` (queued at once), or, with `None`, ends it as
    /// `unreported`. Only a message still overdue in `state` is touched.
    pub async fn resolve_overdue(
        &self,
        sms: &OverdueSms,
        gateway: Option<&str>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let q = match gateway {
            Some(g) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE sms_messages SET state = 'queued', gateway = $1, next_attempt_ms = $2, last_error = $3,
                    report_deadline_ms = NULL,
                    tried = CASE WHEN gateway IS NULL OR EXISTS (SELECT 1 FROM {} WHERE t.value = gateway)
                            THEN tried ELSE {} END
                 WHERE id = $4 AND state = $5 AND report_deadline_ms <= $2",
                self.backend.json_each("tried", "t"),
                self.backend.json_append("tried", "gateway")
            )))
            .bind(g),
            None => sqlx::query(
                "UPDATE sms_messages SET state = 'unreported', final_ms = $2, last_error = $3
                 WHERE id = $4 AND state = $5 AND report_deadline_ms <= $2 AND $1 IS NULL",
            )
            .bind(Option::<&str>::None),
        };
        let done = q
            .bind(ms(now))
            .bind(reason)
            .bind(sms.id)
            .bind(&sms.state)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records delivery reports once each and applies them to their messages, all in one
    /// transaction (one disk sync for a burst of reports): `decide(i, state, gateway,
    /// tried)` gives the next state of report `i`'s message, or the gateway to queue it for
    /// now. Reports for the same message apply in order.
    pub async fn apply_sms_reports(
        &self,
        reports: &[IncomingReport],
        now: DateTime<Utc>,
        mut decide: impl FnMut(usize, &str, &str, &[String], &[String]) -> ReportDecision,
    ) -> Result<Vec<SmsReportApplied>> {
        let mut tx = self.begin().await?;
        let mut applied = Vec::with_capacity(reports.len());
        for (i, report) in reports.iter().enumerate() {
            applied.push(
                apply_report(&mut tx, report, now, |state, gateway, tried, refused| {
                    decide(i, state, gateway, tried, refused)
                })
                .await?,
            );
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// When the next queued message falls due, if one is queued.
    pub async fn next_sms_due(&self) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN next_attempt_ms > COALESCE(lease_until_ms, 0)
                        THEN next_attempt_ms ELSE COALESCE(lease_until_ms, 0) END) AS due
             FROM sms_messages WHERE state = 'queued'",
        )
        .fetch_one(&self.pool)
        .await?;
        from_ms_opt(row.try_get("due")?)
    }

    pub async fn sms_for_alert(&self, alert_id: &str) -> Result<Vec<SmsRecord>> {
        let rows = sqlx::query(
            "SELECT id, alert_id, phone, commune, role, cause, message_ref, text, encoding, segments, state, gateway,
                tried, attempts, submitted_ms, final_ms, last_error
             FROM sms_messages WHERE alert_id = $1 ORDER BY commune, phone",
        )
        .bind(alert_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let tried: String = r.try_get("tried")?;
                Ok(SmsRecord {
                    id: r.try_get("id")?,
                    alert_id: r.try_get("alert_id")?,
                    phone: r.try_get("phone")?,
                    commune: r.try_get("commune")?,
                    role: r.try_get("role")?,
                    cause: r.try_get("cause")?,
                    message_ref: r.try_get("message_ref")?,
                    text: r.try_get("text")?,
                    encoding: r.try_get("encoding")?,
                    segments: r.try_get("segments")?,
                    state: r.try_get("state")?,
                    gateway: r.try_get("gateway")?,
                    tried: parse_json_list("tried", &tried)?,
                    attempts: r.try_get("attempts")?,
                    submitted: from_ms_opt(r.try_get("submitted_ms")?)?,
                    finished: from_ms_opt(r.try_get("final_ms")?)?,
                    last_error: r.try_get("last_error")?,
                })
            })
            .collect()
    }

    pub async fn fallbacks_for_alert(&self, alert_id: &str) -> Result<Vec<FallbackRecord>> {
        let rows = sqlx::query(
            "SELECT commune, reason, recipients, decided_ms FROM sms_fallbacks WHERE alert_id = $1 ORDER BY commune",
        )
        .bind(alert_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FallbackRecord {
                    commune: r.try_get("commune")?,
                    reason: r.try_get("reason")?,
                    recipients: r.try_get("recipients")?,
                    decided: from_ms(r.try_get("decided_ms")?)?,
                })
            })
            .collect()
    }

    /// Counts of messages by state, for `/metrics`.
    pub async fn sms_states(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM sms_messages GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }
}

async fn insert_sms(
    tx: &mut crate::Tx<'_>,
    alert_id: &str,
    messages: &[NewSms],
    now: DateTime<Utc>,
) -> Result<u64> {
    let mut n = 0;
    for m in messages {
        n += sqlx::query(
            "INSERT INTO sms_messages (alert_id, phone, commune, role, cause, message_ref, text, encoding,
                segments, priority, state, gateway, next_attempt_ms, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11, $12, $13)
             ON CONFLICT DO NOTHING",
        )
        .bind(alert_id)
        .bind(&m.phone)
        .bind(&m.commune)
        .bind(&m.role)
        .bind(&m.cause)
        .bind(&m.message_ref)
        .bind(&m.text)
        .bind(&m.encoding)
        .bind(m.segments)
        .bind(m.priority)
        .bind(&m.gateway)
        .bind(ms(now))
        .bind(ms(now))
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
    }
    Ok(n)
}

async fn apply_report(
    tx: &mut crate::Tx<'_>,
    report: &IncomingReport,
    now: DateTime<Utc>,
    decide: impl FnOnce(&str, &str, &[String], &[String]) -> ReportDecision,
) -> Result<SmsReportApplied> {
    let IncomingReport {
        message_ref,
        gateway,
        status,
        detail,
        reported,
    } = report;
    let Some(row) =
        sqlx::query("SELECT id, state, gateway, tried, refused FROM sms_messages WHERE message_ref = $1")
            .bind(message_ref)
            .fetch_optional(&mut *tx.tx)
            .await?
    else {
        return Ok(SmsReportApplied::Unknown);
    };
    let id: i64 = row.try_get("id")?;
    let current: String = row.try_get("state")?;
    let current_gateway: Option<String> = row.try_get("gateway")?;
    let tried: String = row.try_get("tried")?;
    let tried = parse_json_list("tried", &tried)?;
    let refused: String = row.try_get("refused")?;
    let refused = parse_json_list("refused", &refused)?;
    let inserted = sqlx::query(
        "INSERT INTO sms_reports (message_ref, gateway, status, detail, reported_ms, recorded_ms)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_ref, gateway, status) DO NOTHING",
    )
    .bind(message_ref)
    .bind(gateway)
    .bind(status)
    .bind(detail)
    .bind(reported.map(ms))
    .bind(ms(now))
    .execute(&mut *tx.tx)
    .await?
    .rows_affected()
        == 1;
    let state = match decide(
        &current,
        current_gateway.as_deref().unwrap_or_default(),
        &tried,
        &refused,
    ) {
        ReportDecision::Keep => current,
        ReportDecision::Set(state) => {
            let is_final = matches!(state.as_str(), "delivered" | "failed");
            sqlx::query(
                "UPDATE sms_messages SET state = $1, final_ms = CASE WHEN $2 THEN $3 ELSE final_ms END,
                    lease_until_ms = NULL, report_deadline_ms = CASE WHEN $2 THEN NULL ELSE report_deadline_ms END,
                    last_error = CASE WHEN $1 = 'failed' THEN $4 ELSE last_error END
                 WHERE id = $5",
            )
            .bind(&state)
            .bind(is_final)
            .bind(ms(now))
            .bind(format!("{gateway} reported {status}: {detail}"))
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
            state
        }
        ReportDecision::MoveTo(next) => {
            // The SMSC refused it: no copy was made, and this gateway will not take it.
            let mut refused = refused;
            if let Some(g) = current_gateway.filter(|g| !refused.contains(g)) {
                refused.push(g);
            }
            sqlx::query(
                "UPDATE sms_messages SET state = 'queued', gateway = $1, refused = $2, next_attempt_ms = $3,
                    report_deadline_ms = NULL, lease_until_ms = NULL, last_error = $4
                 WHERE id = $5",
            )
            .bind(&next)
            .bind(json_list(&refused))
            .bind(ms(now))
            .bind(format!("{gateway} reported {status}: {detail}; moved to {next}"))
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
            "queued".to_owned()
        }
    };
    Ok(SmsReportApplied::Applied {
        state,
        repeat: !inserted,
    })
}
