//! The cache classes: `BaseCache` carries the seed's methods; `LocalDiskCache`
//! and `S3Cache` only open the backend, with the seed's arguments.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use etl_cache::{Cache, Compression, DiskCache, ObjectCache, SetOptions};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use pyo3_arrow::input::AnyRecordBatch;

use crate::convert::{self, Payload};
use crate::errors::to_py;
use crate::runtime;
use crate::stream::{self, ChunkIterator};

/// What every cache offers: `set`, `get`, `get_stream`, `delete` (the seed's
/// `BaseCache` contract), plus `purge_expired`, `clear` and `in`.
#[pyclass(module = "etl_cache", subclass, frozen)]
pub(crate) struct BaseCache {
    pub(crate) cache: Arc<dyn Cache>,
    /// Compression of `compress=True` sets (gzip, as the seed, unless the
    /// cache was opened with another).
    pub(crate) compress_with: Compression,
    description: String,
}

impl BaseCache {
    fn new(
        cache: Arc<dyn Cache>,
        compression: Option<&str>,
        description: String,
    ) -> PyResult<Self> {
        Ok(BaseCache {
            cache,
            compress_with: parse_compression(compression.unwrap_or("gzip"))?,
            description,
        })
    }

    /// The options of one `set`.
    pub(crate) fn options(
        &self,
        ttl_seconds: Option<f64>,
        compress: Option<&Bound<'_, PyAny>>,
        compression: Option<&str>,
    ) -> PyResult<SetOptions> {
        // Any truthy value, as Python's own `if compress:` (the seed's
        // callers pass `1` or a config string as well as `True`).
        let compress = compress
            .map(|c| c.is_truthy())
            .transpose()?
            .unwrap_or(false);
        let mut opts = SetOptions::new();
        if let Some(secs) = ttl_seconds {
            let ttl = Duration::try_from_secs_f64(secs).map_err(|_| {
                PyValueError::new_err(format!(
                    "ttl_seconds must be a positive number of seconds, got {secs}"
                ))
            })?;
            opts = opts.ttl(ttl);
        }
        if let Some(c) = compression {
            opts = opts.compression(parse_compression(c)?);
        } else if compress {
            opts = opts.compression(self.compress_with);
        }
        Ok(opts)
    }
}

fn parse_compression(name: &str) -> PyResult<Compression> {
    Compression::from_str(name).map_err(|e| PyValueError::new_err(e.to_string()))
}

