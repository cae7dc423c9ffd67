//! The SMS contact directory's CSV import format. Pure: every bad row is named by its line
//! and field, and a file with any bad row is refused whole, so that a directory is never
//! half imported.
//!
//! ```text
//! name,phone,commune,role,language,opt_out
//! "Nguyễn Văn An, chủ tịch",0912345678,06385,commune_chair,vi,no
//! ```
//!
//! `role` is `commune_chair`, `village_head` or `resident`; `language` defaults to `vi`;
//! `opt_out` is `yes`/`no` (or `true`/`false`, `1`/`0`), `no` when empty. Fields may be
//! quoted with `"` (a quote inside is written `""`).

use domain::{CommuneCode, PhoneNumber};

use crate::station::RowError;

/// Who a contact is, for targeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactRole {
    CommuneChair,
    VillageHead,
    Resident,
}

impl ContactRole {
    pub fn code(self) -> &'static str {
        match self {
            Self::CommuneChair => "commune_chair",
            Self::VillageHead => "village_head",
            Self::Resident => "resident",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [Self::CommuneChair, Self::VillageHead, Self::Resident]
            .into_iter()
            .find(|r| r.code() == code)
    }

    /// Officials get the fallback SMS; residents are subscribers.
    pub fn is_official(self) -> bool {
        !matches!(self, Self::Resident)
    }
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub name: String,
    pub phone: PhoneNumber,
    pub commune: CommuneCode,
    pub role: ContactRole,
    pub language: String,
    pub opted_out: bool,
}

const COLUMNS: [&str; 6] = ["name", "phone", "commune", "role", "language", "opt_out"];

/// The most rows one import takes.
pub const MAX_ROWS: usize = 100_000;

/// Splits one CSV line into fields, with `"` quoting.
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            ('"', false) => return Err("a quote inside an unquoted field".into()),
            (',', false) => {
                out.push(std::mem::take(&mut cur).trim().to_owned());
                was_quoted = false;
            }
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    out.push(cur.trim().to_owned());
    Ok(out)
}

/// Parses a directory CSV for a province whose communes are `communes`.
pub fn parse_csv(text: &str, communes: &[CommuneCode]) -> Result<Vec<Contact>, Vec<RowError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let err = |line: usize, field: &str, detail: String| RowError {
        field: format!("line {}.{field}", line + 1),
        detail,
    };
    let Some((n, header)) = lines.next() else {
        return Err(vec![err(0, "header", "the file is empty".into())]);
    };
    let header = fields(header).map_err(|e| vec![err(n, "header", e)])?;
    let mut index = [0usize; 6];
    let mut errors = Vec::new();
    for (i, col) in COLUMNS.iter().enumerate() {
        match header.iter().position(|h| h.eq_ignore_ascii_case(col)) {
            Some(p) => index[i] = p,
            None if *col == "language" || *col == "opt_out" => index[i] = usize::MAX,
            None => errors.push(err(n, "header", format!("column {col:?} is missing"))),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut contacts: Vec<Contact> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (n, line) in lines {
        if contacts.len() + errors.len() >= MAX_ROWS {
            errors.push(err(n, "row", format!("more than {MAX_ROWS} rows in one import")));
            break;
        }
        let f = match fields(line) {
            Ok(f) => f,
            Err(e) => {
                errors.push(err(n, "row", e));
                continue;
            }
        };
        let get = |i: usize| f.get(index[i]).map(String::as_str).unwrap_or("");
        let before = errors.len();
        let name = get(0).to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            errors.push(err(n, "name", "name is required (at most 200 characters)".into()));
        }
        let phone = PhoneNumber::parse(get(1)).map_err(|e| errors.push(err(n, "phone", e.to_string())));
        let commune = CommuneCode::new(get(2))
            .map_err(|e| e.to_string())
            .and_then(|c| {
                if communes.contains(&c) {
                    Ok(c)
                } else {
                    Err(format!("commune {c} is not a commune of the province"))
                }
            })
            .map_err(|e| errors.push(err(n, "commune", e)));
        let role = ContactRole::from_code(get(3)).ok_or_else(|| {
            errors.push(err(
                n,
                "role",
                format!(
                    "role {:?} must be commune_chair, village_head or resident",
                    get(3)
                ),
            ))
        });
        let language = match get(4) {
            "" => "vi".to_owned(),
            l if l.len() <= 8 && l.chars().all(|c| c.is_ascii_alphabetic() || c == '-') => l.to_owned(),
            l => {
                errors.push(err(
                    n,
                    "language",
                    format!("language {l:?} is not a language tag such as vi"),
                ));
                String::new()
            }
        };
        let opted_out = match get(5).to_ascii_lowercase().as_str() {
            "" | "no" | "false" | "0" => false,
            "yes" | "true" | "1" => true,
            other => {
                errors.push(err(n, "opt_out", format!("opt_out {other:?} must be yes or no")));
                false
            }
        };
        if let Ok(p) = &phone
            && let Some(first) = seen.insert(p.clone(), n + 1)
        {
            errors.push(err(n, "phone", format!("{p} is already on line {first}")));
        }
        if let (Ok(phone), Ok(commune), Ok(role), true) = (phone, commune, role, errors.len() == before) {
            contacts.push(Contact {
                name,
                phone,
                commune,
                role,
                language,
                opted_out,
            });
        }
    }
    if errors.is_empty() {
        Ok(contacts)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn communes() -> Vec<CommuneCode> {
        ["06385", "05977"]
            .iter()
            .map(|c| CommuneCode::new(c).unwrap())
            .collect()
    }

    #[test]
    fn a_good_file_imports_with_quotes_defaults_and_normalised_numbers() {
        let csv = "\u{feff}name,phone,commune,role,language,opt_out\n\
                   \"Nguyễn Văn An, chủ tịch\",0912 345 678,06385,commune_chair,,\n\
                   \"Hoàng Thị \"\"Mai\"\"\",+84388123456,05977,resident,vi,yes\n";
        let c = parse_csv(csv, &communes()).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name, "Nguyễn Văn An, chủ tịch");
        assert_eq!(c[0].phone.as_str(), "+84912345678");
        assert_eq!((c[0].language.as_str(), c[0].opted_out), ("vi", false));
        assert_eq!(c[1].name, "Hoàng Thị \"Mai\"");
        assert!(c[1].opted_out && !c[1].role.is_official());
    }

    #[test]
    fn every_bad_row_names_its_line_and_field() {
        let csv = "name,phone,commune,role\n\
                   An,0912345678,06385,commune_chair\n\
                   ,0205 3812345,99999,mayor\n\
                   Bình,0912345678,06385,village_head\n\
                   \"Chi,0912000000,06385,resident\n";
        let errors = parse_csv(csv, &communes()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "line 3.name",
                "line 3.phone",
                "line 3.commune",
                "line 3.role",
                "line 4.phone",
                "line 5.row"
            ]
        );
        assert!(errors[1].detail.contains("landline"), "{errors:?}");
        assert!(errors[4].detail.contains("already on line 2"), "{errors:?}");
        let missing = parse_csv("name,phone\n", &communes()).unwrap_err();
        assert_eq!(missing.len(), 2, "commune and role: {missing:?}");
    }
}
