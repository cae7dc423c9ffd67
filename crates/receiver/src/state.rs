//! The versions a receiver has played, kept so that a restart does not replay them
//! (`docs/receiver-protocol.md` §5, step 8).
//!
//! The file holds one JSON line per played version: the alert id, the SHA-256 of the
//! exact envelope bytes, and the alert's `expires`. Lines are only appended, each with an
//! fsync, before the version starts playing, so that a crash mid-play can never lead to a
//! second play. A crash mid-write leaves at most a torn last line, which loading ignores.
//! Loading also drops versions that have expired (an expired alert is rejected before the
//! replay check anyway) and rewrites the file without them.
//!
//! It also holds the ids that an accepted Update or Cancel replaced before this receiver
//! played them (`superseded_by` instead of `sha256`, until the replacing alert expires):
//! no version of those may play any more.
//!
//! One receiver owns one file; two processes must not share it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The SHA-256 of an envelope's exact bytes, as 64 lowercase hex digits.
pub fn envelope_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {path:?}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write the state file {path:?}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// One line of the file: exactly one of `sha256` and `superseded_by` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    superseded_by: Option<String>,
    /// RFC 3339, as on the wire.
    expires: String,
}

/// What the log knows of an alert id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// This version (the SHA-256 of its envelope) played, or started to.
    Played { sha256: String },
    /// The alert `by` replaced it before it played here.
    Superseded { by: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    mark: Mark,
    expires: DateTime<Utc>,
}

impl Version {
    fn line(&self, id: &str) -> Line {
        let (sha256, superseded_by) = match &self.mark {
            Mark::Played { sha256 } => (Some(sha256.clone()), None),
            Mark::Superseded { by } => (None, Some(by.clone())),
        };
        Line {
            id: id.to_owned(),
            sha256,
            superseded_by,
            expires: protocol::wire::timestamp(self.expires),
        }
    }
}

/// What loading found, for the operator's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Versions kept: still live.
    pub kept: usize,
    /// Versions dropped because they expired.
    pub expired: usize,
    /// A last line without its newline: a write cut short by a crash. Ignored.
    pub torn: bool,
    /// Complete lines that do not parse (not written by this program). Ignored.
    pub corrupt: usize,
}

impl LoadReport {
    /// Whether the file holds anything that loading dropped, so it should be rewritten.
    fn needs_rewrite(&self) -> bool {
        self.expired > 0 || self.torn || self.corrupt > 0
    }
}

/// Played (and superseded) alerts by id, in memory and, when opened on a file, on disk.
#[derive(Debug, Default)]
pub struct PlayedLog {
    path: Option<PathBuf>,
    versions: HashMap<String, Version>,
}

/// A line to append to the file: blocking I/O, so the agent runs [`Append::write`] off
/// its event loop.
#[derive(Debug)]
pub struct Append {
    path: PathBuf,
    line: String,
}

impl Append {
    /// Appends the line and waits until it is on disk.
    pub fn write(self) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        f.write_all(self.line.as_bytes()).map_err(err)?;
        f.sync_data().map_err(err)
    }
}

