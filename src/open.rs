//! Opening a cache from a URL: [`open`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use etl_cache_core::{Cache, Error, MemoryCache, Result};

/// The schemes [`open`] understands, for error messages.
const SUPPORTED: &str = "a directory path, file://PATH, memory://, s3://BUCKET/PREFIX, \
                         gs://BUCKET/PREFIX, az://CONTAINER/PREFIX (also azure://, abfs://), \
                         or the https:// address of a bucket or container";

/// Opens the cache that `url` names, as a shared [`Cache`].
///
/// | `url` | cache |
/// |---|---|
/// | a path (`.cache`, `/var/cache/etl`) or `file:///abs/path` | [`DiskCache`](crate::DiskCache) rooted there (created if missing), other settings from the `ETL_CACHE_*` variables ([`DiskCacheBuilder::from_env`](crate::DiskCacheBuilder::from_env)) |
/// | `memory://` | a fresh [`MemoryCache`]: lives as long as the returned handle, in this process only |
/// | `s3://bucket/prefix` | Amazon S3 or S3-compatible (cargo feature `aws`) |
/// | `gs://bucket/prefix` | Google Cloud Storage (cargo feature `gcp`) |
/// | `az://container/prefix`, `azure://…`, `abfs://…` | Azure Blob Storage (cargo feature `azure`) |
///
/// A string without `://` is always a path, so `.cache` (the library's and the
/// CLI's default) and `C:\cache` are directories. `file://` takes an absolute
/// path (`file:///tmp/cache`); a relative one is written without the scheme.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> etl_cache::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("cache");
/// # let url = path.to_str().unwrap();
/// use etl_cache::{CacheExt, SetOptions};
///
/// // `url` is a directory here; "memory://" or "s3://bucket/prefix" work alike.
/// let cache = etl_cache::open(url).await?;
/// cache.set_text("payload_123", "<xml>...</xml>", SetOptions::new()).await?;
/// assert_eq!(cache.get_text("payload_123").await?.as_deref(), Some("<xml>...</xml>"));
///
/// let err = etl_cache::open("ftp://example/cache").await.unwrap_err();
/// assert!(err.to_string().contains("memory://"));
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Open`] when the scheme is unknown, when its backend was not
/// compiled in (the message names the cargo feature to enable), when the URL is
/// malformed, or when the backend cannot open the location (for a directory:
/// it is a file, or not writable).
pub async fn open(url: &str) -> Result<Arc<dyn Cache>> {
    match Location::parse(url)? {
        Location::Dir(root) => open_dir(root, url).await,
        Location::Memory => Ok(Arc::new(MemoryCache::new())),
        Location::Object(url) => open_object(&url, ObjectBackend::of(&url)),
    }
}

/// Where a cache lives, as a URL names it: the one reading of cache URLs
/// that [`open`], the command line and the Python package share, so that a
/// scheme means the same everywhere.
///
/// ```
/// use std::path::Path;
/// use etl_cache::Location;
///
/// assert_eq!(Location::parse(".cache")?.dir(), Some(Path::new(".cache")));
/// assert_eq!(Location::parse("file:///var/cache/etl")?.dir(), Some(Path::new("/var/cache/etl")));
/// assert_eq!(Location::parse("memory://")?, Location::Memory);
/// assert!(matches!(Location::parse("s3://bucket/prefix")?, Location::Object(_)));
/// assert!(Location::parse("ftp://host/dir").is_err());
/// # Ok::<(), etl_cache::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A local directory, from a path or `file:///abs/path`: a
    /// [`DiskCache`](crate::DiskCache).
    Dir(PathBuf),
    /// `memory://`: a [`MemoryCache`].
    Memory,
    /// An object store URL, as given (`s3://`, `s3a://`, `gs://`, `az://`,
    /// `azure://`, `abfs://`, `abfss://`, `adl://`, or the `https://`
    /// address of a bucket or container): an `ObjectCache`.
    Object(String),
}

