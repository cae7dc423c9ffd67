//! Vietnamese mobile numbers, normalised to E.164 (`+84` and 9 digits).
//!
//! Since the 2018 renumbering a mobile number is 10 digits nationally: `0` and a network
//! prefix starting with 3, 5, 7, 8 or 9 (background knowledge [M], not from a cited
//! source). Landlines (`02...`) cannot receive SMS, and the retired 11-digit `01...` forms
//! are refused with the reason, so that an operator can correct the directory.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("number is empty")]
    Empty,
    #[error("{0} has characters other than digits, spaces, dots, dashes, parentheses and a leading +")]
    Characters(String),
    #[error("{0} is not a Vietnamese number (+84, 84 or 0 followed by the subscriber number)")]
    NotVietnamese(String),
    #[error("{0} is a landline (02...): it cannot receive SMS")]
    Landline(String),
    #[error("{0} is an 11-digit 01... number, retired in 2018: use its new 03/05/07/08/09 form")]
    Retired(String),
    #[error("{0} does not have the 9 digits of a mobile number after +84 / 0")]
    Length(String),
    #[error("{0} has no mobile network prefix (3, 5, 7, 8 or 9 after +84 / 0)")]
    Prefix(String),
}

/// A mobile number in E.164 form, `+84` and 9 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses `+84 91 234 5678`, `84912345678`, `0912.345.678`, `(091) 234-5678`, ...
    pub fn parse(raw: &str) -> Result<Self, PhoneError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        let plus = trimmed.starts_with('+');
        let body = if plus { &trimmed[1..] } else { trimmed };
        if !body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '.' | '-' | '(' | ')'))
        {
            return Err(PhoneError::Characters(crate::quote(raw)));
        }
        let digits: String = body.chars().filter(char::is_ascii_digit).collect();
        let national = if plus {
            digits
                .strip_prefix("84")
                .ok_or_else(|| PhoneError::NotVietnamese(crate::quote(raw)))?
        } else if let Some(rest) = digits.strip_prefix("0084") {
            rest
        } else if let Some(rest) = digits.strip_prefix('0') {
            rest
        } else if let Some(rest) = digits.strip_prefix("84").filter(|r| r.len() == 9) {
            rest
        } else {
            return Err(PhoneError::NotVietnamese(crate::quote(raw)));
        };
        match national.chars().next() {
            Some('2') => return Err(PhoneError::Landline(crate::quote(raw))),
            Some('1') if national.len() == 10 => return Err(PhoneError::Retired(crate::quote(raw))),
            _ => {}
        }
        if national.len() != 9 {
            return Err(PhoneError::Length(crate::quote(raw)));
        }
        if !matches!(national.as_bytes()[0], b'3' | b'5' | b'7' | b'8' | b'9') {
            return Err(PhoneError::Prefix(crate::quote(raw)));
        }
        Ok(Self(format!("+84{national}")))
    }

    /// The E.164 form, `+84912345678`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_and_international_forms_normalise_to_e164() {
        for raw in [
            "0912345678",
            "+84912345678",
            "84912345678",
            "0084 912 345 678",
            "+84 91 234 5678",
            "0912.345.678",
            "(091) 234-5678",
        ] {
            assert_eq!(PhoneNumber::parse(raw).unwrap().as_str(), "+84912345678", "{raw}");
        }
        assert_eq!(
            PhoneNumber::parse("0388 123 456").unwrap().as_str(),
            "+84388123456"
        );
    }

    #[test]
    fn each_bad_number_says_why() {
        let why = |raw: &str| PhoneNumber::parse(raw).unwrap_err();
        assert_eq!(why(""), PhoneError::Empty);
        assert!(matches!(why("0912-345-67a"), PhoneError::Characters(_)));
        assert!(matches!(why("+1 202 555 0100"), PhoneError::NotVietnamese(_)));
        assert!(matches!(why("0205 3812345"), PhoneError::Landline(_)));
        assert!(matches!(why("01662345678"), PhoneError::Retired(_)));
        assert!(matches!(why("091234567"), PhoneError::Length(_)));
        assert!(matches!(why("0612345678"), PhoneError::Prefix(_)));
    }
}