impl PlayedLog {
    /// A log kept in memory only: a restart forgets it.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Loads the log at `path`, creating it (and its directory) if needed, drops what
    /// expired by `now` and rewrites the file if loading dropped anything. Opening is
    /// also the check that the file can be written, so that a receiver fails at start-up
    /// rather than on its first alert.
    pub fn open(path: &Path, now: DateTime<Utc>) -> Result<(Self, LoadReport), StateError> {
        let read_err = |source| StateError::Read {
            path: path.to_owned(),
            source,
        };
        let write_err = |source| StateError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(read_err(e)),
        };
        let (versions, report) = parse(&bytes, now);
        let log = Self {
            path: Some(path.to_owned()),
            versions,
        };
        if report.needs_rewrite() {
            log.rewrite()?;
        } else {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(write_err)?;
        }
        Ok((log, report))
    }

    /// What the log knows of `id`.
    pub fn get(&self, id: &str) -> Option<&Mark> {
        self.versions.get(id).map(|v| &v.mark)
    }

    /// The digest of the version of `id` that was played, if any.
    pub fn played(&self, id: &str) -> Option<&str> {
        match self.get(id) {
            Some(Mark::Played { sha256 }) => Some(sha256),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.versions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Records that this version of `id` is about to play. The memory is updated at once;
    /// the returned line, if the log has a file, must be written before the playing
    /// starts.
    #[must_use = "the line must be written before the alert plays"]
    pub fn record(&mut self, id: &str, sha256: &str, expires: DateTime<Utc>) -> Option<Append> {
        let mark = Mark::Played {
            sha256: sha256.to_owned(),
        };
        self.insert(id, mark, expires)
    }

    /// Records that the alert `by`, which expires at `expires`, replaced `id` before it
    /// played here. Like [`PlayedLog::record`], the line must be written.
    #[must_use = "the line must be written"]
    /// A mark already kept longer stays as it is: "replaced" is remembered until the later
    /// of both expiries (protocol §8), whichever message told it first.
    pub fn record_superseded(&mut self, id: &str, by: &str, expires: DateTime<Utc>) -> Option<Append> {
        if let Some(v) = self.versions.get(id)
            && matches!(v.mark, Mark::Superseded { .. })
            && v.expires >= expires
        {
            return None;
        }
        let mark = Mark::Superseded { by: by.to_owned() };
        self.insert(id, mark, expires)
    }

    fn insert(&mut self, id: &str, mark: Mark, expires: DateTime<Utc>) -> Option<Append> {
        let version = Version { mark, expires };
        let line = version.line(id);
        self.versions.insert(id.to_owned(), version);
        let path = self.path.clone()?;
        let mut text = String::from_utf8_lossy(&protocol::wire::to_json(&line)).into_owned();
        text.push('\n');
        Some(Append { path, line: text })
    }

    /// Forgets, in memory, the versions that expired by `now`. The file drops them at the
    /// next load.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.versions.retain(|_, v| now < v.expires);
    }

    /// Replaces the file with the live versions: a temporary file, fsync, rename, and an
    /// fsync of the directory so that the rename itself survives a crash.
    fn rewrite(&self) -> Result<(), StateError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut entries: Vec<(&String, &Version)> = self.versions.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut text = Vec::new();
        for (id, v) in entries {
            text.extend(protocol::wire::to_json(&v.line(id)));
            text.push(b'\n');
        }
        let mut f = File::create(&tmp).map_err(err)?;
        f.write_all(&text).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Not every platform can open a directory to sync it; the rename is done.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Parses the file's bytes, keeping the versions live at `now`. Never fails: a torn last
/// line or a line that does not parse is counted and skipped. A later line for the same
/// id wins.
fn parse(bytes: &[u8], now: DateTime<Utc>) -> (HashMap<String, Version>, LoadReport) {
    let mut report = LoadReport::default();
    let mut versions = HashMap::new();
    let mut pieces: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // After the last newline: empty if the file ends cleanly, else a torn write.
    if let Some(last) = pieces.pop()
        && !last.is_empty()
    {
        report.torn = true;
    }
    for piece in pieces {
        if piece.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(piece) {
            Some((id, v)) if now < v.expires => {
                versions.insert(id, v);
            }
            Some(_) => report.expired += 1,
            None => report.corrupt += 1,
        }
    }
    report.kept = versions.len();
    (versions, report)
}

fn parse_line(bytes: &[u8]) -> Option<(String, Version)> {
    let l: Line = serde_json::from_slice(bytes).ok()?;
    let expires = l.expires.parse::<DateTime<Utc>>().ok()?;
    let mark = match (l.sha256, l.superseded_by) {
        (Some(sha256), None) => Mark::Played { sha256 },
        (None, Some(by)) => Mark::Superseded { by },
        _ => return None,
    };
    Some((l.id, Version { mark, expires }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-10-09T02:00:00Z";

    fn line(id: &str, sha: &str, expires: &str) -> String {
        format!("{{\"id\":\"{id}\",\"sha256\":\"{sha}\",\"expires\":\"{expires}\"}}\n")
    }

    #[test]
    fn parsing_keeps_live_versions_and_skips_what_it_cannot_trust() {
        // (file content, ids kept, report)
        let live = line("a", "aa", "2026-10-09T07:00:00Z");
        let dead = line("b", "bb", "2026-10-09T01:00:00Z");
        let cases: Vec<(String, Vec<&str>, LoadReport)> = vec![
            (String::new(), vec![], LoadReport::default()),
            (
                format!("{live}{dead}"),
                vec!["a"],
                LoadReport {
                    kept: 1,
                    expired: 1,
                    ..Default::default()
                },
            ),
            (
                // A crash cut the last line short.
                format!("{live}{{\"id\":\"c\",\"sha2"),
                vec!["a"],
                LoadReport {
                    kept: 1,
                    torn: true,
                    ..Default::default()
                },
            ),
            (
                format!("not json\n{live}\n\n{{\"id\":1}}\n"),
                vec!["a"],
                LoadReport {
                    kept: 1,
                    corrupt: 2,
                    ..Default::default()
                },
            ),
            (
                // Superseded ids are kept too; a line with both marks, or neither, is not
                // one this program writes.
                concat!(
                    r#"{"id":"s","superseded_by":"u","expires":"2026-10-09T07:00:00Z"}"#,
                    "\n",
                    r#"{"id":"x","sha256":"xx","superseded_by":"u","expires":"2026-10-09T07:00:00Z"}"#,
                    "\n",
                    r#"{"id":"y","expires":"2026-10-09T07:00:00Z"}"#,
                    "\n",
                    r#"{"id":"z","sha256":"zz","expires":"yesterday"}"#,
                    "\n",
                )
                .to_owned(),
                vec!["s"],
                LoadReport {
                    kept: 1,
                    corrupt: 3,
                    ..Default::default()
                },
            ),
        ];
        for (text, ids, report) in cases {
            let (versions, got) = parse(text.as_bytes(), t(NOW));
            let mut kept: Vec<&str> = versions.keys().map(String::as_str).collect();
            kept.sort_unstable();
            assert_eq!(kept, ids, "{text:?}");
            assert_eq!(got, report, "{text:?}");
        }
        // Bytes that are not UTF-8 do not panic either.
        let (_, r) = parse(b"\xff\xfe\n\xc3", t(NOW));
        assert_eq!((r.corrupt, r.torn), (1, true));
    }

    #[test]
    fn a_recorded_version_survives_a_reopen_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/rx.state");
        let (mut log, report) = PlayedLog::open(&path, t(NOW)).unwrap();
        assert_eq!(report, LoadReport::default());
        assert!(path.exists(), "opening creates the file and its directory");

        let digest = envelope_digest(b"envelope");
        log.record("a", &digest, t("2026-10-09T03:00:00Z"))
            .unwrap()
            .write()
            .unwrap();
        log.record("b", "bb", t("2026-10-09T05:00:00Z"))
            .unwrap()
            .write()
            .unwrap();

        log.record_superseded("c", "b", t("2026-10-09T05:00:00Z"))
            .unwrap()
            .write()
            .unwrap();

        let (log, _) = PlayedLog::open(&path, t(NOW)).unwrap();
        assert_eq!(log.played("a"), Some(digest.as_str()));
        assert_eq!(log.played("b"), Some("bb"));
        assert_eq!(log.played("c"), None);
        assert_eq!(log.get("c"), Some(&Mark::Superseded { by: "b".into() }));
        assert_eq!(log.get("d"), None);

        // After a's expiry, loading drops it and rewrites the file without it.
        let (log, report) = PlayedLog::open(&path, t("2026-10-09T04:00:00Z")).unwrap();
        assert_eq!((report.kept, report.expired), (2, 1));
        assert_eq!(log.played("a"), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"id\":\"b\",\"sha256\":\"bb\",\"expires\":\"2026-10-09T05:00:00Z\"}}\n\
                 {{\"id\":\"c\",\"superseded_by\":\"b\",\"expires\":\"2026-10-09T05:00:00Z\"}}\n"
            )
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_cannot_spoil_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rx.state");
        let whole = line("a", "aa", "2026-10-09T07:00:00Z");
        std::fs::write(&path, format!("{whole}{{\"id\":\"b\",\"sha")).unwrap();

        let (mut log, report) = PlayedLog::open(&path, t(NOW)).unwrap();
        assert!(report.torn);
        assert_eq!(log.played("a"), Some("aa"));
        // The torn fragment is gone, so the next line starts on a line of its own.
        log.record("c", "cc", t("2026-10-09T07:00:00Z"))
            .unwrap()
            .write()
            .unwrap();
        let (log, report) = PlayedLog::open(&path, t(NOW)).unwrap();
        assert_eq!(
            report,
            LoadReport {
                kept: 2,
                ..Default::default()
            }
        );
        assert_eq!(log.played("c"), Some("cc"));
    }

    #[test]
    fn pruning_forgets_expired_versions_and_memory_logs_write_nothing() {
        let mut log = PlayedLog::in_memory();
        assert!(log.record("a", "aa", t("2026-10-09T03:00:00Z")).is_none());
        assert!(log.record("b", "bb", t("2026-10-09T05:00:00Z")).is_none());
        log.prune(t("2026-10-09T04:00:00Z"));
        assert_eq!((log.played("a"), log.played("b")), (None, Some("bb")));
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn replaced_is_remembered_until_the_later_of_both_expiries() {
        let mut log = PlayedLog::in_memory();
        // The commune state says: replaced by U, until the original's expiry (06:00).
        let _ = log.record_superseded("a", "u", t("2026-10-09T06:00:00Z"));
        // U itself expires sooner (03:00): that must not shorten the memory.
        let _ = log.record_superseded("a", "u", t("2026-10-09T03:00:00Z"));
        log.prune(t("2026-10-09T04:00:00Z"));
        assert_eq!(
            log.get("a"),
            Some(&Mark::Superseded { by: "u".into() }),
            "still replaced after the Update expired"
        );
        log.prune(t("2026-10-09T06:00:00Z"));
        assert_eq!(log.get("a"), None);
    }

    #[test]
    fn digests_are_sha256_in_hex() {
        assert_eq!(
            envelope_digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
