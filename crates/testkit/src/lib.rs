//! Test-only helpers shared by the test suites of several crates: real outside systems
//! started on free loopback ports, a TCP proxy a test can cut, and the bare HTTP/1.1 and
//! form helpers their fake servers use. Never a dependency of a product crate.

pub mod cap;
pub mod db;
pub mod http;
pub mod kannel;
pub mod nats;
pub mod postgres;
pub mod proxy;

/// Set by `.ci/run`, and only there: a test whose outside service or tool is missing fails
/// instead of skipping, so that CI never counts as passed a test it did not run.
pub const CI_ENV: &str = "CANHBAO_CI";

/// Set by `.ci/run` to a file: every test that runs against a real service or tool appends
/// a line `WHAT TEST` to it, and CI prints the tally per service.
pub const TALLY_ENV: &str = "CANHBAO_TEST_TALLY";

fn in_ci() -> bool {
    std::env::var(CI_ENV).is_ok_and(|v| !v.is_empty())
}

/// Records that the running test uses `what` (a service's variable, `tool:NAME`).
fn tally(what: &str) {
    use std::io::Write;
    let Ok(path) = std::env::var(TALLY_ENV) else {
        return;
    };
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    // One short append per line: whole lines even with many test processes at once.
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(format!("{what} {test}\n").as_bytes());
    }
}

/// The address of the real service that the environment variable `var` names
/// (`CANHBAO_TEST_MQTT_URL`, `CANHBAO_TEST_POSTGRES_URL`, ...), for a test that runs
/// against it; `None` when it is not set, after saying the test is skipped. Under CI
/// ([`CI_ENV`]) a missing service is a failure, never a skip.
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var).ok().filter(|v| !v.is_empty()) {
        Some(value) => {
            tally(var);
            Some(value)
        }
        None => {
            assert!(
                !in_ci(),
                "{var} is not set, and {CI_ENV} says this run must have it"
            );
            eprintln!("{var} is not set: skipped");
            None
        }
    }
}

/// Whether a test that needs `tool` must be skipped: never when it is `present`; when it is
/// not, a panic under CI ([`CI_ENV`]) and a skip said on stderr elsewhere.
pub fn skip_without(tool: &str, present: bool) -> bool {
    skip(tool, present, in_ci())
}

fn skip(tool: &str, present: bool, required: bool) -> bool {
    if present {
        tally(&format!("tool:{tool}"));
        return false;
    }
    assert!(
        !required,
        "{tool} is not installed, and {CI_ENV} says this run must have it"
    );
    eprintln!("skipped: {tool} is not installed");
    true
}

/// The `canhbao` binary of this build, for tests outside its package that start the
/// service (the benchmark scenarios): `target/<profile>/canhbao`, beside the test's own
/// `deps/` directory. `cargo test --workspace` builds it (the server package has
/// integration tests); a test run of one package alone needs `cargo build --bin canhbao`
/// first, and fails saying so rather than measuring nothing.
pub fn canhbao_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("a test knows its own path");
    let profile = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("a test runs from target/<profile>/deps");
    let bin = profile.join("canhbao");
    assert!(
        bin.exists(),
        "no canhbao binary at {}: run `cargo build --bin canhbao` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A name no other run uses (topic prefixes, client ids, temp dirs).
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{tag}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::skip;

    #[test]
    fn a_missing_tool_skips_on_a_bare_machine_and_runs_when_present() {
        assert!(skip("mosquitto", false, false));
        assert!(!skip("mosquitto", true, false));
        assert!(!skip("mosquitto", true, true));
    }

    #[test]
    #[should_panic(expected = "mosquitto is not installed, and CANHBAO_CI")]
    fn a_missing_tool_fails_the_test_when_ci_requires_it() {
        skip("mosquitto", false, true);
    }
}
