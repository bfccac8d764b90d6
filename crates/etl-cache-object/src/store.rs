//! Opening an object store from a URL, and naming stores for errors.

use std::path::PathBuf;
use std::sync::Arc;

use etl_cache_core::{Error, Result};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreScheme};
use url::Url;

#[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

/// A store opened from a URL, with what errors need to name it.
pub(crate) struct Opened {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub name: &'static str,
    pub bucket: String,
    /// The directory of a store that keeps objects as local files.
    pub local_root: Option<PathBuf>,
}

/// HTTP settings of the cloud stores.
#[derive(Debug, Clone, Default)]
pub(crate) struct Http {
    #[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
    pub retry: Option<RetryConfig>,
    #[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
    pub client: Option<ClientOptions>,
}

/// The retry policy of the cloud stores unless another is given: up to 5
/// retries with exponential backoff from 100 ms to 5 s, for at most 30 s.
#[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
pub fn default_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: std::time::Duration::from_secs(30),
    }
}

/// The HTTP client settings of the cloud stores unless others are given: a
/// 5 s connect timeout but no limit on a whole request, so multi-gigabyte
/// streams are not cut. A stalled connection fails through the cache's own
/// idle timeout ([`crate::ObjectCacheBuilder::idle_timeout`], 30 s by
/// default): object_store 0.13's client has no read timeout.
#[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
pub fn default_client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(std::time::Duration::from_secs(5))
}

fn open_error(location: &str, message: impl Into<String>) -> Error {
    Error::Open {
        location: location.to_owned(),
        message: message.into(),
    }
}

#[allow(dead_code)] // unused when every cloud feature is on
fn feature_off(url: &str, scheme: &str, feature: &str) -> Error {
    open_error(
        url,
        format!(
            "{scheme}:// URLs need the `{feature}` cargo feature of etl-cache-object \
             (the `{feature}` feature of the etl-cache facade); it is not enabled in this build"
        ),
    )
}

/// Names a store for errors: its kind and its bucket, from its `Display`.
///
/// Why the text: a store handed in as `Arc<dyn ObjectStore>` has no other
/// identity. The trait has no `as_any`, no scheme and no bucket accessor,
/// and wrapping every store in a type of ours would hide the caller's own
/// wrappers. What the stores of object_store print is stable and short
/// (`AmazonS3(bucket)`, `LocalFileSystem(file:///root/)`); the tests
/// `stores_are_described` and `local_roots_are_found` fail if an upgrade
/// changes it. A store that is not recognised is named by its whole text,
/// and a wrapped `LocalFileSystem` is declared with
/// [`crate::ObjectCacheBuilder::local_root`].
pub(crate) fn describe(store: &dyn ObjectStore) -> (&'static str, String) {
    let shown = store.to_string();
    let inside = |s: &str| {
        s.split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map(|(b, _)| b.to_owned())
            .unwrap_or_default()
    };
    if shown.starts_with("AmazonS3") {
        ("s3", inside(&shown))
    } else if shown.starts_with("GoogleCloudStorage") {
        ("gcs", inside(&shown))
    } else if shown.starts_with("MicrosoftAzure") {
        let container = shown
            .split("container: ")
            .nth(1)
            .map(|s| s.trim_end_matches([' ', '}']).to_owned())
            .unwrap_or_default();
        ("azure", container)
    } else if shown.starts_with("LocalFileSystem") {
        ("local", inside(&shown))
    } else if shown.starts_with("InMemory") {
        ("memory", "memory".to_owned())
    } else {
        ("object", shown)
    }
}

/// The root directory of an object_store `LocalFileSystem`, from its
/// `Display` (`LocalFileSystem(file:///root/)`); `None` for other stores.
/// Recognising it matters: on a local directory the cache writes entries
/// itself, so a dropped write never publishes later (see `staged.rs`), and
/// it looks at what stands at a path before it follows it. (Why the text:
/// see [`describe`].)
pub(crate) fn local_root(store: &dyn ObjectStore) -> Option<PathBuf> {
    let shown = store.to_string();
    let url = shown
        .strip_prefix("LocalFileSystem(")?
        .strip_suffix(')')?
        .to_owned();
    Url::parse(&url).ok()?.to_file_path().ok()
}

