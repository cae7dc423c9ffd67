//! The wire format of the receiver contract, version 1: the signed envelope, the alert
//! payload inside it, and the receipt, heartbeat and status messages that receivers send.
//! `docs/receiver-protocol.md` is the normative text; this module is its implementation.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use domain::{Alert, AlertOrigin, CommuneCode, ReceiptStatus, SignedPayload};

/// The protocol version carried in every message as `"v"`.
pub const PROTOCOL_VERSION: u32 = 1;

/// What is published on an alert topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Base64 (standard alphabet, padded) of the exact payload bytes.
    pub payload: String,
    pub key_id: String,
    /// Base64 of the 64-byte Ed25519 signature over the payload bytes.
    pub sig: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepeatWire {
    pub times: u8,
    pub interval_s: u32,
}

/// The alert payload, as JSON inside the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertPayload {
    pub v: u32,
    pub id: String,
    pub province: String,
    pub msg_type: String,
    pub status: String,
    pub references: Vec<String>,
    pub sent: String,
    pub effective: String,
    pub expires: String,
    pub hazard: String,
    pub risk_level: Option<u8>,
    pub alarm_level: Option<u8>,
    pub class: String,
    pub communes: Vec<String>,
    pub headline: String,
    pub description: String,
    pub instruction: String,
    pub repeat: RepeatWire,
    pub origin: String,
    pub provisional: bool,
    pub provisional_reasons: Vec<String>,
    /// A renewal (§8): the same level with a later expiry. Absent (false) otherwise, so
    /// that older payloads keep their bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub renewal: bool,
}

/// A receiver's report on one alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptWire {
    pub v: u32,
    pub alert_id: String,
    pub receiver_id: String,
    pub commune: Option<String>,
    pub status: String,
    pub at: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Periodic health from a receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatWire {
    pub v: u32,
    pub receiver_id: String,
    pub commune: String,
    pub at: String,
    pub uptime_s: u64,
    pub last_played: Option<String>,
}

/// Retained on the status topic: `online` on connect, `offline` as the last will.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusWire {
    pub v: u32,
    pub receiver_id: String,
    pub commune: String,
    pub state: String,
}

/// Serializes a wire struct. These structs hold only strings, numbers and lists, for
/// which serde_json cannot fail.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    #[allow(clippy::expect_used)]
    serde_json::to_vec(value).expect("wire structs of strings and numbers always serialize")
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The payload of an alert, as the bytes that get signed.
pub fn alert_payload(alert: &Alert) -> AlertPayload {
    AlertPayload {
        v: PROTOCOL_VERSION,
        id: alert.id.to_string(),
        province: alert.province.to_string(),
        msg_type: alert.msg_type.code().to_owned(),
        status: alert.status.code().to_owned(),
        references: alert.references.iter().map(ToString::to_string).collect(),
        sent: timestamp(alert.sent),
        effective: timestamp(alert.effective),
        expires: timestamp(alert.expires),
        hazard: alert.hazard.code().to_owned(),
        risk_level: alert.risk_level.map(|l| l.get()),
        alarm_level: alert.alarm_level.map(|l| l.number()),
        class: alert.class.code().to_owned(),
        communes: alert.communes.iter().map(ToString::to_string).collect(),
        headline: alert.headline.clone(),
        description: alert.description.clone(),
        instruction: alert.instruction.clone(),
        repeat: RepeatWire {
            times: alert.repeat.times,
            interval_s: alert.repeat.interval_s,
        },
        origin: match alert.origin {
            AlertOrigin::Computed { .. } => "computed",
            AlertOrigin::Officer { .. } => "officer",
            AlertOrigin::Bulletin { .. } => "bulletin",
        }
        .to_owned(),
        provisional: alert.is_provisional(),
        provisional_reasons: alert.provisional.clone(),
        renewal: alert.follow == Some(domain::FollowKind::Renew),
    }
}

/// The key id of a public key: `ed25519:` and the first 16 hex digits of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("ed25519:{hex}")
}

