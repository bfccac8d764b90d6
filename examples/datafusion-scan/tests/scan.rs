//! The DataFusion example, run: the same SQL over Parquet files on a real
//! S3 server (moto), cold then warm through a CachedStore reopened on the
//! same cache directory. The warm run reads no byte from S3, and both
//! answers are the same.

#[path = "../src/main.rs"]
#[allow(dead_code)]
mod example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_datafusion_scan_reads_nothing_from_s3_and_answers_the_same() {
    let server =
        example::servers::moto().expect("moto_server: run scripts/install-test-servers.sh");
    let bucket = example::servers::unique_name("df");
    example::servers::create_bucket(&server, &bucket);
    let s3 = example::s3_store(&server.endpoint(), &bucket).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = example::run(s3, &bucket, dir.path(), 3, 20_000)
        .await
        .unwrap();
    assert_eq!(r.cold.answer, r.warm.answer);
    assert!(r.cold.answer.contains("north"), "{}", r.cold.answer);
    assert!(r.cold.bytes > 0 && r.cold.gets > 0, "{:?}", r.cold);
    assert_eq!(
        r.warm.bytes, 0,
        "the warm scan read bytes from S3: {:?}",
        r.warm
    );
    assert_eq!(r.warm.gets, 0, "{:?}", r.warm);
}
