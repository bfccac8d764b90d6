//! Entries written from Rust open as they are with pyarrow and Polars, and
//! an IPC file written by pyarrow reads back through the cache as batches.
//!
//! The Python side is `tests/interop.py`, run by the interpreter of the
//! virtual environment `scripts/install-test-servers.sh` installs pyarrow
//! and polars into (`$ETL_CACHE_ARROW_PYTHON`, else
//! `$ETL_CACHE_TEST_SERVERS_DIR/arrow-venv/bin/python`, default
//! `~/.cache/etl-cache-test-servers`). Without it the tests fail when `CI`
//! is set, and otherwise say why and return early.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    StructArray,
};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use common::set_raw;
use etl_cache_arrow::{ArrowCacheExt, ArrowOptions, IpcCompression};
use etl_cache_core::{Cache, CacheExt, Kind, SetOptions};
use etl_cache_fs::DiskCache;
use futures::TryStreamExt;
use serde_json::Value as Json;

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ETL_CACHE_ARROW_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let dir = match std::env::var_os("ETL_CACHE_TEST_SERVERS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/etl-cache-test-servers"),
    };
    let p = dir.join("arrow-venv/bin/python");
    if p.is_file() {
        return Some(p);
    }
    let msg = "pyarrow and polars are not installed: run scripts/install-test-servers.sh \
               (or set ETL_CACHE_ARROW_PYTHON)";
    if std::env::var_os("CI").is_some() {
        panic!("{msg}; CI must run the interop tests");
    }
    eprintln!("skipping: {msg}");
    None
}

/// Runs `interop.py MODE FILE`; its standard output.
fn run_python(python: &Path, mode: &str, file: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(mode)
        .arg(file)
        .output()
        .expect("the Python interpreter runs");
    assert!(
        out.status.success(),
        "interop.py {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

const ROWS: usize = 3000;
const BATCH: usize = 1000;

fn schema() -> SchemaRef {
    let point = Fields::from(vec![
        Field::new("x", DataType::Float64, false),
        Field::new("y", DataType::Float64, false),
    ]);
    Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("id", DataType::Int64, false)
                .with_metadata([("unit".to_owned(), "row".to_owned())].into()),
            Field::new("score", DataType::Float64, true),
            Field::new("name", DataType::Utf8, false),
            Field::new_dictionary("category", DataType::Int32, DataType::Utf8, false),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
                true,
            ),
            Field::new("point", DataType::Struct(point), false),
        ],
        [("pipeline".to_owned(), "etl-cache".to_owned())].into(),
    ))
}

fn score(i: usize) -> Option<f64> {
    (!i.is_multiple_of(7)).then_some(i as f64 * 0.5)
}

fn batch(schema: &SchemaRef, start: usize) -> RecordBatch {
    let ids: Vec<usize> = (start..start + BATCH).collect();
    let mut tags = ListBuilder::new(Int32Builder::new());
    for &i in &ids {
        if i % 11 == 0 {
            tags.append_null();
        } else {
            tags.append_value((0..(i % 4) as i32).map(Some));
        }
    }
    let values = StringArray::from(vec!["a", "b", "c"]);
    let keys = arrow_array::Int32Array::from_iter_values(ids.iter().map(|i| (i % 3) as i32));
    let category = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).unwrap();
    let point = StructArray::from(vec![
        (
            Arc::new(Field::new("x", DataType::Float64, false)),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|&i| i as f64),
            )) as ArrayRef,
        ),
        (
            Arc::new(Field::new("y", DataType::Float64, false)),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|&i| -(i as f64)),
            )) as ArrayRef,
        ),
    ]);
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids.iter().map(|&i| i as i64))),
            Arc::new(Float64Array::from_iter(ids.iter().map(|&i| score(i)))),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("name-{i}")),
            )),
            Arc::new(category),
            Arc::new(tags.finish()),
            Arc::new(point),
        ],
    )
    .unwrap()
}

