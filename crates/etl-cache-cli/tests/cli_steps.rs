//! `etl-cache explain STEP` and `etl-cache stat --by-step`, on runs made by
//! a program through the library, as a user would see them.

use std::process::Command;

use etl_cache::steps::{RunOptions, Step, StepExt};
use etl_cache::{DiskCache, Value};
use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_etl-cache");

fn cli(root: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .env_remove("ETL_CACHE_URL")
        .arg("--cache")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let code = out.status.code().unwrap();
    assert!(
        code != 2,
        "{args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, stdout)
}

fn transform(rows: u32) -> Step {
    Step::new("transform")
        .code_version("v1")
        .param("rows", &rows)
}

/// Two runs with different parameters, one hit, the first result deleted.
fn seed(root: &std::path::Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = DiskCache::builder().root(root).build().await.unwrap();
        for rows in [100, 200, 200] {
            cache
                .run(&transform(rows), RunOptions::new(), || async move {
                    Ok::<_, std::io::Error>(Value::from(format!("{rows} rows")))
                })
                .await
                .unwrap();
        }
        let key = transform(100).resolve().await.unwrap().key();
        etl_cache::Cache::delete(&cache, &key).await.unwrap();
    });
}

#[test]
fn explain_shows_the_runs_what_changed_and_what_became_of_each() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    seed(&root);

    let (code, text) = cli(&root, &["explain", "transform"]);
    assert_eq!(code, 0);
    assert!(text.contains("the last 2 run(s)"), "{text}");
    assert!(text.contains("param.rows: 100 -> 200"), "{text}");
    assert!(text.contains("removed by delete 20"), "{text}");
    assert!(text.contains("cached"), "{text}");

    let (_, out) = cli(&root, &["explain", "transform", "--json"]);
    let doc: Json = serde_json::from_str(&out).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["state"]["reason"], "deleted");
    assert_eq!(runs[0]["state"]["by"], "delete");
    assert_eq!(runs[1]["state"]["reason"], "hit");
    assert_eq!(runs[1]["changed"][0]["part"], "param.rows");
    assert_eq!(runs[1]["changed"][0]["old"], "100");
    assert_eq!(runs[1]["changed"][0]["new"], "200");
    assert_eq!(
        runs[1]["manifest"]["pid"],
        serde_json::json!(std::process::id())
    );

    // A step never run: exit 1, as a miss.
    let (code, text) = cli(&root, &["explain", "never-run"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no run recorded"), "{text}");
}

#[test]
fn stat_by_step_adds_up_hits_misses_and_time_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    seed(&root);

    let (_, out) = cli(&root, &["stat", "--by-step", "--json"]);
    let doc: Json = serde_json::from_str(&out).unwrap();
    let t = &doc["steps"]["transform"];
    assert_eq!(
        (t["hits"].as_u64(), t["misses"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(t["bytes_served"], 8);
    assert_eq!(doc["total"], *t);

    let (code, text) = cli(&root, &["stat", "--by-step"]);
    assert_eq!(code, 0);
    let line = text
        .lines()
        .find(|l| l.starts_with("transform"))
        .expect("a row per step");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[1..3], ["1", "2"], "{text}");
    assert!(text.contains("(total)"), "{text}");
}
