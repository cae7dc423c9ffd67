//! Duty officers' warnings: draft → pending approval → issued, with the two-person rule.
//!
//! The pure half ([`ApprovalPolicy`], [`check`]) decides who may do what, and whether a
//! second person must approve. The [`Pipeline`] methods do it: each issue is one
//! transaction holding the warning's guarded state change, the signed alert with its
//! outbox rows, its audit record and, for an override, a notice to every approver.

use chrono::{DateTime, Utc};
use domain::{Alert, AlertId, MessageClass};
use store::{StoreError, WarningRecord};

use crate::compose::{self, Draft, DraftError};
use crate::{Pipeline, new_alert_id};

/// When a second person must approve (the two-person rule); from `[approval]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalPolicy {
    /// Off: every officer issues alone (for a drill desk, never for production).
    pub enabled: bool,
    /// Alerts at this risk level or above need approval.
    pub min_level: u8,
    /// Alerts of these loudspeaker classes need approval, whatever their level.
    pub classes: Vec<MessageClass>,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            min_level: 3,
            classes: vec![MessageClass::Emergency],
        }
    }
}

impl ApprovalPolicy {
    /// Whether an alert of `level` and `class` falls under the rule.
    pub fn covers(&self, level: Option<u8>, class: Option<MessageClass>) -> bool {
        self.enabled
            && (level.is_some_and(|l| l >= self.min_level)
                || class.is_some_and(|c| self.classes.contains(&c)))
    }

    /// Why `alert` needs a second person, or `None` if its officer may issue it alone.
    pub fn needs_approval(&self, alert: &Alert) -> Option<String> {
        if !self.enabled {
            return None;
        }
        if let Some(l) = alert.risk_level.filter(|l| l.get() >= self.min_level) {
            return Some(format!("risk level {} is {} or above", l.get(), self.min_level));
        }
        self.classes
            .contains(&alert.class)
            .then(|| format!("{} class", alert.class.code()))
    }
}

/// A warning's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningState {
    Draft,
    Pending,
    Issued,
    Discarded,
}

impl WarningState {
    pub fn code(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Pending => "pending",
            Self::Issued => "issued",
            Self::Discarded => "discarded",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Draft, Self::Pending, Self::Issued, Self::Discarded]
            .into_iter()
            .find(|s| s.code() == code)
    }
}

/// What a person does to a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Edit,
    Submit,
    Discard,
    Approve,
    Reject,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Self::Edit => "edit",
            Self::Submit => "submit",
            Self::Discard => "discard",
            Self::Approve => "approve",
            Self::Reject => "return",
        }
    }
}

/// Why a person may not act on a warning.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LifecycleError {
    #[error("only its author {author} may {verb} warning {id}")]
    NotAuthor {
        id: String,
        author: String,
        verb: &'static str,
    },
    #[error("{actor} submitted warning {id} and may not approve or return it: a second person must")]
    OwnSubmission { id: String, actor: String },
    #[error("warning {id} is {state}; only a {needed} warning can be {verb}ed")]
    WrongState {
        id: String,
        state: &'static str,
        needed: &'static str,
        verb: &'static str,
    },
}

