//! The receiver contract, checked against its normative text (`docs/receiver-protocol.md`).

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use domain::CommuneCode;
use protocol::wire::{Envelope, verify_envelope};
use protocol::{Signer, TrustedKeys};

const DOC: &str = include_str!("../../../docs/receiver-protocol.md");
const TOPIC_ID: &str = "8051d214-8e83-4b0f-91da-87e51aec6543";

/// The fenced block that follows `<!-- marker -->` in the document.
fn block(marker: &str) -> &'static str {
    let start = DOC.find(&format!("<!-- {marker} -->")).expect("marker present");
    let rest = &DOC[start..];
    let open = rest.find("```").unwrap();
    let body = &rest[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    &body[..body.find("```").unwrap()]
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{name} in key block"))
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn example() -> (TrustedKeys, Vec<u8>, CommuneCode) {
    let key = block("example-key");
    let mut keys = TrustedKeys::default();
    keys.add_base64(field(key, "key_id:"), field(key, "public key:"))
        .unwrap();
    let envelope = block("example-envelope").trim().as_bytes().to_vec();
    (keys, envelope, CommuneCode::new("06385").unwrap())
}

#[test]
fn the_protocol_documents_example_envelope_verifies() {
    let (keys, envelope, commune) = example();
    let alert = verify_envelope(&envelope, &keys, TOPIC_ID, &commune, at("2026-10-09T02:00:00Z")).unwrap();
    assert_eq!(alert.id, TOPIC_ID);
    assert_eq!(alert.class, "emergency");

    // The decoded payload is byte for byte the one the document shows.
    let env: Envelope = serde_json::from_slice(&envelope).unwrap();
    let payload = B64.decode(&env.payload).unwrap();
    assert_eq!(payload, block("example-payload").trim().as_bytes());

    // The example key is what its printed seed derives.
    let key = block("example-key");
    let seed: [u8; 32] = B64.decode(field(key, "seed:")).unwrap().try_into().unwrap();
    let signer = Signer::from_seed(&seed);
    assert_eq!(signer.key_id(), field(key, "key_id:"));
    assert_eq!(
        B64.encode(signer.public_key().as_bytes()),
        field(key, "public key:")
    );
}

#[test]
fn the_example_is_refused_once_expired_or_altered_or_misaddressed() {
    let (keys, envelope, commune) = example();
    let check = |bytes: &[u8], topic: &str, commune: &CommuneCode, now: &str| {
        verify_envelope(bytes, &keys, topic, commune, at(now))
            .map(|_| ())
            .map_err(|e| e.code())
    };
    let ok_time = "2026-10-09T02:00:00Z";
    assert_eq!(
        check(&envelope, TOPIC_ID, &commune, "2026-10-09T07:05:00Z"),
        Err("expired")
    );
    assert_eq!(
        check(&envelope, "another-id", &commune, ok_time),
        Err("id_mismatch")
    );
    assert_eq!(
        check(&envelope, TOPIC_ID, &CommuneCode::new("06391").unwrap(), ok_time),
        Err("wrong_commune")
    );

    // Every single-byte change of the payload breaks the signature.
    let env: Envelope = serde_json::from_slice(&envelope).unwrap();
    let payload = B64.decode(&env.payload).unwrap();
    for i in (0..payload.len()).step_by(37) {
        let mut p = payload.clone();
        p[i] ^= 0x01;
        let forged = Envelope {
            payload: B64.encode(&p),
            ..env.clone()
        };
        let bytes = serde_json::to_vec(&forged).unwrap();
        assert_eq!(
            check(&bytes, TOPIC_ID, &commune, ok_time),
            Err("bad_signature"),
            "byte {i}"
        );
    }

    let unknown = Envelope {
        key_id: "ed25519:0000000000000000".into(),
        ..env.clone()
    };
    assert_eq!(
        check(
            &serde_json::to_vec(&unknown).unwrap(),
            TOPIC_ID,
            &commune,
            ok_time
        ),
        Err("unknown_key")
    );
    for junk in [
        &b"not json"[..],
        b"{}",
        br#"{"payload":"!!","key_id":"x","sig":"y"}"#,
    ] {
        assert_eq!(check(junk, TOPIC_ID, &commune, ok_time), Err("malformed"));
    }
}

#[test]
fn a_key_list_entry_must_match_its_own_key_id() {
    let mut keys = TrustedKeys::default();
    let err = keys
        .add_base64(
            "ed25519:0000000000000000",
            "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=",
        )
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(keys.add_base64("ed25519:x", "not base64!").is_err());
    assert!(keys.is_empty());
}
