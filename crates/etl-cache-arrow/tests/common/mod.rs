//! Schemas, batches and caches shared by the tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, MapBuilder, StringBuilder};
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray, StructArray,
};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef};
use bytes::Bytes;
use etl_cache_arrow::{ArrowCacheExt, ArrowOptions, BatchStream};
use etl_cache_core::{Cache, EntryMeta, SetOptions, Value};
use etl_cache_fs::DiskCache;
use futures::TryStreamExt;
use futures::stream::{self, BoxStream, StreamExt};

pub type Batches = BoxStream<'static, Result<RecordBatch, ArrowError>>;

pub async fn disk(dir: &std::path::Path) -> Arc<DiskCache> {
    Arc::new(DiskCache::builder().root(dir).build().await.unwrap())
}

fn struct_fields() -> Fields {
    Fields::from(vec![
        Field::new("a", DataType::Int32, true),
        Field::new("b", DataType::Utf8, false),
    ])
}

/// Every kind of column the round trip must keep: primitive, nullable,
/// strings, a dictionary, a list, a struct, a map; with field and schema
/// metadata.
pub fn schema() -> SchemaRef {
    let map = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new())
        .finish()
        .data_type()
        .clone();
    let id = Field::new("id", DataType::Int64, false)
        .with_metadata(HashMap::from([("unit".to_owned(), "row".to_owned())]));
    Arc::new(
        Schema::new(vec![
            id,
            Field::new("price", DataType::Float64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new_dictionary("city", DataType::Int32, DataType::Utf8, true),
            Field::new_list("tags", Field::new_list_field(DataType::Int32, true), true),
            Field::new_struct("pair", struct_fields(), true),
            Field::new("attrs", map, true),
        ])
        .with_metadata(HashMap::from([(
            "producer".to_owned(),
            "etl-cache tests".to_owned(),
        )])),
    )
}

/// `rows` rows of [`schema`], different for each `seed`; the first column
/// holds `seed` in every row, so a reader can tell versions apart.
pub fn batch(seed: i64, rows: usize) -> RecordBatch {
    batch_with_cities(seed, rows, &["Lyon", "Oslo", "Lima"])
}

/// As [`batch`], with the dictionary of the `city` column given.
pub fn batch_with_cities(seed: i64, rows: usize, cities: &[&str]) -> RecordBatch {
    let n = rows as i64;
    let ids: ArrayRef = Arc::new(Int64Array::from(vec![seed; rows]));
    let price: ArrayRef = Arc::new(Float64Array::from_iter(
        (0..n).map(|i| (i % 7 != 0).then_some(i as f64 * 1.25 + seed as f64)),
    ));
    let name: ArrayRef = Arc::new(StringArray::from_iter(
        (0..n).map(|i| (i % 5 != 0).then(|| format!("name-{seed}-{i}"))),
    ));
    let keys = Int32Array::from_iter(
        (0..n).map(|i| (i % 11 != 0).then_some((i % cities.len() as i64) as i32)),
    );
    let city: ArrayRef = Arc::new(
        DictionaryArray::<Int32Type>::try_new(keys, Arc::new(StringArray::from(cities.to_vec())))
            .unwrap(),
    );
    let tags: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
        (0..n).map(|i| {
            (i % 3 != 0).then(|| {
                (0..i % 4)
                    .map(|j| Some((i + j + seed) as i32))
                    .collect::<Vec<_>>()
            })
        }),
    ));
    let pair: ArrayRef = Arc::new(StructArray::new(
        struct_fields(),
        vec![
            Arc::new(Int32Array::from_iter(
                (0..n).map(|i| (i % 2 == 0).then_some(i as i32)),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("b{i}")),
            )),
        ],
        None,
    ));
    let mut attrs = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
    for i in 0..n {
        for j in 0..i % 3 {
            attrs.keys().append_value(format!("k{j}"));
            attrs.values().append_value(i * j + seed);
        }
        attrs.append(i % 9 != 0).unwrap();
    }
    let attrs: ArrayRef = Arc::new(attrs.finish());
    RecordBatch::try_new(schema(), vec![ids, price, name, city, tags, pair, attrs]).unwrap()
}

pub fn batches(list: Vec<RecordBatch>) -> Batches {
    stream::iter(list.into_iter().map(Ok)).boxed()
}

/// Stores `list` under `key` with [`schema`] and default options.
pub async fn set_list(
    cache: &(impl Cache + ?Sized),
    key: &str,
    list: Vec<RecordBatch>,
) -> etl_cache_core::Result<EntryMeta> {
    cache
        .set_batches(key, schema(), batches(list), ArrowOptions::new())
        .await
}

/// Stores `bytes` under `key` as they are, with `opts`.
pub async fn set_raw(
    cache: &(impl Cache + ?Sized),
    key: &str,
    bytes: impl Into<Bytes>,
    opts: SetOptions,
) {
    cache
        .set(key, Value::Bytes(bytes.into()), opts)
        .await
        .unwrap();
}

/// The error of `r`, which must have failed.
pub fn failed<T>(r: etl_cache_core::Result<T>) -> etl_cache_core::Error {
    match r {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    }
}

pub async fn collect(read: Option<(SchemaRef, BatchStream)>) -> (SchemaRef, Vec<RecordBatch>) {
    let (schema, stream) = read.expect("an entry");
    (schema, stream.try_collect().await.unwrap())
}
