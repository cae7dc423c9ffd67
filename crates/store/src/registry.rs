//! The receiver registry, per-receiver delivery states, resends and retained-message
//! clears: what proves that a commune's loudspeakers heard an alert.

use chrono::{DateTime, Duration, Utc};
use sqlx::Row;

use std::collections::HashMap;

use crate::receipts::{statement_chunks, values_list};
use crate::{Result, Store, Tx, from_ms, from_ms_opt, json_list, ms, parse_json_list};

/// A registered receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredReceiver {
    pub receiver_id: String,
    pub commune: String,
    pub password_hash: Option<String>,
    pub trusted_keys: Vec<String>,
    pub firmware: Option<String>,
    pub registered: DateTime<Utc>,
    /// Enrolled for drills: Exercise and Test alerts are tracked for it (others ignore them).
    pub drills: bool,
}

/// A registered receiver with what the fleet last heard from it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRecord {
    pub receiver: RegisteredReceiver,
    /// The last retained status (`online`/`offline`), if any was heard.
    pub online: Option<bool>,
    pub last_seen: Option<DateTime<Utc>>,
    pub last_heartbeat: Option<String>,
    pub last_receipt: Option<DateTime<Utc>>,
    /// Its clock against the service's at its last heartbeat (ms, receiver minus service).
    pub clock_offset_ms: Option<i64>,
}

/// One receiver's delivery of one alert.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverDeliveryRecord {
    pub alert_id: String,
    pub receiver_id: String,
    pub commune: String,
    pub state: String,
    pub at: DateTime<Utc>,
    pub sent: Option<DateTime<Utc>>,
    pub received: Option<DateTime<Utc>>,
    pub played: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// The receiver's clock against the service's at its last heartbeat (ms).
    pub clock_offset_ms: Option<i64>,
}

/// One move of [`Tx::advance_receiver_deliveries`].
#[derive(Debug, Clone, Copy)]
pub struct DeliveryAdvance<'a> {
    pub alert_id: &'a str,
    pub receiver_id: &'a str,
    pub state: &'a str,
    pub reason: Option<&'a str>,
}

/// The forward order of delivery states; a state never moves back (the same order is
/// written out in the SQL of [`Store::advance_receiver_delivery`]).
/// `superseded` and `expired` end a delivery that never reached `received`; a receiver's
/// `acknowledged` (a renewal taken without playing) or `played` still moves it, since the
/// matrix records what each receiver actually did.
fn rank(state: &str) -> i64 {
    match state {
        "queued" => 0,
        "sent" => 1,
        "rejected" => 2,
        "received" => 3,
        "failed" => 4,
        "superseded" | "expired" => 5,
        "acknowledged" => 6,
        "played" => 7,
        _ => 8,
    }
}

/// Unregistered receiver ids given a row of their own; messages from further ids are
/// only counted in memory.
pub const MAX_UNREGISTERED: i64 = 1000;