impl Location {
    /// Reads a cache URL. A string without `://` is always a path.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] for an empty location, an unknown scheme, `file://`
    /// without an absolute path, and `memory://` with a location.
    pub fn parse(url: &str) -> Result<Location> {
        let bad = |message: String| Error::Open {
            location: url.to_owned(),
            message,
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            if url.is_empty() {
                return Err(bad(format!("the location is empty; use {SUPPORTED}")));
            }
            return Ok(Location::Dir(PathBuf::from(url)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if rest.is_empty() {
                    return Err(bad(
                        "file:// needs a path, as in file:///var/cache/etl".into()
                    ));
                }
                if !rest.starts_with('/') {
                    return Err(bad(format!(
                        "file:// takes an absolute path (file:///abs/path); write a relative \
                         path without the scheme, as in `{rest}`"
                    )));
                }
                Ok(Location::Dir(PathBuf::from(rest)))
            }
            "memory" => {
                if !rest.is_empty() {
                    return Err(bad(
                        "memory:// takes no location: write exactly `memory://`".into(),
                    ));
                }
                Ok(Location::Memory)
            }
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "adl" => {
                Ok(Location::Object(url.to_owned()))
            }
            // Object store endpoints by address, as object_store reads them:
            // `https://bucket.s3.region.amazonaws.com/prefix`,
            // `https://account.blob.core.windows.net/container`, R2, GCS.
            "https" | "http" => Ok(Location::Object(url.to_owned())),
            other => Err(bad(format!("unknown scheme `{other}://`; use {SUPPORTED}"))),
        }
    }

    /// The directory, for a local location.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Location::Dir(p) => Some(p),
            _ => None,
        }
    }
}

impl std::str::FromStr for Location {
    type Err = Error;

    fn from_str(url: &str) -> Result<Location> {
        Location::parse(url)
    }
}

/// A local directory, through the builder so settings can be layered on.
#[cfg(feature = "fs")]
async fn open_dir(root: PathBuf, _url: &str) -> Result<Arc<dyn Cache>> {
    // Limits, lock timeout and durability from ETL_CACHE_* variables; the root from the URL.
    let cache = crate::DiskCacheBuilder::from_env()?
        .root(root)
        .build()
        .await?;
    Ok(Arc::new(cache))
}

#[cfg(not(feature = "fs"))]
async fn open_dir(_root: PathBuf, url: &str) -> Result<Arc<dyn Cache>> {
    Err(Error::Open {
        location: url.to_owned(),
        message: "a directory cache needs the `fs` feature of etl-cache (on by default)".into(),
    })
}

/// The object-store families, each behind its own cargo feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectBackend {
    Aws,
    Gcp,
    Azure,
}

impl ObjectBackend {
    /// The family of an object store URL that [`Location::parse`] accepted.
    fn of(url: &str) -> ObjectBackend {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let host = rest.split('/').next().unwrap_or("").to_ascii_lowercase();
        match scheme.to_ascii_lowercase().as_str() {
            "gs" => ObjectBackend::Gcp,
            "az" | "azure" | "abfs" | "abfss" | "adl" => ObjectBackend::Azure,
            "https" | "http" if host.ends_with(".windows.net") => ObjectBackend::Azure,
            "https" | "http" if host.ends_with("googleapis.com") => ObjectBackend::Gcp,
            _ => ObjectBackend::Aws,
        }
    }

    /// The facade's cargo feature that brings this backend in.
    fn feature(self) -> &'static str {
        match self {
            ObjectBackend::Aws => "aws",
            ObjectBackend::Gcp => "gcp",
            ObjectBackend::Azure => "azure",
        }
    }

    /// Whether that feature was compiled in.
    #[cfg_attr(not(feature = "object"), allow(dead_code))]
    fn compiled_in(self) -> bool {
        match self {
            ObjectBackend::Aws => cfg!(feature = "aws"),
            ObjectBackend::Gcp => cfg!(feature = "gcp"),
            ObjectBackend::Azure => cfg!(feature = "azure"),
        }
    }
}