/// Signs payloads with one Ed25519 key.
pub struct Signer {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&key.verifying_key());
        Self { key, key_id }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Serializes and signs an alert's payload.
    pub fn sign_alert(&self, alert: &Alert) -> SignedPayload {
        let payload = to_json(&alert_payload(alert));
        self.sign(payload)
    }

    pub fn sign(&self, payload: Vec<u8>) -> SignedPayload {
        let sig = self.key.sign(&payload);
        SignedPayload {
            payload,
            key_id: self.key_id.clone(),
            sig: B64.encode(sig.to_bytes()),
        }
    }
}

/// The envelope bytes published for a stored signed payload.
pub fn envelope_bytes(signed: &SignedPayload) -> Vec<u8> {
    let env = Envelope {
        payload: B64.encode(&signed.payload),
        key_id: signed.key_id.clone(),
        sig: signed.sig.clone(),
    };
    to_json(&env)
}

/// The public keys a receiver trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(HashMap<String, VerifyingKey>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("public key for {key_id:?} is not valid base64: {reason}")]
    Base64 { key_id: String, reason: String },
    #[error("public key for {key_id:?} is not a valid 32-byte Ed25519 key")]
    Invalid { key_id: String },
    #[error("key id {given:?} does not match its public key, whose id is {actual:?}")]
    IdMismatch { given: String, actual: String },
}

impl TrustedKeys {
    /// Adds a key given as base64; `key_id` must be the key's own id.
    pub fn add_base64(&mut self, key_id: &str, public_b64: &str) -> Result<(), KeyError> {
        let bytes = B64.decode(public_b64.trim()).map_err(|e| KeyError::Base64 {
            key_id: key_id.to_owned(),
            reason: e.to_string(),
        })?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Invalid {
            key_id: key_id.to_owned(),
        })?;
        let key = VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::Invalid {
            key_id: key_id.to_owned(),
        })?;
        let actual = self::key_id(&key);
        if actual != key_id {
            return Err(KeyError::IdMismatch {
                given: key_id.to_owned(),
                actual,
            });
        }
        self.0.insert(actual, key);
        Ok(())
    }

    pub fn add(&mut self, key: VerifyingKey) {
        self.0.insert(key_id(&key), key);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `key_id` is trusted.
    pub fn contains(&self, key_id: &str) -> bool {
        self.0.contains_key(key_id)
    }

    /// The trusted key ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.0.keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Why a receiver drops an envelope. The code goes into the `rejected` receipt's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("unknown_key: key id {0:?} is not trusted")]
    UnknownKey(String),
    #[error("bad_signature: the signature does not verify over the payload")]
    BadSignature,
    #[error("unsupported_version: payload version {0} is not 1")]
    UnsupportedVersion(u32),
    #[error("id_mismatch: payload id {payload:?} is not the topic's alert id {topic:?}")]
    IdMismatch { payload: String, topic: String },
    #[error("wrong_commune: commune {0} is not among the alert's targets")]
    WrongCommune(String),
    #[error("expired: the alert expired at {0}")]
    Expired(String),
    #[error("replayed: alert {0} was already played")]
    Replayed(String),
}

impl Rejection {
    /// The short machine code (`bad_signature`, `expired`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::IdMismatch { .. } => "id_mismatch",
            Self::WrongCommune(_) => "wrong_commune",
            Self::Expired(_) => "expired",
            Self::Replayed(_) => "replayed",
        }
    }
}

