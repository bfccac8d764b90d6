//! The cached-DataFrame example, run as a user runs it, twice on one
//! directory: the first invocation computes the query in its first run and
//! reads it from the cache in its second; the next invocation reads it from
//! the cache in both. Every run loads the same rows.

use std::process::Command;

fn run(dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dataframe_cache"))
        .env("ETL_CACHE_EXAMPLE_DIR", dir)
        .env("ETL_CACHE_EXAMPLE_ROWS", "400000")
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_second_run_reads_the_result_from_the_cache_and_says_what_it_saved() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path());
    assert!(
        first.contains("first run:") && first.contains("transform ran"),
        "{first}"
    );
    assert!(
        first.contains("second run:") && first.contains("transform read from the cache"),
        "{first}"
    );
    assert!(first.contains("saved"), "{first}");
    // 5 regions x 12 months.
    assert_eq!(first.matches("loaded 60 rows").count(), 2, "{first}");

    let again = run(dir.path());
    assert!(!again.contains("transform ran"), "{again}");
    assert!(
        again.contains("both runs read the result from the cache"),
        "{again}"
    );
    assert_eq!(again.matches("loaded 60 rows").count(), 2, "{again}");
}
