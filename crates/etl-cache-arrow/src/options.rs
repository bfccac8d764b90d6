//! Options of a write of record batches.

use std::time::{Duration, SystemTime};

use arrow_ipc::CompressionType;
use etl_cache_core::{Compression, Kind, SetOptions};

/// How the bodies of the record batches are compressed inside the Arrow IPC
/// file (the IPC format's own body compression, which every Arrow reader
/// understands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum IpcCompression {
    /// Uncompressed bodies.
    None,
    /// LZ4 frames: the fastest to read and write, larger than zstd.
    Lz4,
    /// Zstandard: smaller, still fast; the default.
    #[default]
    Zstd,
}

impl IpcCompression {
    pub(crate) fn codec(self) -> Option<CompressionType> {
        match self {
            IpcCompression::None => None,
            IpcCompression::Lz4 => Some(CompressionType::LZ4_FRAME),
            IpcCompression::Zstd => Some(CompressionType::ZSTD),
        }
    }
}

/// Options of [`crate::ArrowCacheExt::set_batches`] and
/// [`crate::ArrowCacheExt::get_or_compute_batches`]: time to live and the
/// IPC body compression.
///
/// The cache's own compression ([`SetOptions::compression`]) is always off
/// for these entries: the payload must stay an Arrow IPC file as stored (so
/// that `etl-cache get KEY -o out.arrow` writes one), and its bodies are
/// compressed by the IPC format already.
///
/// ```
/// use etl_cache_arrow::{ArrowOptions, IpcCompression};
/// let opts = ArrowOptions::new().ttl_seconds(3600).compression(IpcCompression::Lz4);
/// assert_eq!(opts.ipc_compression(), IpcCompression::Lz4);
/// assert_eq!(opts.set_options().kind, Some(etl_cache_core::Kind::Arrow));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct ArrowOptions {
    ttl: Option<Duration>,
    expires_by: Option<SystemTime>,
    compression: IpcCompression,
}

impl ArrowOptions {
    /// No TTL, zstd bodies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expire the entry `ttl` after it is written.
    pub fn ttl(self, ttl: Duration) -> Self {
        ArrowOptions {
            ttl: Some(ttl),
            ..self
        }
    }

    /// Expire the entry after `secs` seconds.
    pub fn ttl_seconds(self, secs: u64) -> Self {
        self.ttl(Duration::from_secs(secs))
    }

    /// Expire the entry at `at` at the latest (see [`SetOptions::expires_by`]).
    pub fn expires_by(self, at: SystemTime) -> Self {
        ArrowOptions {
            expires_by: Some(at),
            ..self
        }
    }

    /// Compress the batch bodies with `compression` (zstd by default).
    pub fn compression(self, compression: IpcCompression) -> Self {
        ArrowOptions {
            compression,
            ..self
        }
    }

    /// The IPC body compression.
    pub fn ipc_compression(&self) -> IpcCompression {
        self.compression
    }

    /// The options of the cache write: kind [`Kind::Arrow`], no cache-level
    /// compression, the TTL and expiry given here.
    pub fn set_options(&self) -> SetOptions {
        let mut opts = SetOptions::new()
            .compression(Compression::NONE)
            .kind(Kind::Arrow);
        if let Some(ttl) = self.ttl {
            opts = opts.ttl(ttl);
        }
        if let Some(at) = self.expires_by {
            opts = opts.expires_by(at);
        }
        opts
    }
}