/// An object store URL: an [`ObjectCache`](crate::ObjectCache) when its
/// feature is compiled in (credentials and endpoint from the environment, as
/// `ObjectCache::from_url` reads them), else an error naming the feature.
fn open_object(url: &str, backend: ObjectBackend) -> Result<Arc<dyn Cache>> {
    #[cfg(feature = "object")]
    if backend.compiled_in() {
        let builder = etl_cache_object::ObjectCacheBuilder::from_env()?.url(url);
        return Ok(Arc::new(builder.build()?));
    }
    let scheme = url.split_once("://").map_or(url, |(s, _)| s);
    let feature = backend.feature();
    Err(Error::Open {
        location: url.to_owned(),
        message: format!(
            "{scheme}:// needs the `{feature}` feature: cargo install --path crates/etl-cache-cli \
             --features {feature} (library users: etl-cache = {{ features = [\"{feature}\"] }})"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_error(url: &str) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        match rt.block_on(open(url)) {
            Ok(c) => panic!("{url} opened as {c:?}"),
            Err(e) => {
                assert!(matches!(e, Error::Open { .. }), "{url}: {e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn cloud_schemes_name_their_feature_when_it_is_off() {
        let cases = [
            ("s3://bucket/prefix", ObjectBackend::Aws),
            ("gs://bucket/prefix", ObjectBackend::Gcp),
            ("az://c/p", ObjectBackend::Azure),
            ("azure://c/p", ObjectBackend::Azure),
            ("abfs://c@a.dfs.core.windows.net/p", ObjectBackend::Azure),
        ];
        for (url, backend) in cases {
            let feature = backend.feature();
            if backend.compiled_in() {
                // Compiled in: never the "needs the feature" error.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                if let Err(e) = rt.block_on(open(url)) {
                    assert!(!e.to_string().contains("needs the"), "{url}: {e}");
                }
            } else {
                let e = open_error(url);
                assert!(e.contains(&format!("`{feature}` feature")), "{url}: {e}");
                assert!(e.contains(&format!("--features {feature}")), "{url}: {e}");
            }
        }
    }

    #[test]
    fn object_store_addresses_are_object_locations_of_their_family() {
        for (url, family) in [
            ("s3://b/p", ObjectBackend::Aws),
            ("S3://b/p", ObjectBackend::Aws),
            ("https://b.s3.eu-west-1.amazonaws.com/p", ObjectBackend::Aws),
            (
                "https://acct.r2.cloudflarestorage.com/b",
                ObjectBackend::Aws,
            ),
            (
                "https://acct.blob.core.windows.net/c/p",
                ObjectBackend::Azure,
            ),
            ("adl://acct.azuredatalakestore.net/c", ObjectBackend::Azure),
            ("https://storage.googleapis.com/b/p", ObjectBackend::Gcp),
            ("gs://b/p", ObjectBackend::Gcp),
        ] {
            assert_eq!(
                Location::parse(url).unwrap(),
                Location::Object(url.to_owned()),
                "{url}"
            );
            assert_eq!(ObjectBackend::of(url), family, "{url}");
        }
        // The scheme is read without regard to case, everywhere.
        assert_eq!(
            Location::parse("FILE:///var/cache").unwrap().dir(),
            Some(Path::new("/var/cache"))
        );
        assert_eq!(Location::parse("Memory://").unwrap(), Location::Memory);
    }

    #[test]
    fn unknown_and_malformed_urls_say_what_works() {
        let e = open_error("ftp://host/dir");
        assert!(e.contains("unknown scheme `ftp://`"), "{e}");
        assert!(e.contains("memory://") && e.contains("s3://"), "{e}");
        assert!(open_error("").contains("empty"));
        assert!(open_error("file://").contains("needs a path"));
        assert!(open_error("file://relative/dir").contains("absolute path"));
        assert!(open_error("memory://somewhere").contains("no location"));
    }
}