impl Store {
    /// [`Tx::registered_receiver`] outside a transaction.
    pub async fn registered_receiver(&self, receiver_id: &str) -> Result<Option<RegisteredReceiver>> {
        let mut tx = self.begin_read().await?;
        let r = tx.registered_receiver(receiver_id).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// [`Tx::count_unregistered`] in a transaction of its own.
    pub async fn count_unregistered(
        &self,
        receiver_id: &str,
        topic: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let counted = tx.count_unregistered(receiver_id, topic, now).await?;
        tx.commit().await?;
        Ok(counted)
    }

    /// [`Tx::advance_receiver_delivery`] in a transaction of its own.
    pub async fn advance_receiver_delivery(
        &self,
        alert_id: &str,
        receiver_id: &str,
        state: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let moved = tx
            .advance_receiver_delivery(alert_id, receiver_id, state, reason, now)
            .await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Registers a receiver (or re-registers a removed one). Returns false if it is already
    /// registered and not removed.
    pub async fn register_receiver(&self, r: &RegisteredReceiver) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO receiver_registry (receiver_id, commune, password_hash, trusted_keys, firmware, registered_ms, drills)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (receiver_id) DO UPDATE SET commune = excluded.commune,
                password_hash = excluded.password_hash, trusted_keys = excluded.trusted_keys,
                firmware = excluded.firmware, registered_ms = excluded.registered_ms, removed_ms = NULL,
                drills = excluded.drills
             WHERE receiver_registry.removed_ms IS NOT NULL",
        )
        .bind(&r.receiver_id)
        .bind(&r.commune)
        .bind(&r.password_hash)
        .bind(json_list(&r.trusted_keys))
        .bind(&r.firmware)
        .bind(ms(r.registered))
        .bind(i64::from(r.drills))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a receiver from the registry (its history stays). Returns false if it was
    /// not registered.
    pub async fn remove_receiver(&self, receiver_id: &str, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE receiver_registry SET removed_ms = $1 WHERE receiver_id = $2 AND removed_ms IS NULL",
        )
        .bind(ms(now))
        .bind(receiver_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every registered receiver with its last status, heartbeat and receipt, by id.
    pub async fn fleet(&self) -> Result<Vec<FleetRecord>> {
        let rows = sqlx::query(
            "SELECT g.receiver_id, g.commune, g.password_hash, g.trusted_keys, g.firmware, g.registered_ms, g.drills,
                    r.online, r.last_seen_ms, r.detail, r.clock_offset_ms,
                    (SELECT MAX(recorded_ms) FROM receipts WHERE receipts.receiver_id = g.receiver_id) AS last_receipt_ms
             FROM receiver_registry g LEFT JOIN receivers r ON r.receiver_id = g.receiver_id
             WHERE g.removed_ms IS NULL ORDER BY g.receiver_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FleetRecord {
                    receiver: registered(r)?,
                    online: r.try_get::<Option<i64>, _>("online")?.map(|o| o != 0),
                    last_seen: from_ms_opt(r.try_get("last_seen_ms")?)?,
                    last_heartbeat: r.try_get("detail")?,
                    last_receipt: from_ms_opt(r.try_get("last_receipt_ms")?)?,
                    clock_offset_ms: r.try_get("clock_offset_ms")?,
                })
            })
            .collect()
    }

