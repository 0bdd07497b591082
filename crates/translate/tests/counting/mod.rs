//! Property tests that count: a property checked only on the inputs that
//! decode proves nothing when none do, so these runs count the cases that
//! reached their assertions and the caller asserts a minimum.

use std::cell::Cell;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

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