#[pymethods]
impl BaseCache {
    /// Stores `payload` under `key`: `str`, `bytes`, `dict`, `list`, or any
    /// iterator of `bytes` chunks (streamed, memory stays bounded).
    /// `compress=True` compresses with gzip (or the cache's `compression`);
    /// `compression="zstd"` (or `"gzip:9"`, `"zstd:19"`, `"none"`) picks one.
    /// Streams are compressed too when asked.
    #[pyo3(
        signature = (key, payload, ttl_seconds=None, compress=None, compression=None),
        text_signature = "($self, key, payload, ttl_seconds=None, compress=False, compression=None)"
    )]
    fn set(
        &self,
        py: Python<'_>,
        key: String,
        payload: &Bound<'_, PyAny>,
        ttl_seconds: Option<f64>,
        compress: Option<&Bound<'_, PyAny>>,
        compression: Option<&str>,
    ) -> PyResult<()> {
        let opts = self.options(ttl_seconds, compress, compression)?;
        match convert::payload(payload)? {
            Payload::Stream(iter) => stream::set_from_iter(py, self.cache.clone(), key, iter, opts),
            whole => {
                let (value, opts) = whole.whole(opts).expect("a whole payload");
                let cache = &self.cache;
                runtime::block_on(py, cache.set(&key, value, opts)).map_err(to_py)?;
                Ok(())
            }
        }
    }

    /// The value stored under `key`, as the type it was set with, or `None`
    /// when it is missing or expired.
    fn get(&self, py: Python<'_>, key: &str) -> PyResult<Option<Py<PyAny>>> {
        let cache = &self.cache;
        match runtime::block_on(py, cache.get_raw(key)).map_err(to_py)? {
            Some((meta, bytes)) => Ok(Some(convert::to_python(py, &meta, bytes)?)),
            None => Ok(None),
        }
    }

    /// An iterator over the entry's bytes (decompressed), in chunks of at
    /// most `chunk_size` bytes; `None` when it is missing or expired.
    #[pyo3(signature = (key, chunk_size=65536))]
    fn get_stream(
        &self,
        py: Python<'_>,
        key: String,
        chunk_size: usize,
    ) -> PyResult<Option<ChunkIterator>> {
        if chunk_size == 0 {
            return Err(PyValueError::new_err("chunk_size must be at least 1"));
        }
        let cache = &self.cache;
        let found = runtime::block_on(py, cache.get_stream(&key, chunk_size)).map_err(to_py)?;
        Ok(found.map(|s| {
            let (_meta, stream) = s.into_parts();
            ChunkIterator::new(key, stream)
        }))
    }

    /// Removes `key`; `True` when there was an entry.
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        let cache = &self.cache;
        runtime::block_on(py, cache.delete(key)).map_err(to_py)
    }

    /// Removes every expired entry; returns how many.
    fn purge_expired(&self, py: Python<'_>) -> PyResult<u64> {
        let cache = &self.cache;
        runtime::block_on(py, cache.purge_expired()).map_err(to_py)
    }

    /// Removes every entry; returns how many.
    fn clear(&self, py: Python<'_>) -> PyResult<u64> {
        let cache = &self.cache;
        runtime::block_on(py, cache.clear()).map_err(to_py)
    }

    fn __contains__(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        let cache = &self.cache;
        runtime::block_on(py, cache.contains(key)).map_err(to_py)
    }

    fn __repr__(&self) -> String {
        self.description.clone()
    }

    /// The value under `key` (awaitable), or `None`.
    fn aget<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        crate::aio::get(py, self.cache.clone(), key)
    }

    /// Stores a `str`, `bytes`, `dict` or `list` (awaitable).
    #[pyo3(
        signature = (key, payload, ttl_seconds=None, compress=None, compression=None),
        text_signature = "($self, key, payload, ttl_seconds=None, compress=False, compression=None)"
    )]
    fn aset<'py>(
        &self,
        py: Python<'py>,
        key: String,
        payload: &Bound<'py, PyAny>,
        ttl_seconds: Option<f64>,
        compress: Option<&Bound<'py, PyAny>>,
        compression: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let opts = self.options(ttl_seconds, compress, compression)?;
        let Some((value, opts)) = convert::payload(payload)?.whole(opts) else {
            return Err(PyTypeError::new_err(
                "aset takes str, bytes, dict or list; stream an iterator with set() \
                 (for example through asyncio.to_thread)",
            ));
        };
        crate::aio::set(py, self.cache.clone(), key, value, opts)
    }

    /// Removes `key` (awaitable); `True` when there was an entry.
    fn adelete<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        crate::aio::delete(py, self.cache.clone(), key)
    }

    /// Stores Arrow data under `key` as an Arrow IPC file: a pyarrow
    /// `Table`, `RecordBatch` or `RecordBatchReader`, a Polars `DataFrame`,
    /// or anything else with `__arrow_c_stream__` or `__arrow_c_array__`.
    /// Batches are taken without a copy and written one at a time as the
    /// source yields them (a `RecordBatchReader` larger than memory
    /// streams). `compression` is the IPC body compression: `"zstd"`
    /// (default), `"lz4"` or `"none"`. Nothing is stored if the source
    /// fails part way; the previous value stays.
    #[pyo3(signature = (key, data, ttl_seconds=None, compression="zstd"))]
    fn set_arrow(
        &self,
        py: Python<'_>,
        key: String,
        data: &Bound<'_, PyAny>,
        ttl_seconds: Option<f64>,
        compression: &str,
    ) -> PyResult<()> {
        let data: AnyRecordBatch = data.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "set_arrow takes Arrow data (a pyarrow Table, RecordBatch or \
                 RecordBatchReader, a Polars DataFrame, or an object with \
                 __arrow_c_stream__ or __arrow_c_array__), got {}",
                data.get_type()
                    .name()
                    .map_or_else(|_| "another type".into(), |n| n.to_string())
            ))
        })?;
        let ttl = self.options(ttl_seconds, None, None)?.ttl;
        crate::arrow::set_arrow(&self.cache, py, key, data, ttl, compression)
    }

    /// The Arrow data under `key` as a `pyarrow.Table`, or `None` when it
    /// is missing or expired. An entry that is not Arrow data raises
    /// `CacheError` naming the key and its kind.
    fn get_arrow<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        crate::arrow::get_arrow(&self.cache, py, key)
    }

    /// The Arrow data under `key` as a `pyarrow.RecordBatchReader` that
    /// reads and decodes one batch at a time as it is iterated (memory stays
    /// bounded for tables larger than memory), or `None`. A failure after
    /// the first batch (a damaged block further on) raises pyarrow's
    /// `ArrowInvalid` with the cache's message.
    fn get_arrow_batches<'py>(
        &self,
        py: Python<'py>,
        key: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        crate::arrow::get_arrow_batches(&self.cache, py, key)
    }

    /// The Arrow data under `key` as a `polars.DataFrame`, or `None`.
    fn get_polars<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let polars = py.import("polars")?;
        self.get_arrow(py, key)?
            .map(|table| polars.call_method1("from_arrow", (table,)))
            .transpose()
    }
}

