//! Provenance tags, carried with every figure from `shared/domain` into config,
//! alerts and the API, so that a provisional number stays visibly provisional.

use std::fmt;

/// Where a figure comes from (see `shared/domain/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// Verified in a cited source.
    V,
    /// Derived by arithmetic from verified reports.
    D,
    /// Secondary: a public project or dataset, not an authority.
    S,
    /// Background knowledge, unverified.
    M,
    /// Not found in any source: no figure may carry this tag.
    NF,
}

impl Tag {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "V" => Self::V,
            "D" => Self::D,
            "S" => Self::S,
            "M" => Self::M,
            "NF" => Self::NF,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V => "V",
            Self::D => "D",
            Self::S => "S",
            Self::M => "M",
            Self::NF => "NF",
        }
    }

    /// A figure tagged S, M or NF is provisional: alerts computed from it must say so.
    pub fn is_provisional(self) -> bool {
        match self {
            Self::V | Self::D => false,
            Self::S | Self::M | Self::NF => true,
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value with its provenance tag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tagged<T> {
    pub value: T,
    pub tag: Tag,
}

impl<T> Tagged<T> {
    pub fn new(value: T, tag: Tag) -> Self {
        Self { value, tag }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verified_and_derived_figures_are_official() {
        for (s, provisional) in [("V", false), ("D", false), ("S", true), ("M", true), ("NF", true)] {
            let tag = Tag::parse(s).unwrap();
            assert_eq!(tag.is_provisional(), provisional, "{s}");
            assert_eq!(tag.as_str(), s);
        }
        assert_eq!(Tag::parse("v"), None);
    }
}
