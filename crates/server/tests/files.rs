#![allow(clippy::unwrap_used)]
//! The files `canhbao serve` makes in its data directory (the database and its journal,
//! the signing keys, the bootstrap token) are readable by its own user alone.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{spawn_service, wait_ready};
use testkit::kannel::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_file_the_service_makes_is_its_own_users_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("service.log");
    let port = free_port();
    let _service = spawn_service(
        &log,
        &[
            ("CANHBAO__SERVICE__DATA_DIR", data.display().to_string()),
            ("CANHBAO__HTTP__LISTEN", format!("127.0.0.1:{port}")),
            ("CANHBAO__MQTT__LISTEN", format!("127.0.0.1:{}", free_port())),
        ],
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    wait_ready(&http, &format!("http://127.0.0.1:{port}"), &log).await;
    let mut seen = Vec::new();
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
                stack.push(path);
            } else {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
                seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    for wanted in ["canhbao.db", "admin.token"] {
        assert!(seen.iter().any(|f| f == wanted), "{wanted} not among {seen:?}");
    }
}
