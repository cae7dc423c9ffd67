#![allow(clippy::unwrap_used)]
//! The service's log as an operator's tools read it: plain text when it goes to a file or
//! journald (no colour escape codes), one JSON object per line when configured.

mod common;

use std::time::{Duration, Instant};

fn serve_until_started(log: &std::path::Path, format: Option<&str>) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("CANHBAO__SERVICE__DATA_DIR", tmp.path().display().to_string()),
        (
            "CANHBAO__HTTP__LISTEN",
            format!("127.0.0.1:{}", testkit::kannel::free_port()),
        ),
        (
            "CANHBAO__MQTT__LISTEN",
            format!("127.0.0.1:{}", testkit::kannel::free_port()),
        ),
    ];
    if let Some(f) = format {
        env.push(("CANHBAO_LOG_FORMAT", f.to_owned()));
    }
    let service = common::spawn_service(log, &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("canhbao started") {
            service.kill();
            return text;
        }
        assert!(Instant::now() < deadline, "never started:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_log_written_to_a_file_is_plain_text_and_json_when_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let text = serve_until_started(&tmp.path().join("text.log"), None);
    assert!(!text.contains('\u{1b}'), "escape codes in a log file:\n{text}");
    assert!(text.contains(" INFO ") || text.contains("INFO"), "{text}");

    let json = serve_until_started(&tmp.path().join("json.log"), Some("json"));
    let mut started = false;
    for line in json.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
        started |= v["fields"]["message"] == "canhbao started";
    }
    assert!(started, "no `canhbao started` record:\n{json}");
}