/// The commune state (protocol §4a), as JSON inside a signed envelope on
/// `{prefix}/{province}/{commune}/state`: what the service's store holds for the commune,
/// so that a receiver never has to guess from the order the broker delivers in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommuneStateWire {
    pub v: u32,
    /// `"commune_state"`: a state is never mistaken for an alert.
    pub kind: String,
    pub province: String,
    pub commune: String,
    /// Grows with every alert of the commune: the newest state has the highest.
    pub seq: i64,
    /// When the newest message the state lists was issued (1970-01-01T00:00:00Z when it
    /// lists none). A signed time: it never lies ahead of the service's clock.
    pub as_of: String,
    /// Every message of the commune not yet expired that nothing replaced.
    pub live: Vec<LiveWire>,
    /// Every message an Update or Cancel replaced, until it and its replacement expire.
    pub replaced: Vec<ReplacedWire>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveWire {
    pub id: String,
    pub expires: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacedWire {
    pub id: String,
    /// The newest message that replaces it.
    pub by: String,
    /// Until when to remember it: the later of its own and its replacement's expiry.
    pub until: String,
}

/// The `kind` of a commune state.
pub const COMMUNE_STATE: &str = "commune_state";

impl CommuneStateWire {
    /// Builds the state of `commune` from the store's record. The same record gives the
    /// same bytes, so a receiver verifies a repeated state once.
    pub fn new(province: &str, commune: &str, state: &domain::CommuneState) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            kind: COMMUNE_STATE.to_owned(),
            province: province.to_owned(),
            commune: commune.to_owned(),
            seq: state.seq,
            as_of: timestamp(state.newest_sent.unwrap_or(DateTime::<Utc>::UNIX_EPOCH)),
            live: state
                .live
                .iter()
                .map(|(id, expires)| LiveWire {
                    id: id.clone(),
                    expires: timestamp(*expires),
                })
                .collect(),
            replaced: state
                .replaced
                .iter()
                .map(|(id, by, until)| ReplacedWire {
                    id: id.clone(),
                    by: by.clone(),
                    until: timestamp(*until),
                })
                .collect(),
        }
    }

    /// Whether the state lists `id` as live.
    pub fn is_live(&self, id: &str) -> bool {
        self.live.iter().any(|l| l.id == id)
    }

    /// The entry that says `id` was replaced, if one does.
    pub fn replaced(&self, id: &str) -> Option<&ReplacedWire> {
        self.replaced.iter().find(|r| r.id == id)
    }
}

/// Checks the signature of an envelope and returns its payload bytes.
fn signed_payload(bytes: &[u8], keys: &TrustedKeys) -> Result<Vec<u8>, Rejection> {
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| Rejection::Malformed(format!("envelope: {e}")))?;
    let payload = B64
        .decode(&env.payload)
        .map_err(|e| Rejection::Malformed(format!("payload base64: {e}")))?;
    let key = keys
        .0
        .get(&env.key_id)
        .ok_or_else(|| Rejection::UnknownKey(env.key_id.clone()))?;
    let sig_bytes = B64
        .decode(&env.sig)
        .map_err(|e| Rejection::Malformed(format!("sig base64: {e}")))?;
    let sig = Signature::from_slice(&sig_bytes).map_err(|_| Rejection::BadSignature)?;
    key.verify(&payload, &sig).map_err(|_| Rejection::BadSignature)?;
    Ok(payload)
}

/// Verifies a commune state envelope for `commune`: the key, the signature, the version,
/// the kind and the commune.
pub fn verify_state(
    bytes: &[u8],
    keys: &TrustedKeys,
    commune: &CommuneCode,
) -> Result<CommuneStateWire, Rejection> {
    let payload = signed_payload(bytes, keys)?;
    let state: CommuneStateWire =
        serde_json::from_slice(&payload).map_err(|e| Rejection::Malformed(format!("state: {e}")))?;
    if state.v != PROTOCOL_VERSION {
        return Err(Rejection::UnsupportedVersion(state.v));
    }
    if state.kind != COMMUNE_STATE {
        return Err(Rejection::Malformed(format!("state kind {:?}", state.kind)));
    }
    if state.commune != commune.as_str() {
        return Err(Rejection::WrongCommune(commune.to_string()));
    }
    Ok(state)
}

