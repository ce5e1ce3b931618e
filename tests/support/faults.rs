//! The fault campaign's one output line. Each fault test (`tests/faults_*.rs`, named
//! `fault_NN_...`) injects one fault into the real binary, measures what happened, and
//! prints one `FAULT` line before asserting; `ci/faults` runs the tests one by one and
//! turns those lines, with each test's result, into the table of RELIABILITY.md.

/// Prints the line `ci/faults` reads. `observed` must be built from what the test
/// measured (times, counts, files, log lines), never restate `expected`: the table is
/// evidence, not a claim. `|` inside the texts is replaced so the columns stay apart.
pub fn report(fault: u32, name: &str, expected: &str, observed: &str) {
    let clean = |s: &str| s.replace('|', "/").replace('\n', " ");
    println!(
        "FAULT {fault:02} | {} | {} | {}",
        clean(name),
        clean(expected),
        clean(observed)
    );
}