/// Opens the store a URL names, with credentials and settings from the
/// environment and `options` (which win over the environment).
pub(crate) fn open_url(raw: &str, options: &[(String, String)], http: &Http) -> Result<Opened> {
    let url = Url::parse(raw).map_err(|e| open_error(raw, format!("not a URL: {e}")))?;
    let (scheme, prefix) = ObjectStoreScheme::parse(&url)
        .map_err(|e| open_error(raw, format!("not an object store URL: {e}")))?;
    let _ = http;
    match scheme {
        ObjectStoreScheme::Memory => {
            reject_options(raw, options)?;
            Ok(Opened {
                store: Arc::new(object_store::memory::InMemory::new()),
                prefix,
                name: "memory",
                bucket: "memory".into(),
                local_root: None,
            })
        }
        ObjectStoreScheme::Local => Err(open_error(
            raw,
            "file:// names a DiskCache directory everywhere in etl-cache (etl_cache::open, \
             the command line, Python); for an ObjectCache in a local directory use \
             ObjectCacheBuilder::local_dir or ObjectCache::local_dir",
        )),
        ObjectStoreScheme::AmazonS3 => {
            #[cfg(feature = "aws")]
            return cloud::open::<object_store::aws::AmazonS3Builder>(
                raw, &url, prefix, options, http,
            );
            #[cfg(not(feature = "aws"))]
            return Err(feature_off(raw, url.scheme(), "aws"));
        }
        ObjectStoreScheme::MicrosoftAzure => {
            #[cfg(feature = "azure")]
            return cloud::open::<object_store::azure::MicrosoftAzureBuilder>(
                raw, &url, prefix, options, http,
            );
            #[cfg(not(feature = "azure"))]
            return Err(feature_off(raw, url.scheme(), "azure"));
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            #[cfg(feature = "gcp")]
            return cloud::open::<object_store::gcp::GoogleCloudStorageBuilder>(
                raw, &url, prefix, options, http,
            );
            #[cfg(not(feature = "gcp"))]
            return Err(feature_off(raw, url.scheme(), "gcp"));
        }
        _ => Err(open_error(
            raw,
            "unsupported scheme: use s3://, az://, gs:// or memory:// (a local directory: \
             ObjectCacheBuilder::local_dir)",
        )),
    }
}

/// Opens object_store's `LocalFileSystem` on `dir` (created if missing).
pub(crate) fn open_dir(dir: &std::path::Path, options: &[(String, String)]) -> Result<Opened> {
    let shown = dir.display().to_string();
    reject_options(&shown, options)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        key: String::new(),
        path: dir.to_owned(),
        op: "create the cache directory",
        source: e,
    })?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| open_error(&shown, e.to_string()))?;
    let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    Ok(Opened {
        store: Arc::new(store),
        prefix: Path::ROOT,
        name: "local",
        bucket: shown,
        local_root: Some(root),
    })
}

fn reject_options(raw: &str, options: &[(String, String)]) -> Result<()> {
    match options.first() {
        None => Ok(()),
        Some((k, _)) => Err(open_error(
            raw,
            format!("option {k:?} is not accepted: this store takes no options"),
        )),
    }
}

#[cfg(any(feature = "aws", feature = "azure", feature = "gcp"))]
mod cloud {
    use super::*;
    use object_store::ClientConfigKey;

    /// Applies the client keys found in the environment (`{env_prefix}*`) and
    /// in `options` to the client settings, and returns the other options.
    fn split_options<K: std::str::FromStr>(
        raw: &str,
        env_prefix: &str,
        options: &[(String, String)],
        http: &Http,
        as_client: impl Fn(&K) -> Option<ClientConfigKey>,
    ) -> Result<(ClientOptions, Vec<(K, String)>)> {
        let mut client = http.client.clone().unwrap_or_else(default_client_options);
        if http.client.is_none() {
            for (k, v) in std::env::vars() {
                if k.starts_with(env_prefix)
                    && let Ok(key) = k.to_ascii_lowercase().parse::<K>()
                    && let Some(ck) = as_client(&key)
                {
                    client = client.with_config(ck, v);
                }
            }
        }
        let mut rest = Vec::new();
        for (k, v) in options {
            let key = k
                .to_ascii_lowercase()
                .parse::<K>()
                .map_err(|_| open_error(raw, format!("unknown option {k:?} for this store")))?;
            match as_client(&key) {
                Some(ck) => client = client.with_config(ck, v.clone()),
                None => rest.push((key, v.clone())),
            }
        }
        Ok((client, rest))
    }