/// What interop.py must report, worked out from the rows written.
fn expected() -> Json {
    let ids = 0..ROWS;
    let id_sum: usize = ids.clone().sum();
    let score_nulls = ids.clone().filter(|i| score(*i).is_none()).count();
    let score_sum: f64 = ids.clone().filter_map(score).sum();
    let tags_values: usize = ids.clone().filter(|i| i % 11 != 0).map(|i| i % 4).sum();
    let tags_nulls = ids.clone().filter(|i| i % 11 == 0).count();
    let point_x_sum: f64 = ids.clone().map(|i| i as f64).sum();
    let counts: BTreeMap<&str, usize> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(k, v)| (*v, ids.clone().filter(|i| i % 3 == k).count()))
        .collect();
    let columns = ["id", "score", "name", "category", "tags", "point"];
    let first = ["name-0", "name-1", "name-2"];
    let polars = serde_json::json!({
        "rows": ROWS, "columns": columns, "id_sum": id_sum, "score_nulls": score_nulls,
        "names_first": first, "category_counts": counts,
    });
    serde_json::json!({
        "pyarrow": {
            "rows": ROWS, "batches": ROWS / BATCH, "columns": columns,
            "schema_metadata": {"pipeline": "etl-cache"}, "id_metadata": {"unit": "row"},
            "category_is_dictionary": true, "id_sum": id_sum, "score_nulls": score_nulls,
            "score_sum": score_sum, "names_first": first,
            "names_last": format!("name-{}", ROWS - 1), "category_counts": counts,
            "tags_values": tags_values, "tags_nulls": tags_nulls, "point_x_sum": point_x_sum,
        },
        "polars_read": polars.clone(),
        "polars_scan": polars,
    })
}

/// An entry written with `set_batches`, its payload saved as it is stored
/// (as `etl-cache get KEY -o FILE` saves it), reads in pyarrow, in
/// `polars.read_ipc` and in `polars.scan_ipc` as the table written: rows,
/// nulls, dictionaries, lists, structs, schema and field metadata. Each
/// IPC body compression.
#[tokio::test]
async fn pyarrow_and_polars_read_entries_written_from_rust() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(dir.path().join("cache")).await.unwrap();
    let schema = schema();
    for compression in [
        IpcCompression::Zstd,
        IpcCompression::Lz4,
        IpcCompression::None,
    ] {
        let key = format!("interop/{compression:?}");
        let batches: Vec<Result<RecordBatch, std::io::Error>> = (0..ROWS)
            .step_by(BATCH)
            .map(|s| Ok(batch(&schema, s)))
            .collect();
        let opts = ArrowOptions::new().compression(compression);
        cache
            .set_batches(&key, schema.clone(), futures::stream::iter(batches), opts)
            .await
            .unwrap();
        let payload = cache.get_bytes(&key).await.unwrap().expect("just written");
        let file = dir.path().join(format!("{compression:?}.arrow"));
        std::fs::write(&file, &payload).unwrap();
        let seen: Json = serde_json::from_str(&run_python(&python, "read", &file)).unwrap();
        assert_eq!(seen, expected(), "{compression:?}");
    }
}

/// An IPC file written by pyarrow (zstd bodies, a dictionary column, schema
/// metadata), stored in the cache as Arrow data, reads back through
/// `get_batches` as the rows pyarrow wrote.
#[tokio::test]
async fn an_ipc_file_written_by_pyarrow_reads_back_through_the_cache() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("from-python.arrow");
    run_python(&python, "write", &file);
    let cache = DiskCache::open(dir.path().join("cache")).await.unwrap();
    let bytes = std::fs::read(&file).unwrap();
    set_raw(
        &cache,
        "from-python",
        bytes,
        SetOptions::new().kind(Kind::Arrow),
    )
    .await;
    assert_eq!(
        cache.head("from-python").await.unwrap().unwrap().kind,
        Kind::Arrow
    );
    let (schema, batches) = cache.get_batches("from-python").await.unwrap().unwrap();
    assert_eq!(
        schema.metadata().get("written_by").map(String::as_str),
        Some("pyarrow")
    );
    let batches: Vec<RecordBatch> = batches.try_collect().await.unwrap();
    assert_eq!(batches.len(), 3);
    let labels = ["north", "south", "east", "west"];
    let mut next = 0i64;
    for b in &batches {
        let ids = b.column(0).as_primitive::<Int64Type>();
        let label = b.column(1).as_dictionary::<Int32Type>();
        let label_values = label.values().as_string::<i32>();
        let weight = b.column(2).as_primitive::<Float64Type>();
        for row in 0..b.num_rows() {
            assert_eq!(ids.value(row), next);
            let k = label.keys().value(row) as usize;
            assert_eq!(label_values.value(k), labels[(next % 4) as usize]);
            if next % 5 == 0 {
                assert!(weight.is_null(row));
            } else {
                assert_eq!(weight.value(row), next as f64 / 2.0);
            }
            next += 1;
        }
    }
    assert_eq!(next, 2500);
}