/// Whether `actor` may do `action` to a warning of `author` in `state`.
pub fn check(
    id: &str,
    state: WarningState,
    author: &str,
    actor: &str,
    action: Action,
) -> Result<(), LifecycleError> {
    let needed = match action {
        Action::Edit | Action::Submit | Action::Discard => WarningState::Draft,
        Action::Approve | Action::Reject => WarningState::Pending,
    };
    if state != needed {
        return Err(LifecycleError::WrongState {
            id: id.to_owned(),
            state: state.code(),
            needed: needed.code(),
            verb: action.verb().trim_end_matches('e'),
        });
    }
    match action {
        Action::Edit | Action::Submit | Action::Discard if actor != author => {
            Err(LifecycleError::NotAuthor {
                id: id.to_owned(),
                author: author.to_owned(),
                verb: action.verb(),
            })
        }
        Action::Approve | Action::Reject if actor == author => Err(LifecycleError::OwnSubmission {
            id: id.to_owned(),
            actor: actor.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Why a warning could not move on.
#[derive(Debug, thiserror::Error)]
pub enum WarningError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error("warning {0} changed while this request ran; read it again")]
    Raced(String),
    #[error("warning {id} is at version {now}, not {read}: it changed since it was read; read it again")]
    StaleVersion { id: String, read: i64, now: i64 },
    #[error("an Update keeps the status of what it updates: {id} is {was}, the draft is {draft}")]
    UpdateStatus { id: String, was: String, draft: String },
    #[error("no warning {0:?}")]
    NotFound(String),
    #[error("the alert it updates, {0}, does not exist")]
    UpdateMissing(String),
    #[error("alert {id} was already replaced by {by}; update {by} instead")]
    NotLatest { id: String, by: String },
    #[error("alert {0} is a Cancel and cannot be updated")]
    UpdateOfCancel(String),
    #[error("alert {id} expired at {expires}; issue a new alert instead")]
    UpdateOfExpired { id: String, expires: DateTime<Utc> },
    #[error(
        "an Update must still reach every commune of {id} ({missing}); cancel it and issue a new alert to narrow it"
    )]
    UpdateNarrows { id: String, missing: String },
    #[error("an emergency override needs a reason")]
    OverrideWithoutReason,
    #[error("the draft cannot be issued: {0}")]
    Draft(#[from] DraftError),
    #[error("stored alert {0} is not valid: {1}")]
    Corrupt(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Desk(#[from] crate::DeskError),
}

/// What a submit did.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// Waiting for a second person, because of the reason given.
    Pending(String),
    /// Issued at once (the rule did not apply, or was overridden).
    Issued(Box<Alert>),
}

/// How a warning gets issued.
struct Issue<'a> {
    from: WarningState,
    actor: &'a str,
    /// The approver and their note.
    reviewer: Option<(&'a str, &'a str)>,
    /// Why the two-person rule applied, when it did.
    needed: Option<&'a str>,
    override_reason: Option<&'a str>,
    /// Whether the alert may go by SMS.
    sms: bool,
}

impl Pipeline {
    /// The alert `draft` would be when issued now, for warning `w`: an Update of the
    /// alert it updates (referencing every earlier message of the incident), or a new
    /// alert. Reads the updated alert; checks it is still the latest inside the issuing
    /// transaction.
    async fn warning_alert(
        &self,
        w: &WarningRecord,
        draft: &Draft,
        now: DateTime<Utc>,
    ) -> Result<(Alert, Option<String>), WarningError> {
        let mut references = Vec::new();
        let mut replaces_approved = None;
        if let Some(prev) = &w.updates {
            let a = self
                .store
                .get_alert(prev)
                .await?
                .ok_or_else(|| WarningError::UpdateMissing(prev.clone()))?;
            if a.msg_type == "Cancel" {
                return Err(WarningError::UpdateOfCancel(a.id));
            }
            if a.expires <= now {
                return Err(WarningError::UpdateOfExpired {
                    id: a.id,
                    expires: a.expires,
                });
            }
            if a.status != draft.status.code() {
                return Err(WarningError::UpdateStatus {
                    id: a.id,
                    was: a.status,
                    draft: draft.status.code().to_owned(),
                });
            }
            // Replacing an alert the rule covered (lowering it, say) needs a second person
            // as much as raising one.
            let class = MessageClass::from_code(&a.class);
            let level = a.risk_level.and_then(|l| u8::try_from(l).ok());
            if self.approval().covers(level, class) {
                replaces_approved = Some(format!(
                    "it replaces alert {}, which the two-person rule covers",
                    a.id
                ));
            }
            let missing: Vec<&str> = a
                .communes
                .iter()
                .filter(|c| !draft.communes.iter().any(|d| d.as_str() == c.as_str()))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(WarningError::UpdateNarrows {
                    id: a.id.clone(),
                    missing: missing.join(", "),
                });
            }
            for r in a.references.iter().chain([&a.id]) {
                references
                    .push(AlertId::new(r).map_err(|e| WarningError::Corrupt(a.id.clone(), e.to_string()))?);
            }
        }
        let alert = compose::officer_alert(
            draft,
            &w.author,
            new_alert_id(),
            references,
            self.topics(),
            self.policy(),
            now,
        )?;
        Ok((alert, replaces_approved))
    }

    /// Submits a draft as its author. Issued at once when the two-person rule does not
    /// apply, or when `override_reason` is given (an emergency override: flagged, and
    /// every approver is told); otherwise it waits for approval.
    pub async fn submit_warning(
        &self,
        w: &WarningRecord,
        draft: &Draft,
        actor: &str,
        override_reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Submitted, WarningError> {
        check(&w.id, state(w)?, &w.author, actor, Action::Submit)?;
        if override_reason.is_some_and(|r| r.trim().is_empty()) {
            return Err(WarningError::OverrideWithoutReason);
        }
        let (alert, replaces) = self.warning_alert(w, draft, now).await?;
        let needed = self
            .approval()
            .needs_approval(&alert)
            .or(replaces.filter(|_| self.approval().enabled));
        match (needed, override_reason) {
            (Some(why), None) => {
                let mut tx = self.store.begin().await?;
                if !tx.submit_warning(&w.id, w.version, &why, now).await? {
                    return Err(WarningError::Raced(w.id.clone()));
                }
                tx.append_audit(
                    actor,
                    "warning.submit",
                    &w.id,
                    &serde_json::json!({"needs_approval": why, "level": alert.risk_level.map(|l| l.get()),
                        "class": alert.class.code(), "communes": alert.communes.len()}),
                    now,
                )
                .await?;
                tx.commit().await?;
                Ok(Submitted::Pending(why))
            }
            (needed, override_reason) => {
                let issue = Issue {
                    from: WarningState::Draft,
                    actor,
                    reviewer: None,
                    needed: needed.as_deref(),
                    // An override only means something where the rule applied.
                    override_reason: needed.as_ref().and(override_reason.map(str::trim)),
                    sms: draft.sms,
                };
                self.issue(w, alert, &issue, now)
                    .await
                    .map(|a| Submitted::Issued(Box::new(a)))
            }
        }
    }

    /// Approves a pending warning as a second person, and issues it. `read` is the
    /// version the approver read: an approval never covers content its approver did not
    /// see.
    pub async fn approve_warning(
        &self,
        w: &WarningRecord,
        draft: &Draft,
        read: i64,
        actor: &str,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<Alert, WarningError> {
        check(&w.id, state(w)?, &w.author, actor, Action::Approve)?;
        if read != w.version {
            return Err(WarningError::StaleVersion {
                id: w.id.clone(),
                read,
                now: w.version,
            });
        }
        let (alert, _) = self.warning_alert(w, draft, now).await?;
        let issue = Issue {
            from: WarningState::Pending,
            actor,
            reviewer: Some((actor, note)),
            needed: None,
            override_reason: None,
            sms: draft.sms,
        };
        self.issue(w, alert, &issue, now).await
    }

    /// Returns a pending warning to its author as a draft, with why; the author is told.
    pub async fn return_warning(
        &self,
        w: &WarningRecord,
        actor: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), WarningError> {
        check(&w.id, state(w)?, &w.author, actor, Action::Reject)?;
        let mut tx = self.store.begin().await?;
        if !tx.return_warning(&w.id, actor, reason, now).await? {
            return Err(WarningError::Raced(w.id.clone()));
        }
        tx.notify(
            &w.author,
            "returned",
            Some(&w.id),
            None,
            &format!("{actor} returned warning {} to you: {reason}", w.id),
            now,
        )
        .await?;
        tx.append_audit(
            actor,
            "warning.return",
            &w.id,
            &serde_json::json!({ "reason": reason }),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes the alert, moves the warning to issued (only from `how.from`), records the
    /// action and tells the approvers of an override: all in one transaction.
    async fn issue(
        &self,
        w: &WarningRecord,
        alert: Alert,
        how: &Issue<'_>,
        now: DateTime<Utc>,
    ) -> Result<Alert, WarningError> {
        let approvers = match how.override_reason {
            Some(_) => self.store.approvers().await?,
            None => vec![],
        };
        let mut tx = self.store.begin().await?;
        if let Some(prev) = &w.updates
            && let Some(by) = tx.superseded_by(prev).await?
        {
            return Err(WarningError::NotLatest { id: prev.clone(), by });
        }
        self.write_alert(&mut tx, &alert, now).await?;
        if !how.sms {
            tx.alert_without_sms(alert.id.as_str()).await?;
        }
        if !tx
            .issue_warning(
                &w.id,
                how.from.code(),
                w.version,
                alert.id.as_str(),
                how.reviewer,
                how.needed,
                how.override_reason,
                now,
            )
            .await?
        {
            // Dropping the transaction takes the alert back.
            return Err(WarningError::Raced(w.id.clone()));
        }
        let action = match (how.reviewer, how.override_reason) {
            (Some(_), _) => "warning.approve",
            (None, Some(_)) => "warning.override",
            (None, None) => "warning.issue",
        };
        tx.append_audit(
            how.actor,
            action,
            &w.id,
            &serde_json::json!({
                "alert_id": alert.id.as_str(),
                "msg_type": alert.msg_type.code(),
                "references": alert.references.iter().map(AlertId::as_str).collect::<Vec<_>>(),
                "status": alert.status.code(),
                "level": alert.risk_level.map(|l| l.get()),
                "class": alert.class.code(),
                "communes": alert.communes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "author": w.author,
                "note": how.reviewer.map(|r| r.1),
                "override_reason": how.override_reason,
                "channels": {"loudspeaker": "queued", "sms": if how.sms { "per fallback rules" } else { "off" }},
            }),
            now,
        )
        .await?;
        if let Some(reason) = how.override_reason {
            let text = format!(
                "EMERGENCY OVERRIDE: {} issued alert {} ({}) without approval: {reason}",
                how.actor, alert.id, alert.headline
            );
            for a in approvers.iter().filter(|a| a.as_str() != how.actor) {
                tx.notify(a, "override", Some(&w.id), Some(alert.id.as_str()), &text, now)
                    .await?;
            }
        }
        tx.commit().await?;
        self.wake();
        tracing::info!(warning = %w.id, alert_id = %alert.id, action, "warning issued");
        Ok(alert)
    }
}

fn state(w: &WarningRecord) -> Result<WarningState, WarningError> {
    WarningState::from_code(&w.state)
        .ok_or_else(|| WarningError::Corrupt(w.id.clone(), format!("state {:?}", w.state)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_author_edits_and_submits_and_only_someone_else_approves() {
        use Action::*;
        use WarningState::*;
        assert_eq!(check("w", Draft, "an", "an", Submit), Ok(()));
        assert!(matches!(
            check("w", Draft, "an", "binh", Submit),
            Err(LifecycleError::NotAuthor { .. })
        ));
        assert!(matches!(
            check("w", Draft, "an", "binh", Edit),
            Err(LifecycleError::NotAuthor { .. })
        ));
        assert_eq!(check("w", Pending, "an", "binh", Approve), Ok(()));
        assert!(matches!(
            check("w", Pending, "an", "an", Approve),
            Err(LifecycleError::OwnSubmission { .. })
        ));
        assert!(matches!(
            check("w", Pending, "an", "an", Reject),
            Err(LifecycleError::OwnSubmission { .. })
        ));
        assert!(matches!(
            check("w", Draft, "an", "binh", Approve),
            Err(LifecycleError::WrongState { .. })
        ));
        assert!(matches!(
            check("w", Issued, "an", "binh", Approve),
            Err(LifecycleError::WrongState { .. })
        ));
        assert!(matches!(
            check("w", Pending, "an", "an", Edit),
            Err(LifecycleError::WrongState { .. })
        ));
        assert!(matches!(
            check("w", Discarded, "an", "an", Submit),
            Err(LifecycleError::WrongState { .. })
        ));
    }
}