    /// Messages ignored from unregistered receivers, in total.
    pub async fn unregistered_messages(&self) -> Result<i64> {
        let row =
            sqlx::query("SELECT CAST(COALESCE(SUM(messages), 0) AS BIGINT) AS n FROM unregistered_receivers")
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get("n")?)
    }

    /// One registered receiver (not removed): its commune and broker password hash.
    pub async fn receiver_login(&self, id: &str) -> Result<Option<(String, Option<String>)>> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT commune, password_hash FROM receiver_registry WHERE receiver_id = $1 AND removed_ms IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Every registered receiver (not removed) with its commune and its broker password
    /// hash, if it has one: who may log in on the embedded broker as which receiver.
    pub async fn receiver_logins(&self) -> Result<Vec<(String, String, Option<String>)>> {
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT receiver_id, commune, password_hash FROM receiver_registry WHERE removed_ms IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Unregistered receiver ids with a row of their own (at most [`MAX_UNREGISTERED`]).
    pub async fn unregistered_ids(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM unregistered_receivers")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Every receiver's delivery of an alert, by commune and receiver.
    pub async fn receiver_deliveries(&self, alert_id: &str) -> Result<Vec<ReceiverDeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT d.alert_id, d.receiver_id, d.commune, d.state, d.state_ms, d.sent_ms, d.received_ms,
                    d.played_ms, d.reason, v.clock_offset_ms
             FROM receiver_deliveries d LEFT JOIN receivers v ON v.receiver_id = d.receiver_id
             WHERE d.alert_id = $1 ORDER BY d.commune, d.receiver_id",
        )
        .bind(alert_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReceiverDeliveryRecord {
                    alert_id: r.try_get("alert_id")?,
                    receiver_id: r.try_get("receiver_id")?,
                    commune: r.try_get("commune")?,
                    state: r.try_get("state")?,
                    at: from_ms(r.try_get("state_ms")?)?,
                    sent: from_ms_opt(r.try_get("sent_ms")?)?,
                    received: from_ms_opt(r.try_get("received_ms")?)?,
                    played: from_ms_opt(r.try_get("played_ms")?)?,
                    reason: r.try_get("reason")?,
                    clock_offset_ms: r.try_get("clock_offset_ms")?,
                })
            })
            .collect()
    }

    /// Re-queues published commune topics of live alerts (never one that an Update or
    /// Cancel replaced) where a registered receiver has not reported `played` (or `failed`), once `schedule[resends]` (the last entry
    /// repeating) has passed since the last publish. A receiver answers a copy it already
    /// has with its receipts again, so a receipt lost with a broker is recovered. Driven by
    /// the live alerts, so the history is never scanned. Returns how many were re-queued.
    pub async fn requeue_unacknowledged(&self, now: DateTime<Utc>, schedule: &[Duration]) -> Result<u64> {
        let mut total = 0;
        for (i, wait) in schedule.iter().enumerate() {
            // Rows with `resends == i` wait schedule[i]; the last step covers every later one.
            let lo = i as i64;
            let hi = if i + 1 == schedule.len() { i64::MAX } else { lo };
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE deliveries SET state = 'queued', next_attempt_ms = $1, lease_until_ms = NULL,
                    resends = resends + 1
                 WHERE id IN (
                    SELECT d.id FROM alerts a CROSS JOIN deliveries d
                    WHERE d.alert_id = a.id AND a.expires_ms > $1 AND {} = 'published'
                      AND d.resends BETWEEN $2 AND $3 AND d.published_ms <= $4
                      AND NOT EXISTS (SELECT 1 FROM alert_refs x WHERE x.refers_to = a.id)
                      AND EXISTS (SELECT 1 FROM receiver_deliveries r
                                  WHERE r.alert_id = d.alert_id AND r.commune = d.commune
                                    AND r.state IN ('queued', 'sent', 'rejected', 'received')))",
                self.backend.unindexed("d.state")
            )))
            .bind(ms(now))
            .bind(lo)
            .bind(hi)
            .bind(ms(now - *wait))
            .execute(&self.pool)
            .await?;
            total += done.rows_affected();
        }
        Ok(total)
    }

    /// Ends the receiver deliveries of alerts that expired before the receiver sent
    /// `received`, and schedules their topics' retained messages to be cleared. Returns
    /// how many receiver deliveries expired.
    pub async fn expire_deliveries(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE receiver_deliveries SET state = 'expired', state_ms = $1
             WHERE rowid IN (
                SELECT r.rowid FROM receiver_deliveries r CROSS JOIN alerts a
                WHERE a.id = r.alert_id AND r.state IN ('queued', 'sent', 'rejected')
                  AND a.expires_ms <= $1)",
        )
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Retained messages due to be cleared: (topic).
    pub async fn due_clears(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT topic FROM retained_clears WHERE done_ms IS NULL AND due_ms <= $1 ORDER BY due_ms LIMIT $2",
        )
        .bind(ms(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("topic")?)).collect()
    }

    pub async fn mark_cleared(&self, topic: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE retained_clears SET done_ms = $1 WHERE topic = $2")
            .bind(ms(now))
            .bind(topic)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Tx<'_> {
    /// Marks the receivers of a published commune topic as sent (the time is kept even where
    /// a fast receipt already moved the state further).
    pub async fn mark_receivers_sent(
        &mut self,
        alert_id: &str,
        commune: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE receiver_deliveries
             SET state = CASE WHEN state = 'queued' THEN 'sent' ELSE state END,
                 state_ms = CASE WHEN state = 'queued' THEN $1 ELSE state_ms END,
                 sent_ms = COALESCE(sent_ms, $1)
             WHERE alert_id = $2 AND commune = $3 AND sent_ms IS NULL",
        )
        .bind(ms(now))
        .bind(alert_id)
        .bind(commune)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The registered receiver, if it is registered and not removed.
    pub async fn registered_receiver(&mut self, receiver_id: &str) -> Result<Option<RegisteredReceiver>> {
        Ok(self
            .registered_receivers(&[receiver_id])
            .await?
            .remove(receiver_id))
    }

    /// Those of `receiver_ids` that are registered and not removed, by id.
    pub async fn registered_receivers(
        &mut self,
        receiver_ids: &[&str],
    ) -> Result<HashMap<String, RegisteredReceiver>> {
        let mut found = HashMap::new();
        for chunk in statement_chunks(receiver_ids) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT receiver_id, commune, password_hash, trusted_keys, firmware, registered_ms, drills
                 FROM receiver_registry WHERE receiver_id IN ({}) AND removed_ms IS NULL",
                placeholders.join(", ")
            );
            let mut q = self.backend.multi_row(sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                let r = registered(&row)?;
                found.insert(r.receiver_id.clone(), r);
            }
        }
        Ok(found)
    }

    /// Counts a message from a receiver that is not registered, in its row while fewer
    /// than [`MAX_UNREGISTERED`] ids have one (so that operators see which ids appear);
    /// returns false, writing nothing, for a new id beyond that (made-up ids cannot grow
    /// the table).
    pub async fn count_unregistered(
        &mut self,
        receiver_id: &str,
        topic: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE unregistered_receivers SET messages = messages + 1, last_ms = $2, last_topic = $3
             WHERE receiver_id = $1",
        )
        .bind(receiver_id)
        .bind(ms(now))
        .bind(topic)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        let done = sqlx::query(
            "INSERT INTO unregistered_receivers (receiver_id, messages, last_ms, last_topic)
             SELECT $1, 1, $2, $3 WHERE (SELECT COUNT(*) FROM unregistered_receivers) < $4
             ON CONFLICT (receiver_id) DO NOTHING",
        )
        .bind(receiver_id)
        .bind(ms(now))
        .bind(topic)
        .bind(MAX_UNREGISTERED)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Of `pairs` (alert id, commune), those for which a delivery exists: the alert was
    /// sent to that commune's topic.
    pub async fn sent_to_communes(
        &mut self,
        pairs: &[(&str, &str)],
    ) -> Result<std::collections::HashSet<(String, String)>> {
        let mut found = std::collections::HashSet::new();
        for chunk in pairs.chunks(256) {
            let mut alerts: Vec<&str> = chunk.iter().map(|p| p.0).collect();
            let mut communes: Vec<&str> = chunk.iter().map(|p| p.1).collect();
            alerts.sort_unstable();
            alerts.dedup();
            communes.sort_unstable();
            communes.dedup();
            let list = |from: usize, n: usize| {
                (from..from + n)
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let sql = format!(
                "SELECT alert_id, commune FROM deliveries WHERE alert_id IN ({}) AND commune IN ({})",
                list(1, alerts.len()),
                list(1 + alerts.len(), communes.len())
            );
            // Only placeholders are formatted in; the values are bound.
            let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
            for a in &alerts {
                q = q.bind(*a);
            }
            for c in &communes {
                q = q.bind(*c);
            }
            for pair in q.fetch_all(&mut *self.tx).await? {
                if chunk.iter().any(|(a, r)| *a == pair.0 && *r == pair.1) {
                    found.insert(pair);
                }
            }
        }
        Ok(found)
    }

    /// Moves a receiver's delivery of an alert forward to `state` (never back), with the
    /// time and reason. Returns false if there is no such delivery or it is already as far.
    pub async fn advance_receiver_delivery(
        &mut self,
        alert_id: &str,
        receiver_id: &str,
        state: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let one = DeliveryAdvance {
            alert_id,
            receiver_id,
            state,
            reason,
        };
        Ok(self.advance_receiver_deliveries(&[one], now).await? == 1)
    }

    /// [`Tx::advance_receiver_delivery`] for each of `advances` in turn, up to a hundred to a
    /// statement. Returns how many moves were made.
    pub async fn advance_receiver_deliveries(
        &mut self,
        advances: &[DeliveryAdvance<'_>],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        // A statement moves a delivery at most once, so the k-th advance of one delivery
        // goes in the k-th round, and the rounds run in order: the same outcome as one
        // statement per advance.
        let mut rounds: Vec<Vec<&DeliveryAdvance<'_>>> = Vec::new();
        let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
        for a in advances {
            let k = seen.entry((a.alert_id, a.receiver_id)).or_default();
            if rounds.len() <= *k {
                rounds.push(Vec::new());
            }
            rounds[*k].push(a);
            *k += 1;
        }
        let mut moved = 0;
        for round in &rounds {
            for chunk in statement_chunks(round) {
                let sql = format!(
                    "WITH v (alert_id, receiver_id, state, reason, rnk) AS (VALUES {})
                     UPDATE receiver_deliveries SET state = v.state, state_ms = $1,
                        received_ms = CASE WHEN v.state IN ('received', 'played')
                            THEN COALESCE(receiver_deliveries.received_ms, $1) ELSE receiver_deliveries.received_ms END,
                        played_ms = CASE WHEN v.state = 'played'
                            THEN COALESCE(receiver_deliveries.played_ms, $1) ELSE receiver_deliveries.played_ms END,
                        reason = COALESCE(v.reason, receiver_deliveries.reason)
                     FROM v
                     WHERE receiver_deliveries.alert_id = v.alert_id AND receiver_deliveries.receiver_id = v.receiver_id
                       AND (CASE receiver_deliveries.state WHEN 'queued' THEN 0 WHEN 'sent' THEN 1 WHEN 'rejected' THEN 2
                            WHEN 'received' THEN 3 WHEN 'failed' THEN 4 WHEN 'superseded' THEN 5 WHEN 'expired' THEN 5
                            WHEN 'acknowledged' THEN 6 WHEN 'played' THEN 7 ELSE 8 END) < v.rnk",
                    values_list(chunk.len(), 5, 2)
                );
                let mut q = self.backend.multi_row(sql).bind(ms(now));
                for a in chunk {
                    q = q
                        .bind(a.alert_id)
                        .bind(a.receiver_id)
                        .bind(a.state)
                        .bind(a.reason)
                        .bind(rank(a.state));
                }
                moved += q.execute(&mut *self.tx).await?.rows_affected();
            }
        }
        Ok(moved)
    }

    /// The id of the Cancel that already ends `alert_id`, if one does.
    pub async fn cancelled_by(&mut self, alert_id: &str) -> Result<Option<String>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT a.id FROM alerts a, {}
             WHERE a.msg_type = 'Cancel' AND r.value = $1 LIMIT 1",
            self.backend.json_each("a.refs", "r")
        )))
        .bind(alert_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| r.try_get("id")).transpose().map_err(Into::into)
    }

    /// Writes one queued delivery per registered receiver of each commune of an alert,
    /// schedules the alert's topics to be cleared at expiry, and, for an Update or Cancel,
    /// supersedes what the referenced alerts had not yet delivered and schedules their
    /// topics to be cleared after `clear_delay`.
    /// Exercises and tests are expected only of receivers enrolled for drills.
    pub(crate) async fn track_receivers(
        &mut self,
        alert: &domain::Alert,
        topics: &[(String, String)],
        clear_delay: Duration,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let alert_id = alert.id.as_str();
        let references: Vec<String> = alert.references.iter().map(ToString::to_string).collect();
        let expires = alert.expires;
        let drill = alert.status != domain::AlertStatus::Actual;
        for (commune, topic) in topics {
            sqlx::query(
                "INSERT INTO receiver_deliveries (alert_id, receiver_id, commune, state, state_ms, online_at_issue)
                 SELECT $1, g.receiver_id, g.commune, 'queued', $2,
                    CASE WHEN EXISTS (SELECT 1 FROM receivers v WHERE v.receiver_id = g.receiver_id
                            AND v.online = 1 AND v.last_seen_ms >= $3) THEN 1 ELSE 0 END
                 FROM receiver_registry g
                 WHERE g.commune = $4 AND g.removed_ms IS NULL AND ($5 = 0 OR g.drills = 1)",
            )
            .bind(alert_id)
            .bind(ms(now))
            .bind(ms(now - crate::ONLINE_WITHIN))
            .bind(commune)
            .bind(i64::from(drill))
            .execute(&mut *self.tx)
            .await?;
            sqlx::query(
                "INSERT INTO retained_clears (topic, due_ms) VALUES ($1, $2)
                 ON CONFLICT (topic) DO UPDATE SET due_ms = CASE WHEN retained_clears.due_ms < excluded.due_ms
                    THEN retained_clears.due_ms ELSE excluded.due_ms END",
            )
            .bind(topic)
            .bind(ms(expires))
            .execute(&mut *self.tx)
            .await?;
        }
        for old in &references {
            sqlx::query(
                "INSERT INTO alert_refs (alert_id, refers_to) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(alert_id)
            .bind(old)
            .execute(&mut *self.tx)
            .await?;
            // An SMS of the old version not yet handed to a gateway is not sent at all.
            sqlx::query(
                "UPDATE sms_messages SET state = 'superseded', final_ms = $1, lease_until_ms = NULL,
                    last_error = $2
                 WHERE alert_id = $3 AND state = 'queued'",
            )
            .bind(ms(now))
            .bind(format!("superseded by {alert_id} before it was sent"))
            .bind(old)
            .execute(&mut *self.tx)
            .await?;
            // What the old version had not yet published is never published now.
            sqlx::query(
                "UPDATE deliveries SET state = 'superseded', lease_until_ms = NULL, last_error = $1
                 WHERE alert_id = $2 AND state = 'queued'",
            )
            .bind(format!("superseded by {alert_id} before it was published"))
            .bind(old)
            .execute(&mut *self.tx)
            .await?;
            sqlx::query(
                "UPDATE receiver_deliveries SET state = 'superseded', state_ms = $1, reason = $2
                 WHERE alert_id = $3 AND state IN ('queued', 'sent', 'rejected')",
            )
            .bind(ms(now))
            .bind(format!("superseded by {alert_id}"))
            .bind(old)
            .execute(&mut *self.tx)
            .await?;
            sqlx::query(
                "UPDATE retained_clears SET due_ms = CASE WHEN due_ms < $1 THEN due_ms ELSE $1 END
                 WHERE done_ms IS NULL AND topic IN (SELECT topic FROM deliveries WHERE alert_id = $2)",
            )
            .bind(ms(now + clear_delay))
            .bind(old)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }
}

fn registered(r: &sqlx::any::AnyRow) -> Result<RegisteredReceiver> {
    let keys: String = r.try_get("trusted_keys")?;
    Ok(RegisteredReceiver {
        receiver_id: r.try_get("receiver_id")?,
        commune: r.try_get("commune")?,
        password_hash: r.try_get("password_hash")?,
        trusted_keys: parse_json_list("trusted_keys", &keys)?,
        firmware: r.try_get("firmware")?,
        registered: from_ms(r.try_get("registered_ms")?)?,
        drills: r.try_get::<i64, _>("drills")? != 0,
    })
}
