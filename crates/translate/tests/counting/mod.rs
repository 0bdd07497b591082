//! Property tests that count: a property checked only on the inputs that
//! decode proves nothing when none do, so these runs count the cases that
//! reached their assertions and the caller asserts a minimum.

use std::cell::Cell;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

mod ids;
use ids::without_made_up_ids;

/// Runs `check` on `cases` generated values and returns how many reached
/// the end of `check` with `Ok(true)` (`Ok(false)`: a case it skipped).
/// Prints the count, so a run shows how much was really checked.
pub fn run_counting<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) -> u32 {
    let reached = Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |v| {
        if check(v)? {
            reached.set(reached.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    // On success every case ran once (shrinking happens only on failure).
    println!(
        "{name}: {} of {cases} cases reached the assertions",
        reached.get()
    );
    reached.get()
}

/// Decoding a body from its bytes (turns decoded one at a time) gives what
/// decoding its tree gives: the same request, or an error in both. Returns
/// whether the body decoded.
#[allow(dead_code)] // not every test binary uses it
pub fn check_bytes_decode(
    client: apiproxy_translate::Format,
    body: &serde_json::Value,
) -> Result<bool, TestCaseError> {
    use apiproxy_translate::{decode_request_bytes, decode_request_limited, Format, Limits};
    let bytes = serde_json::to_vec(body).map_err(|e| TestCaseError::fail(e.to_string()))?;
    // The tree read back from the same text (a float's text round trip is
    // not exact).
    let tree: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let shape = match client {
        Format::OpenAiChat => apiproxy_translate::detect_chat_adapter(&tree).unwrap_or(client),
        _ => client,
    };
    let limits = Limits::default();
    let from_tree = decode_request_limited(client, tree, &limits);
    let from_bytes = decode_request_bytes(client, shape, &bytes, &limits);
    match (&from_tree, &from_bytes) {
        (Ok(a), Ok(b)) if without_made_up_ids(a) == without_made_up_ids(b) => Ok(true),
        (Err(_), Err(_)) => Ok(false),
        _ => Err(TestCaseError::fail(format!(
            "{body}: tree {from_tree:?} vs bytes {from_bytes:?}"
        ))),
    }
}