/// Verifies an envelope from the alert topic of `topic_alert_id`, addressed to `commune`,
/// at `now`, in the order the protocol prescribes: shape, key, signature, then content.
/// Replays are the receiver's own check, since only it knows what it has played.
pub fn verify_envelope(
    bytes: &[u8],
    keys: &TrustedKeys,
    topic_alert_id: &str,
    commune: &CommuneCode,
    now: DateTime<Utc>,
) -> Result<AlertPayload, Rejection> {
    let payload = signed_payload(bytes, keys)?;
    let alert: AlertPayload =
        serde_json::from_slice(&payload).map_err(|e| Rejection::Malformed(format!("payload: {e}")))?;
    if alert.v != PROTOCOL_VERSION {
        return Err(Rejection::UnsupportedVersion(alert.v));
    }
    if alert.id != topic_alert_id {
        return Err(Rejection::IdMismatch {
            payload: alert.id,
            topic: topic_alert_id.to_owned(),
        });
    }
    if !alert.communes.iter().any(|c| c == commune.as_str()) {
        return Err(Rejection::WrongCommune(commune.to_string()));
    }
    let expires: DateTime<Utc> = alert
        .expires
        .parse()
        .map_err(|e| Rejection::Malformed(format!("expires {:?}: {e}", alert.expires)))?;
    if now >= expires {
        return Err(Rejection::Expired(alert.expires));
    }
    Ok(alert)
}

/// The key set (protocol §10a), as JSON inside an envelope signed by a provisioning key,
/// retained on `{prefix}/{province}/keys`: the complete list of the alert-signing keys a
/// receiver trusts from now on, and the ids revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySetWire {
    pub v: u32,
    /// `"key_set"`: a key set is never mistaken for an alert or a state.
    pub kind: String,
    pub province: String,
    /// Grows with every change: a receiver applies only a higher one than it holds.
    pub seq: u64,
    pub issued: String,
    /// Every alert-signing key to trust; nothing else is trusted after it applies.
    pub keys: Vec<KeyWire>,
    /// Keys withdrawn for good: never trusted again, even if provisioned at enrolment.
    pub revoked: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyWire {
    pub key_id: String,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
}

/// The `kind` of a key set.
pub const KEY_SET: &str = "key_set";

/// A verified key set: its content and the keys it makes trusted.
#[derive(Debug, Clone)]
pub struct KeySet {
    pub wire: KeySetWire,
    pub keys: TrustedKeys,
}

/// Verifies a key set envelope against the provisioning keys (never the alert-signing
/// keys): the signature, version, kind and province, and every key in it. One bad key
/// rejects the whole set, so that a receiver applies a set whole or not at all.
pub fn verify_key_set(bytes: &[u8], provisioning: &TrustedKeys, province: &str) -> Result<KeySet, Rejection> {
    let payload = signed_payload(bytes, provisioning)?;
    let set: KeySetWire =
        serde_json::from_slice(&payload).map_err(|e| Rejection::Malformed(format!("key set: {e}")))?;
    if set.v != PROTOCOL_VERSION {
        return Err(Rejection::UnsupportedVersion(set.v));
    }
    if set.kind != KEY_SET {
        return Err(Rejection::Malformed(format!("key set kind {:?}", set.kind)));
    }
    if set.province != province {
        return Err(Rejection::Malformed(format!(
            "key set of province {:?}, not {province:?}",
            set.province
        )));
    }
    let mut keys = TrustedKeys::default();
    for k in &set.keys {
        keys.add_base64(&k.key_id, &k.public_key)
            .map_err(|e| Rejection::Malformed(format!("key set: {e}")))?;
        if set.revoked.contains(&k.key_id) {
            return Err(Rejection::Malformed(format!(
                "key set both trusts and revokes {}",
                k.key_id
            )));
        }
    }
    if keys.is_empty() {
        return Err(Rejection::Malformed("key set trusts no key".into()));
    }
    Ok(KeySet { wire: set, keys })
}

/// The key id an envelope names, if it parses (for a receiver that must tell which key
/// signed what it holds).
pub fn envelope_key_id(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<Envelope>(bytes).ok().map(|e| e.key_id)
}

