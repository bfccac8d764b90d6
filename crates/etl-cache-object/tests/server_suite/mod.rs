//! The tests every real server runs (S3 on moto, Azure on Azurite): the
//! shared contract suite, the folder structure of keys, multipart streams
//! with compression, and foreign objects under the prefix. A test file
//! defines `$cache(tag, clock) -> Option<(ObjectCache, Arc<common::Server>)>`
//! (a cache on a fresh bucket or container) and calls
//! `server_suite!($cache)`, with the `use`s the tests need in scope.

/// Generates the server tests for caches made by `$cache`.
#[macro_export]
macro_rules! server_suite {
    ($cache:ident) => {
        async fn make(clock: Arc<ManualClock>) -> Option<Harness> {
            let (cache, server) = $cache("contract", Some(clock.clone()))?;
            // A second handle on the same bucket and prefix, as another
            // process would build it.
            let second = ObjectCache::builder()
                .store(cache.store().clone())
                .prefix(cache.prefix())
                .clock(clock.clone())
                .build()
                .unwrap();
            Some(
                Harness::new(Arc::new(cache), clock, server)
                    .keeps_expired_until_purge()
                    .dropped_writes_may_land_later()
                    .with_second_handle(Arc::new(second)),
            )
        }

        server_contract_tests!(make);

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn keys_keep_their_folders_in_the_bucket() {
            let Some((cache, _server)) = $cache("folders", None) else {
                return;
            };
            cache
                .set_text(
                    "my_folder/financial_data",
                    "<xml/>",
                    SetOptions::new().ttl_seconds(3600),
                )
                .await
                .unwrap();
            cache
                .set_text(
                    "deve/financial_run_001",
                    "<xml/>",
                    SetOptions::new().compress(true),
                )
                .await
                .unwrap();
            let names: Vec<String> = cache
                .store()
                .list(None)
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .unwrap();
            let mut names = names;
            names.sort();
            assert_eq!(
                names,
                vec![
                    "etl/cache/deve/financial_run_001",
                    "etl/cache/my_folder/financial_data"
                ]
            );
            // Folders list like folders.
            let top = cache
                .store()
                .list_with_delimiter(Some(&"etl/cache".into()))
                .await
                .unwrap();
            let mut dirs: Vec<String> = top.common_prefixes.iter().map(|p| p.to_string()).collect();
            dirs.sort();
            assert_eq!(dirs, vec!["etl/cache/deve", "etl/cache/my_folder"]);
            // Each object starts with the entry header: the metadata travels with it.
            let raw = cache
                .store()
                .get(&"etl/cache/my_folder/financial_data".into())
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(&raw[..4], b"ETLC");
            assert!(raw.windows(24).any(|w| w == b"my_folder/financial_data"));
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn multipart_streams_roundtrip_with_every_codec() {
            let Some((cache, server)) = $cache("multipart", None) else {
                return;
            };
            let cache = ObjectCache::builder()
                .store(cache.store().clone())
                .prefix("mp")
                .part_size(5 << 20)
                .max_concurrency(3)
                .build()
                .unwrap();
            let _ = server;
            // 24 MiB of XML-like rows: five parts uncompressed.
            let data = Bytes::from(sample_bytes(24 << 20, 11));
            for comp in [Compression::NONE, Compression::gzip(), Compression::zstd()] {
                let chunks: Vec<std::io::Result<Bytes>> = (0..data.len())
                    .step_by(1 << 20)
                    .map(|i| Ok(data.slice(i..(i + (1 << 20)).min(data.len()))))
                    .collect();
                let meta = cache
                    .set_stream(
                        "big/stream",
                        futures::stream::iter(chunks).boxed(),
                        SetOptions::new().compression(comp),
                    )
                    .await
                    .unwrap();
                assert_eq!(meta.logical_len, data.len() as u64, "{comp}");
                let got = cache
                    .get_stream("big/stream", 1 << 20)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(got.meta(), &meta);
                let back: Vec<Bytes> = got.try_collect().await.unwrap();
                assert!(back[..back.len() - 1].iter().all(|c| c.len() == 1 << 20));
                assert_eq!(back.concat(), data, "{comp}");
                assert_eq!(cache.get_bytes("big/stream").await.unwrap().unwrap(), data);
            }
            // A big value written whole goes up as a multipart upload too.
            let big = Bytes::from(sample_bytes(70 << 20, 12));
            cache
                .set("big/value", big.clone().into(), SetOptions::new())
                .await
                .unwrap();
            assert_eq!(cache.get_bytes("big/value").await.unwrap().unwrap(), big);
            assert_eq!(cache.clear().await.unwrap(), 2);
        }

        /// A byte changed in block 2 of a 4-block entry (blocks of 1 MiB):
        /// the stream hands out blocks 0 and 1, exactly, then fails with
        /// `InvalidData`; nothing of block 2 or after.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_changed_block_is_never_streamed() {
            let Some((cache, _server)) = $cache("changed-block", None) else {
                return;
            };
            let mib = 1usize << 20;
            // Bytes no codec shrinks, so every codec stores 4 blocks.
            let data = etl_cache_core::testing::noise_bytes(4 * mib - 1000, 0);
            for (key, codec) in [("plain", Compression::NONE), ("zstd", Compression::zstd())] {
                let parts: Vec<std::io::Result<Bytes>> = data
                    .chunks(700_000)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                let opts = SetOptions::new().compression(codec);
                cache
                    .set_stream(key, futures::stream::iter(parts).boxed(), opts)
                    .await
                    .unwrap();
                let path = cache.object_path(key).unwrap();
                let mut raw = cache
                    .store()
                    .get(&path)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .to_vec();
                let header_len = 26 + key.len() + 4;
                raw[header_len + 2 * (mib + 4) + 100] ^= 0x40;
                cache.store().put(&path, raw.into()).await.unwrap();
                let (_, mut s) = cache
                    .get_stream(key, 64 << 10)
                    .await
                    .unwrap()
                    .unwrap()
                    .into_parts();
                let mut got = Vec::new();
                let err = loop {
                    match s.next().await {
                        Some(Ok(b)) => got.extend_from_slice(&b),
                        Some(Err(e)) => break e,
                        None => panic!("{key}: a changed entry streamed to its end"),
                    }
                };
                assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{key}: {err}");
                etl_cache_core::testing::assert_no_changed_byte(key, codec, &data, &got, 2 * mib);
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn clear_keeps_objects_the_cache_did_not_write() {
            let Some((cache, _server)) = $cache("foreign", None) else {
                return;
            };
            foreign::clear_keeps_foreign_objects(&cache, 40).await;
        }
    };
}