fn seconds(name: &str, secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a positive number of seconds, got {secs}"
        ))
    })
}

/// A cache in a local directory: the seed's `LocalDiskCache`.
///
/// `max_entries` and `max_bytes` cap it (least recently *read* entries go
/// first); `lock_timeout` (seconds) bounds the wait for a key another worker
/// writes; `compression` is what `compress=True` uses (`"gzip"` by default,
/// `"zstd"` is smaller and faster); `durable=True` fsyncs every write.
#[pyclass(module = "etl_cache", extends = BaseCache, frozen)]
pub(crate) struct LocalDiskCache {
    /// The directory as it was given (`.cache` by default).
    cache_dir: String,
}

#[pymethods]
impl LocalDiskCache {
    #[new]
    #[pyo3(
        signature = (cache_dir=None, max_entries=None, *, max_bytes=None, lock_timeout=None, compression=None, durable=false),
        text_signature = "(cache_dir='.cache', max_entries=None, *, max_bytes=None, lock_timeout=None, compression=None, durable=False)"
    )]
    fn new(
        py: Python<'_>,
        cache_dir: Option<std::path::PathBuf>,
        max_entries: Option<u64>,
        max_bytes: Option<u64>,
        lock_timeout: Option<f64>,
        compression: Option<&str>,
        durable: bool,
    ) -> PyResult<PyClassInitializer<Self>> {
        let dir = cache_dir.unwrap_or_else(|| ".cache".into());
        let mut b = DiskCache::builder().root(&dir).durable(durable);
        if let Some(n) = max_entries {
            b = b.max_entries(n);
        }
        if let Some(n) = max_bytes {
            b = b.max_bytes(n);
        }
        if let Some(t) = lock_timeout {
            b = b.lock_timeout(seconds("lock_timeout", t)?);
        }
        let cache = runtime::block_on(py, b.build()).map_err(to_py)?;
        let description = format!("LocalDiskCache(cache_dir={:?})", dir.display().to_string());
        let base = BaseCache::new(Arc::new(cache), compression, description)?;
        let cache_dir = dir.display().to_string();
        Ok(PyClassInitializer::from(base).add_subclass(LocalDiskCache { cache_dir }))
    }

    /// The cache's directory, as it was given (etl-pycache's
    /// `get_local_cache_name`).
    fn get_local_cache_name(&self) -> String {
        self.cache_dir.clone()
    }
}

