//! Every input the fuzzers ever crashed keyward with (`fuzz/regressions/TARGET/`, saved by
//! `scripts/fuzz`) replayed through the very same target body, so a fixed crash stays fixed
//! without libFuzzer in the suite.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let input = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&input));
        assert!(
            outcome.is_ok(),
            "{target}: {} crashes again",
            path.display()
        );
        replayed += 1;
    }
    replayed
}

#[test]
fn token_regressions() {
    replay("token", targets::token);
}

#[test]
fn check_request_regressions() {
    replay("check_request", targets::check_request);
}

#[test]
fn apply_file_regressions() {
    replay("apply_file", targets::apply_file);
}

#[test]
fn durations_regressions() {
    assert!(replay("durations", targets::durations) >= 1);
}