    fn built<T: ObjectStore>(
        raw: &str,
        r: object_store::Result<T>,
        prefix: Path,
        name: &'static str,
    ) -> Result<Opened> {
        let store = r.map_err(|e| open_error(raw, e.to_string()))?;
        let (_, bucket) = describe(&store);
        Ok(Opened {
            store: Arc::new(store),
            prefix,
            name,
            bucket,
            local_root: None,
        })
    }

    /// What opening a store differs in between the clouds: the builder,
    /// its configuration keys and the store it builds. The three builders
    /// of object_store have the same methods but no trait in common.
    pub(super) trait Cloud: Sized {
        type Key: std::str::FromStr;
        type Store: ObjectStore;
        /// The prefix of this cloud's variables in the environment.
        const ENV_PREFIX: &'static str;
        /// The store's name in errors and stats.
        const NAME: &'static str;
        fn from_env() -> Self;
        fn with_url(self, url: &str) -> Self;
        fn with_config(self, key: Self::Key, value: String) -> Self;
        fn with_client_options(self, client: ClientOptions) -> Self;
        fn with_retry(self, retry: RetryConfig) -> Self;
        fn build(self) -> object_store::Result<Self::Store>;
        /// The HTTP client setting a key names, if it names one.
        fn client_key(key: &Self::Key) -> Option<ClientConfigKey>;
    }

    macro_rules! cloud {
        ($feature:literal, $m:ident, $builder:ident, $key:ident, $store:ident, $env:literal, $name:literal) => {
            #[cfg(feature = $feature)]
            impl Cloud for object_store::$m::$builder {
                type Key = object_store::$m::$key;
                type Store = object_store::$m::$store;
                const ENV_PREFIX: &'static str = $env;
                const NAME: &'static str = $name;
                fn from_env() -> Self {
                    Self::from_env()
                }
                fn with_url(self, url: &str) -> Self {
                    self.with_url(url)
                }
                fn with_config(self, key: Self::Key, value: String) -> Self {
                    self.with_config(key, value)
                }
                fn with_client_options(self, client: ClientOptions) -> Self {
                    self.with_client_options(client)
                }
                fn with_retry(self, retry: RetryConfig) -> Self {
                    self.with_retry(retry)
                }
                fn build(self) -> object_store::Result<Self::Store> {
                    self.build()
                }
                fn client_key(key: &Self::Key) -> Option<ClientConfigKey> {
                    match key {
                        object_store::$m::$key::Client(c) => Some(*c),
                        _ => None,
                    }
                }
            }
        };
    }

    cloud!(
        "aws",
        aws,
        AmazonS3Builder,
        AmazonS3ConfigKey,
        AmazonS3,
        "AWS_",
        "s3"
    );
    cloud!(
        "azure",
        azure,
        MicrosoftAzureBuilder,
        AzureConfigKey,
        MicrosoftAzure,
        "AZURE_",
        "azure"
    );
    cloud!(
        "gcp",
        gcp,
        GoogleCloudStorageBuilder,
        GoogleConfigKey,
        GoogleCloudStorage,
        "GOOGLE_",
        "gcs"
    );