/// A cache in an S3 bucket (or any S3-compatible store): the seed's `S3Cache`.
///
/// `client` may be the seed's boto3 client: its endpoint, region and
/// credentials are used. Explicit arguments win over the client's.
/// `prefix` puts every key under a folder; `options` passes object_store
/// settings (`{"aws_virtual_hosted_style_request": "true"}`).
#[pyclass(module = "etl_cache", extends = BaseCache, frozen)]
pub(crate) struct S3Cache {}

#[pymethods]
impl S3Cache {
    #[new]
    #[pyo3(signature = (bucket_name, client=None, *, prefix=None, endpoint_url=None, region_name=None,
        aws_access_key_id=None, aws_secret_access_key=None, aws_session_token=None,
        compression=None, lock_timeout=None, options=None))]
    #[allow(clippy::too_many_arguments)] // the seed's and boto3's keyword arguments
    fn new(
        py: Python<'_>,
        bucket_name: &str,
        client: Option<&Bound<'_, PyAny>>,
        prefix: Option<&str>,
        endpoint_url: Option<String>,
        region_name: Option<String>,
        aws_access_key_id: Option<String>,
        aws_secret_access_key: Option<String>,
        aws_session_token: Option<String>,
        compression: Option<&str>,
        lock_timeout: Option<f64>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let mut s3 = match client {
            Some(c) => S3Settings::from_boto3(c)?,
            None => S3Settings::from_profile(py, aws_access_key_id.is_none())?,
        };
        s3.endpoint = endpoint_url.or(s3.endpoint);
        s3.region = region_name.or(s3.region);
        s3.key_id = aws_access_key_id.or(s3.key_id);
        s3.secret = aws_secret_access_key.or(s3.secret);
        s3.token = aws_session_token.or(s3.token);
        let mut opts = s3.options();
        opts.extend(dict_options(options)?);
        let url = match prefix {
            Some(p) => format!("s3://{bucket_name}/{}", p.trim_matches('/')),
            None => format!("s3://{bucket_name}"),
        };
        let mut b = ObjectCache::builder().url(&url).options(opts);
        if let Some(t) = lock_timeout {
            b = b.lock_timeout(seconds("lock_timeout", t)?);
        }
        let cache = b.build().map_err(to_py)?;
        let description = format!("S3Cache({url:?})");
        let base = BaseCache::new(Arc::new(cache), compression, description)?;
        Ok(PyClassInitializer::from(base).add_subclass(S3Cache {}))
    }
}

/// Endpoint, region and credentials for S3.
#[derive(Default)]
struct S3Settings {
    endpoint: Option<String>,
    region: Option<String>,
    key_id: Option<String>,
    secret: Option<String>,
    token: Option<String>,
}

impl S3Settings {
    /// Reads them from the AWS shared configuration files (`~/.aws/config`,
    /// `~/.aws/credentials`, the profile `AWS_PROFILE` names), as boto3 does
    /// for a client made without arguments; what the environment sets is
    /// left to object_store (see `etl_cache/_aws_profile.py`).
    fn from_profile(py: Python<'_>, keys: bool) -> PyResult<Self> {
        let found = py
            .import("etl_cache._aws_profile")?
            .call_method1("settings", (keys,))?;
        let found = found.cast::<PyDict>()?;
        let get = |name: &str| -> PyResult<Option<String>> {
            found
                .get_item(name)?
                .map(|v| v.extract::<String>())
                .transpose()
        };
        Ok(S3Settings {
            endpoint: get("endpoint_url")?,
            region: get("region_name")?,
            key_id: get("aws_access_key_id")?,
            secret: get("aws_secret_access_key")?,
            token: get("aws_session_token")?,
        })
    }

