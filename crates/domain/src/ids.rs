//! Identifiers and administrative codes. Each is a newtype with a private field and
//! a validating constructor; all of them are safe to put in an MQTT topic level.

use std::fmt;

/// Why a string is not a valid id or code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} {value} must be exactly {len} ASCII digits")]
    Digits {
        kind: &'static str,
        /// The value, quoted and cut ([`crate::quote`]).
        value: String,
        len: usize,
    },
    #[error("{kind} {value} must be 1 to {max} characters of {allowed}")]
    Charset {
        kind: &'static str,
        /// The value, quoted and cut ([`crate::quote`]).
        value: String,
        max: usize,
        allowed: &'static str,
    },
}

fn digits(kind: &'static str, value: &str, len: usize) -> Result<String, IdError> {
    if value.len() == len && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_owned())
    } else {
        Err(IdError::Digits {
            kind,
            value: crate::quote(value),
            len,
        })
    }
}

fn charset(
    kind: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(u8) -> bool,
) -> Result<String, IdError> {
    if !value.is_empty() && value.len() <= max && value.bytes().all(ok) {
        Ok(value.to_owned())
    } else {
        Err(IdError::Charset {
            kind,
            value: crate::quote(value),
            max,
            allowed,
        })
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

string_id!(
    /// A province code of the national administrative list: two digits (Lạng Sơn is `20`).
    ProvinceCode
);
impl ProvinceCode {
    pub fn new(value: &str) -> Result<Self, IdError> {
        digits("province code", value, 2).map(Self)
    }
}

string_id!(
    /// A commune or ward code of the 2025 administrative list: five digits.
    CommuneCode
);
impl CommuneCode {
    pub fn new(value: &str) -> Result<Self, IdError> {
        digits("commune code", value, 5).map(Self)
    }
}

string_id!(
    /// A hydro-meteorological station id, such as `HUULUNG`: uppercase ASCII letters,
    /// digits and `_`, at most 32.
    StationId
);
impl StationId {
    pub fn new(value: &str) -> Result<Self, IdError> {
        charset(
            "station id",
            value,
            32,
            "A-Z, 0-9 and _",
            |b| matches!(b, b'A'..=b'Z' | b'0'..=b'9' | b'_'),
        )
        .map(Self)
    }
}

string_id!(
    /// A loudspeaker receiver's identity: ASCII letters, digits, `-` and `_`, at most 64.
    /// It is the last level of its receipt, heartbeat and status topics.
    ReceiverId
);
impl ReceiverId {
    pub fn new(value: &str) -> Result<Self, IdError> {
        charset("receiver id", value, 64, "A-Z, a-z, 0-9, - and _", |b| {
            b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
        })
        .map(Self)
    }
}

string_id!(
    /// An alert message identifier (one per CAP message, so an Update has its own).
    /// ASCII letters, digits, `-`, `_` and `.`, at most 64, so that it is one topic level.
    AlertId
);
impl AlertId {
    pub fn new(value: &str) -> Result<Self, IdError> {
        charset("alert id", value, 64, "A-Z, a-z, 0-9, -, _ and .", |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
        })
        .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_accept_only_their_exact_shape() {
        let cases: &[(&str, bool)] = &[
            ("06385", true),
            ("6385", false),
            ("063850", false),
            ("0638a", false),
            ("", false),
            ("06/85", false),
        ];
        for (input, ok) in cases {
            assert_eq!(CommuneCode::new(input).is_ok(), *ok, "commune {input:?}");
        }
        assert!(ProvinceCode::new("20").is_ok());
        assert!(ProvinceCode::new("2").is_err());
    }

    #[test]
    fn ids_never_contain_mqtt_topic_separators_or_wildcards() {
        for bad in ["a/b", "a+b", "a#", "", " x", "é"] {
            assert!(ReceiverId::new(bad).is_err(), "{bad:?}");
            assert!(AlertId::new(bad).is_err(), "{bad:?}");
            assert!(StationId::new(bad).is_err(), "{bad:?}");
        }
        assert!(StationId::new("huulung").is_err());
        assert!(StationId::new("HUULUNG").is_ok());
        assert!(ReceiverId::new("loa-06385-01").is_ok());
    }

    #[test]
    fn errors_quote_the_offending_input() {
        let e = CommuneCode::new("12").unwrap_err().to_string();
        assert_eq!(e, "commune code \"12\" must be exactly 5 ASCII digits");
    }
}