    /// Opens a cloud store: settings from the environment, then the URL,
    /// then `options` (which win); the HTTP client's settings from the
    /// handle's `Http` when it has them, else from the environment too.
    pub(super) fn open<B: Cloud>(
        raw: &str,
        url: &Url,
        prefix: Path,
        options: &[(String, String)],
        http: &Http,
    ) -> Result<Opened> {
        let (client, rest) =
            split_options::<B::Key>(raw, B::ENV_PREFIX, options, http, B::client_key)?;
        let mut b = B::from_env().with_url(url.as_str());
        for (k, v) in rest {
            b = b.with_config(k, v);
        }
        let b = b
            .with_client_options(client)
            .with_retry(http.retry.clone().unwrap_or_else(default_retry));
        built(raw, b.build(), prefix, B::NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_name_disk_caches_not_object_caches() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/cache", dir.path().display());
        let err = open_url(&url, &[], &Http::default()).err().unwrap();
        assert!(matches!(err, Error::Open { .. }), "{err}");
        assert!(err.to_string().contains("local_dir"), "{err}");
        assert!(!dir.path().join("cache").exists(), "nothing created");
    }

    #[test]
    fn memory_urls_and_directories_open() {
        let o = open_url("memory:///runs/2026", &[], &Http::default()).unwrap();
        assert_eq!((o.name, o.prefix.as_ref()), ("memory", "runs/2026"));
        let dir = tempfile::tempdir().unwrap();
        let o = open_dir(&dir.path().join("cache"), &[]).unwrap();
        assert_eq!(o.name, "local");
        assert!(dir.path().join("cache").is_dir());
    }

    #[test]
    fn bad_urls_are_open_errors() {
        for url in ["not a url", "ftp://host/x", "http://example.com/x"] {
            let err = open_url(url, &[], &Http::default()).err().unwrap();
            assert!(matches!(err, Error::Open { .. }), "{url}: {err}");
        }
        let err = open_url("memory:///", &[("x".into(), "y".into())], &Http::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("\"x\""), "{err}");
    }

    /// A URL of a store whose feature is off names the feature to turn on;
    /// one whose feature is on is never refused for it.
    #[test]
    fn a_store_without_its_feature_names_it() {
        let stores = [
            ("s3://bucket/prefix", "`aws`", cfg!(feature = "aws")),
            ("az://container/prefix", "`azure`", cfg!(feature = "azure")),
            ("gs://bucket/prefix", "`gcp`", cfg!(feature = "gcp")),
        ];
        for (url, feature, on) in stores {
            let opened = open_url(url, &[], &Http::default());
            match (on, opened) {
                (false, Ok(_)) => panic!("{url} opened without the {feature} feature"),
                (false, Err(e)) => assert!(e.to_string().contains(feature), "{url}: {e}"),
                (true, Ok(_)) => {}
                (true, Err(e)) => assert!(!e.to_string().contains("cargo feature"), "{url}: {e}"),
            }
        }
    }

    #[cfg(feature = "aws")]
    #[test]
    fn s3_url_opens_with_options_and_rejects_unknown_ones() {
        let opts = vec![
            ("aws_endpoint".to_string(), "http://127.0.0.1:1".to_string()),
            ("allow_http".to_string(), "true".to_string()),
            ("aws_region".to_string(), "us-east-1".to_string()),
        ];
        let o = open_url("s3://my-bucket/deve/runs", &opts, &Http::default()).unwrap();
        assert_eq!((o.name, o.bucket.as_str()), ("s3", "my-bucket"));
        assert_eq!(o.prefix.as_ref(), "deve/runs");
        let bad = vec![("no_such_option".to_string(), "1".to_string())];
        let err = open_url("s3://b", &bad, &Http::default()).err().unwrap();
        assert!(err.to_string().contains("no_such_option"), "{err}");
    }

    #[cfg(feature = "gcp")]
    #[test]
    fn gcs_url_opens_from_url_and_options() {
        let o = open_url("gs://etl-bucket/runs", &[], &Http::default()).unwrap();
        assert_eq!(
            (o.name, o.bucket.as_str(), o.prefix.as_ref()),
            ("gcs", "etl-bucket", "runs")
        );
        // Client settings are options too; the bucket of the URL wins.
        let opts = vec![
            ("google_bucket".to_string(), "other".to_string()),
            ("connect_timeout".to_string(), "2s".to_string()),
        ];
        let o = open_url("gs://etl-bucket/runs", &opts, &Http::default()).unwrap();
        assert_eq!(o.bucket, "etl-bucket");
        let bad = vec![("google_no_such_key".to_string(), "1".to_string())];
        assert!(open_url("gs://etl-bucket/runs", &bad, &Http::default()).is_err());
    }

    #[cfg(feature = "azure")]
    #[test]
    fn azure_url_opens_from_url_and_options() {
        let opts = vec![
            ("azure_storage_account_name".to_string(), "acct".to_string()),
            ("azure_storage_account_key".to_string(), "a2V5".to_string()),
        ];
        let o = open_url("az://container/runs", &opts, &Http::default()).unwrap();
        assert_eq!(
            (o.name, o.bucket.as_str(), o.prefix.as_ref()),
            ("azure", "container", "runs")
        );
    }

    #[test]
    fn stores_are_described() {
        let mem = object_store::memory::InMemory::new();
        assert_eq!(describe(&mem), ("memory", "memory".to_string()));
        assert_eq!(local_root(&mem), None);
    }

    #[test]
    fn local_roots_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(local_root(&store), Some(root.clone()));
        assert_eq!(describe(&store).0, "local");
        let o = open_dir(&dir.path().join("cache"), &[]).unwrap();
        assert_eq!(o.local_root, Some(root.join("cache")));
        let o = open_url("memory:///x", &[], &Http::default()).unwrap();
        assert_eq!(o.local_root, None);
    }
}