    /// Reads them from a boto3 S3 client (`client.meta` and its signer's
    /// credentials, frozen at this moment).
    fn from_boto3(client: &Bound<'_, PyAny>) -> PyResult<Self> {
        let not_client = |what: &str| {
            let ty = convert::type_name(client);
            PyTypeError::new_err(format!(
                "client must be a boto3 S3 client ({what} is missing on {ty}); or pass \
                 endpoint_url, region_name, aws_access_key_id and aws_secret_access_key"
            ))
        };
        let meta = client.getattr("meta").map_err(|_| not_client("meta"))?;
        let endpoint: Option<String> = meta
            .getattr("endpoint_url")
            .map_err(|_| not_client("meta.endpoint_url"))?
            .extract()?;
        let region: Option<String> = meta
            .getattr("region_name")
            .map_err(|_| not_client("meta.region_name"))?
            .extract()?;
        let creds = client
            .getattr("_request_signer")
            .and_then(|s| s.getattr("_credentials"))
            .map_err(|_| not_client("_request_signer._credentials"))?;
        if creds.is_none() {
            return Err(PyValueError::new_err(
                "the boto3 client has no credentials (unsigned or anonymous); pass \
                 aws_access_key_id and aws_secret_access_key",
            ));
        }
        let frozen = creds.call_method0("get_frozen_credentials")?;
        let text = |name: &str| -> PyResult<Option<String>> {
            let v = frozen.getattr(name)?;
            if v.is_none() {
                Ok(None)
            } else {
                Ok(Some(v.cast::<PyString>()?.to_str()?.to_owned()))
            }
        };
        // boto3 always has an endpoint; AWS's own is left to object_store,
        // which addresses buckets the way AWS expects.
        let endpoint = endpoint.filter(|e| !e.contains(".amazonaws.com"));
        Ok(S3Settings {
            endpoint,
            region,
            key_id: text("access_key")?,
            secret: text("secret_key")?,
            token: text("token")?,
        })
    }

    fn options(self) -> Vec<(String, String)> {
        let mut o = Vec::new();
        if let Some(e) = self.endpoint {
            if e.starts_with("http://") {
                o.push(("aws_allow_http".into(), "true".into()));
            }
            o.push(("aws_endpoint".into(), e));
        }
        let pairs = [
            ("aws_region", self.region),
            ("aws_access_key_id", self.key_id),
            ("aws_secret_access_key", self.secret),
            ("aws_session_token", self.token),
        ];
        o.extend(
            pairs
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v))),
        );
        o
    }
}

fn dict_options(options: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    let Some(d) = options else {
        return Ok(Vec::new());
    };
    d.iter()
        .map(|(k, v)| Ok((k.extract::<String>()?, v.str()?.to_str()?.to_owned())))
        .collect()
}

/// Opens the cache a URL names: a directory path, `file:///abs/path`,
/// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
/// `options` are object_store settings (credentials, endpoints); without them
/// they come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
#[pyfunction]
#[pyo3(signature = (url, options=None, *, compression=None))]
pub(crate) fn open(
    py: Python<'_>,
    url: &str,
    options: Option<&Bound<'_, PyDict>>,
    compression: Option<&str>,
) -> PyResult<BaseCache> {
    let object_url = matches!(
        etl_cache::Location::parse(url),
        Ok(etl_cache::Location::Object(_))
    );
    let cache: Arc<dyn Cache> = if object_url {
        Arc::new(ObjectCache::from_url_opts(url, dict_options(options)?).map_err(to_py)?)
    } else {
        runtime::block_on(py, etl_cache::open(url)).map_err(to_py)?
    };
    BaseCache::new(cache, compression, format!("etl_cache.open({url:?})"))
}