/// A receipt to publish, as bytes.
pub fn receipt_bytes(
    alert_id: &str,
    receiver_id: &str,
    commune: &str,
    status: ReceiptStatus,
    reason: Option<String>,
    at: DateTime<Utc>,
) -> Vec<u8> {
    let r = ReceiptWire {
        v: PROTOCOL_VERSION,
        alert_id: alert_id.to_owned(),
        receiver_id: receiver_id.to_owned(),
        commune: Some(commune.to_owned()),
        status: status.code().to_owned(),
        at: timestamp(at),
        reason,
    };
    to_json(&r)
}

#[cfg(test)]
mod key_set_tests {
    use super::*;

    fn set(seq: u64, keys: &[&Signer], revoked: &[&str]) -> KeySetWire {
        KeySetWire {
            v: PROTOCOL_VERSION,
            kind: KEY_SET.into(),
            province: "20".into(),
            seq,
            issued: "2026-12-07T00:00:00Z".into(),
            keys: keys
                .iter()
                .map(|k| KeyWire {
                    key_id: k.key_id().to_owned(),
                    public_key: B64.encode(k.public_key().as_bytes()),
                })
                .collect(),
            revoked: revoked.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn a_key_set_verifies_only_against_the_provisioning_key_and_only_whole() {
        let provisioning = Signer::from_seed(&[9; 32]);
        let (a, b) = (Signer::from_seed(&[1; 32]), Signer::from_seed(&[2; 32]));
        let mut trust = TrustedKeys::default();
        trust.add(provisioning.public_key());
        let sign = |s: &KeySetWire, by: &Signer| envelope_bytes(&by.sign(to_json(s)));

        let ok = verify_key_set(&sign(&set(4, &[&b], &[a.key_id()]), &provisioning), &trust, "20").unwrap();
        assert_eq!(ok.wire.seq, 4);
        assert_eq!(ok.keys.ids(), [b.key_id().to_owned()]);

        // Signed by an alert key: not a provisioning key.
        let mut alert_keys = TrustedKeys::default();
        alert_keys.add(a.public_key());
        assert_eq!(
            verify_key_set(&sign(&set(5, &[&a], &[]), &a), &trust, "20")
                .unwrap_err()
                .code(),
            "unknown_key"
        );
        // The alert keys never verify a key set, whoever signed it.
        assert!(verify_key_set(&sign(&set(5, &[&a], &[]), &provisioning), &alert_keys, "20").is_err());
        // Another province's set.
        assert!(verify_key_set(&sign(&set(5, &[&a], &[]), &provisioning), &trust, "01").is_err());
        // One bad key spoils the whole set.
        let mut bad = set(5, &[&a, &b], &[]);
        bad.keys[1].public_key = "AAAA".into();
        assert!(verify_key_set(&sign(&bad, &provisioning), &trust, "20").is_err());
        let mut wrong_id = set(5, &[&a], &[]);
        wrong_id.keys[0].key_id = b.key_id().to_owned();
        assert!(verify_key_set(&sign(&wrong_id, &provisioning), &trust, "20").is_err());
        // Empty, or trusting and revoking the same key.
        assert!(verify_key_set(&sign(&set(5, &[], &[]), &provisioning), &trust, "20").is_err());
        assert!(verify_key_set(&sign(&set(5, &[&a], &[a.key_id()]), &provisioning), &trust, "20").is_err());
        // A changed byte.
        let mut bytes = sign(&set(6, &[&a], &[]), &provisioning);
        let env: Envelope = serde_json::from_slice(&bytes).unwrap();
        let forged = String::from_utf8(B64.decode(&env.payload).unwrap())
            .unwrap()
            .replace("\"seq\":6", "\"seq\":7");
        bytes = to_json(&Envelope {
            payload: B64.encode(forged),
            ..env
        });
        assert_eq!(
            verify_key_set(&bytes, &trust, "20").unwrap_err().code(),
            "bad_signature"
        );
    }
}
