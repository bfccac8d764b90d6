//! Options for writes.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::backend::blocks::BlockSize;
use crate::{Error, Kind, Result};

/// A compression codec. Reads find the codec in the entry's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// Stored as is.
    #[default]
    None,
    /// gzip (RFC 1952), as the seed's `compress=True`.
    Gzip,
    /// Zstandard: several times faster than gzip and smaller on text.
    Zstd,
}

impl Codec {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Zstd => 2,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::None),
            1 => Some(Codec::Gzip),
            2 => Some(Codec::Zstd),
            _ => None,
        }
    }

    /// The lowercase name: `none`, `gzip` or `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A codec with its level.
///
/// ```
/// use etl_cache_core::{Codec, Compression};
/// assert_eq!(Compression::gzip().codec(), Codec::Gzip);
/// assert_eq!("zstd:19".parse::<Compression>().unwrap(), Compression::zstd_level(19).unwrap());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Compression {
    codec: Codec,
    level: i32,
}

impl Compression {
    /// No compression.
    pub const NONE: Compression = Compression {
        codec: Codec::None,
        level: 0,
    };

    /// gzip at level 6, the seed's default.
    pub fn gzip() -> Self {
        Compression {
            codec: Codec::Gzip,
            level: 6,
        }
    }

    /// gzip at `level` (0 to 9).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a level outside 0..=9.
    pub fn gzip_level(level: u32) -> Result<Self> {
        if level > 9 {
            return Err(Error::InvalidInput {
                message: format!("gzip level {level} is out of range; use 0 to 9"),
            });
        }
        Ok(Compression {
            codec: Codec::Gzip,
            level: level as i32,
        })
    }

    /// zstd at level 3, its own default.
    pub fn zstd() -> Self {
        Compression {
            codec: Codec::Zstd,
            level: 3,
        }
    }

    /// zstd at `level` (1 to 22).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a level outside 1..=22.
    pub fn zstd_level(level: i32) -> Result<Self> {
        if !(1..=22).contains(&level) {
            return Err(Error::InvalidInput {
                message: format!("zstd level {level} is out of range; use 1 to 22"),
            });
        }
        Ok(Compression {
            codec: Codec::Zstd,
            level,
        })
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The level (0 for no compression).
    pub fn level(&self) -> i32 {
        self.level
    }
}

impl FromStr for Compression {
    type Err = Error;

    /// Parses `none`, `gzip`, `zstd`, or `gzip:LEVEL` / `zstd:LEVEL`.
    fn from_str(s: &str) -> Result<Self> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => {
                let level: i32 = l.trim().parse().map_err(|_| Error::InvalidInput {
                    message: format!("compression level {l:?} is not a number"),
                })?;
                (n.trim(), Some(level))
            }
            None => (s.trim(), None),
        };
        match (name.to_ascii_lowercase().as_str(), level) {
            ("none" | "off", None) => Ok(Compression::NONE),
            ("gzip" | "gz", None) => Ok(Compression::gzip()),
            ("gzip" | "gz", Some(l)) => {
                Compression::gzip_level(u32::try_from(l).unwrap_or(u32::MAX))
            }
            ("zstd" | "zst", None) => Ok(Compression::zstd()),
            ("zstd" | "zst", Some(l)) => Compression::zstd_level(l),
            _ => Err(Error::InvalidInput {
                message: format!(
                    "unknown compression {s:?}; use none, gzip, zstd, gzip:LEVEL or zstd:LEVEL"
                ),
            }),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.codec {
            Codec::None => f.write_str("none"),
            c => write!(f, "{c}:{}", self.level),
        }
    }
}

/// Options of one write: time to live and compression.
///
/// ```
/// use std::time::Duration;
/// use etl_cache_core::{Compression, SetOptions};
/// let opts = SetOptions::new().ttl(Duration::from_secs(3600)).compress(true);
/// assert_eq!(opts.compression, Compression::gzip());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[must_use]
pub struct SetOptions {
    /// How long the entry lives; `None` keeps it until evicted or deleted.
    pub ttl: Option<Duration>,
    /// How the payload is stored.
    pub compression: Compression,
    /// The entry expires at this instant at the latest (with a `ttl` too,
    /// at whichever comes first). For copies of an entry that must not
    /// outlive it, whatever time passes before the copy is written.
    pub expires_by: Option<SystemTime>,
    /// The kind a byte payload (a [`crate::Value::Bytes`], a stream) is
    /// stored as; `None` stores [`Kind::Bytes`]. Only byte payload kinds
    /// ([`Kind::Bytes`], [`Kind::Arrow`], and [`Kind::Json`] for whole
    /// bytes) may be given: see [`SetOptions::kind`].
    pub kind: Option<Kind>,
    /// The size of the checked blocks the stored payload is cut into;
    /// `None` for the backend's default (1 MiB): see
    /// [`SetOptions::check_block`].
    pub check_block: Option<BlockSize>,
}

impl SetOptions {
    /// No TTL, no compression.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expire the entry `ttl` after it is written.
    pub fn ttl(self, ttl: Duration) -> Self {
        SetOptions {
            ttl: Some(ttl),
            ..self
        }
    }

    /// Expire the entry after `secs` seconds, as the seed's `ttl_seconds`.
    pub fn ttl_seconds(self, secs: u64) -> Self {
        self.ttl(Duration::from_secs(secs))
    }

    /// Expire the entry at `at` at the latest, whenever it is written (with
    /// a TTL too, at whichever comes first). An instant already past stores
    /// an entry that reads as expired.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use etl_cache_core::SetOptions;
    /// let now = SystemTime::now();
    /// let by = now + Duration::from_secs(10);
    /// let opts = SetOptions::new().ttl_seconds(60).expires_by(by);
    /// assert_eq!(opts.expires_at(now)?, Some(by));
    /// assert_eq!(opts.expires_at(now - Duration::from_secs(55))?, Some(now + Duration::from_secs(5)));
    /// # Ok::<(), etl_cache_core::Error>(())
    /// ```
    pub fn expires_by(self, at: SystemTime) -> Self {
        SetOptions {
            expires_by: Some(at),
            ..self
        }
    }

    /// The seed's shorthand: `true` means gzip at its default level.
    pub fn compress(self, on: bool) -> Self {
        self.compression(if on {
            Compression::gzip()
        } else {
            Compression::NONE
        })
    }

    /// Store the payload with this codec and level.
    pub fn compression(self, compression: Compression) -> Self {
        SetOptions {
            compression,
            ..self
        }
    }

    /// Store a byte payload (a [`crate::Value::Bytes`] given to `set`, or a
    /// `set_stream`) as an entry of `kind`, for readers that tell payloads
    /// apart by kind: [`Kind::Arrow`] for the bytes of an Arrow IPC file.
    /// Reads give the bytes back as they went in; `head`, `list` and the
    /// metadata of reads report `kind`.
    ///
    /// [`Kind::Json`] stores whole bytes that hold a JSON document as a JSON
    /// entry, verbatim (key order, number digits and whitespace as given):
    /// the write checks that the document reads back (as
    /// [`crate::Value::from_stored`] reads it, nested at most
    /// [`crate::MAX_JSON_DEPTH`] levels) and refuses it otherwise; reads give
    /// a [`crate::Value::Json`] as for any JSON entry. A stream cannot be
    /// stored as JSON, since it could only be checked once written.
    ///
    /// [`Kind::Text`] is refused by every write ([`SetOptions::validate`]),
    /// and so is a text or JSON value written with any kind
    /// ([`SetOptions::value_kind`]).
    ///
    /// ```
    /// use etl_cache_core::{Kind, SetOptions, Value};
    /// let opts = SetOptions::new().kind(Kind::Arrow);
    /// assert_eq!(opts.value_kind("k", &Value::Bytes("ARROW1".into()))?, Kind::Arrow);
    /// assert!(opts.value_kind("k", &Value::Text("text".into())).is_err());
    ///
    /// let json = SetOptions::new().kind(Kind::Json);
    /// let doc = Value::Bytes(r#"{"b": 1, "a": 2}"#.into());
    /// assert_eq!(json.value_kind("k", &doc)?, Kind::Json);
    /// assert!(json.value_kind("k", &Value::Bytes("{not json".into())).is_err());
    /// assert!(json.stream_kind("k").is_err());
    /// assert!(SetOptions::new().kind(Kind::Text).validate().is_err());
    /// # Ok::<(), etl_cache_core::Error>(())
    /// ```
    pub fn kind(self, kind: Kind) -> Self {
        SetOptions {
            kind: Some(kind),
            ..self
        }
    }

    /// Cut the stored payload into checked blocks of `size` (each followed
    /// by its checksum) instead of the default 1 MiB. A read of part of the
    /// entry ([`crate::Cache::get_range`]) reads and checks the blocks that
    /// hold the part, so smaller blocks make small ranges of large entries
    /// cheaper: a random 64 KiB range of an 8 MiB entry in a `DiskCache`
    /// read in 1.2–1.3x the time of a whole 64 KiB entry with 64 KiB
    /// blocks, 2.8x with 1 MiB blocks. Each block costs 4 bytes and a
    /// checksum; sizes below [`MIN_CHECK_BLOCK`] (4 KiB) are refused by the
    /// write ([`Error::InvalidInput`]). Readers take the size from each
    /// entry, so entries of any block size live side by side. `ObjectCache`
    /// stores the blocks too, but reads an entry whole for a range, so it
    /// gains nothing from smaller ones; `MemoryCache` ignores the option;
    /// `TieredCache` passes it to its tiers (a copy promoted by a read gets
    /// the default).
    ///
    /// ```
    /// use etl_cache_core::{BlockSize, SetOptions};
    /// let opts = SetOptions::new().check_block(BlockSize::new(64 << 10).unwrap());
    /// assert_eq!(opts.check_block.map(BlockSize::get), Some(65536));
    /// ```
    pub fn check_block(self, size: BlockSize) -> Self {
        SetOptions {
            check_block: Some(size),
            ..self
        }
    }

    /// Checks a write of the whole `value` under `key` and gives the kind
    /// of the entry it stores: the value's own kind, or
    /// [`SetOptions::kind`] for a byte payload. Checks the value
    /// ([`crate::Value::check`]) and, for bytes stored as [`Kind::Json`],
    /// that they hold a JSON document that reads back. Backends call it in
    /// every `set`, before they write anything.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the key when a kind is given for a
    /// text or JSON value, when the kind given is not one a byte payload
    /// takes, when bytes stored as JSON are not a JSON document that reads
    /// back, or as [`crate::Value::check`].
    pub fn value_kind(&self, key: &str, value: &crate::Value) -> Result<Kind> {
        value.check(key)?;
        self.check_block_ok(key)?;
        match (value, self.kind) {
            (v, None) => Ok(v.kind()),
            (crate::Value::Bytes(b), Some(Kind::Json)) => {
                crate::value::check_json_text(b).map_err(|reason| Error::InvalidInput {
                    message: format!(
                        "the bytes for key {:?} cannot be stored as kind json: {reason}",
                        Error::display_key(key)
                    ),
                })?;
                Ok(Kind::Json)
            }
            (crate::Value::Bytes(_), Some(k)) => byte_kind(key, k),
            (v, Some(k)) => Err(Error::InvalidInput {
                message: format!(
                    "the {} value for key {:?} cannot be stored as kind {k}: only a byte \
                     payload takes a kind (store the bytes, or leave the kind unset)",
                    v.kind(),
                    Error::display_key(key)
                ),
            }),
        }
    }

    /// The kind of the entry a `set_stream` (or any streamed write) of
    /// `key` with these options stores: [`Kind::Bytes`], or
    /// [`SetOptions::kind`]. Backends call it in every streamed write,
    /// before they read the stream.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the key when the kind given is not
    /// one a stream takes: text, or JSON (a JSON document is checked before
    /// it is stored, which a stream allows only once it has been written:
    /// collect the bytes and `set` them).
    pub fn stream_kind(&self, key: &str) -> Result<Kind> {
        self.check_block_ok(key)?;
        match self.kind {
            None => Ok(Kind::Bytes),
            Some(Kind::Json) => Err(Error::InvalidInput {
                message: format!(
                    "key {:?}: a stream cannot be stored as kind json, since the document \
                     could only be checked once written; collect the bytes and set them whole",
                    Error::display_key(key)
                ),
            }),
            Some(k) => byte_kind(key, k),
        }
    }

    /// When an entry written at `now` with these options expires: `now`
    /// plus the TTL, or [`SetOptions::expires_by`] if that comes first.
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidInput`] when the TTL is longer than [`MAX_TTL`]
    /// (an expiry that far out cannot be stored; leave the TTL unset to keep
    /// an entry until it is evicted or deleted).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use etl_cache_core::{MAX_TTL, SetOptions};
    /// let now = SystemTime::now();
    /// let opts = SetOptions::new().ttl_seconds(60);
    /// assert_eq!(opts.expires_at(now)?, Some(now + Duration::from_secs(60)));
    /// assert!(SetOptions::new().ttl(MAX_TTL + Duration::from_secs(1)).expires_at(now).is_err());
    /// # Ok::<(), etl_cache_core::Error>(())
    /// ```
    pub fn expires_at(&self, now: SystemTime) -> crate::Result<Option<SystemTime>> {
        let by_ttl = self.expires_after_ttl(now)?;
        // An instant further out than MAX_TTL is brought in to it: an
        // expiry that far cannot be stored, and earlier is still "by".
        let by = self
            .expires_by
            .map(|at| now.checked_add(MAX_TTL).map_or(at, |max| at.min(max)));
        Ok(match (by_ttl, by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    fn expires_after_ttl(&self, now: SystemTime) -> crate::Result<Option<SystemTime>> {
        let Some(ttl) = self.ttl else {
            return Ok(None);
        };
        if ttl > MAX_TTL {
            return Err(crate::Error::InvalidInput {
                message: format!(
                    "ttl of {} s is longer than the largest supported, {} s (100 years); \
                     leave it unset to keep the entry until it is evicted or deleted",
                    ttl.as_secs(),
                    MAX_TTL.as_secs()
                ),
            });
        }
        // Within 100 years of any clock this machine can have, this cannot
        // overflow; checked all the same, for a clock set far ahead.
        now.checked_add(ttl)
            .map(Some)
            .ok_or_else(|| crate::Error::InvalidInput {
                message: format!("ttl of {} s overflows the clock", ttl.as_secs()),
            })
    }

    /// Checks the options without writing: [`SetOptions::expires_at`] at the
    /// current time, and the kind.
    ///
    /// # Errors
    ///
    /// As [`SetOptions::expires_at`]; [`Error::InvalidInput`] when
    /// [`SetOptions::kind`] is text, which no write takes. (JSON is a kind
    /// for whole bytes only: [`SetOptions::stream_kind`] refuses it.)
    pub fn validate(&self) -> crate::Result<()> {
        if let Some(k @ Kind::Text) = self.kind {
            return Err(not_a_byte_kind(k));
        }
        if let Some(message) = self.small_check_block() {
            return Err(Error::InvalidInput { message });
        }
        self.expires_at(SystemTime::now()).map(|_| ())
    }

    /// [`SetOptions::validate`] for a write of `key`: an error names the key.
    ///
    /// # Errors
    ///
    /// As [`SetOptions::validate`].
    pub fn validate_for(&self, key: &str) -> crate::Result<()> {
        self.validate().map_err(|e| match e {
            Error::InvalidInput { message } => Error::InvalidInput {
                message: format!("key {:?}: {message}", Error::display_key(key)),
            },
            e => e,
        })
    }
}

impl SetOptions {
    /// Why [`SetOptions::check_block`] is refused, if it is.
    fn small_check_block(&self) -> Option<String> {
        self.check_block
            .filter(|b| b.get() < MIN_CHECK_BLOCK)
            .map(|b| {
                format!(
                    "check_block of {b} is below the smallest taken, {} KiB (each block \
                     costs a read and a checksum of its own)",
                    MIN_CHECK_BLOCK >> 10
                )
            })
    }

    /// [`SetOptions::small_check_block`] as an error naming `key`.
    fn check_block_ok(&self, key: &str) -> Result<()> {
        match self.small_check_block() {
            Some(why) => Err(Error::InvalidInput {
                message: format!("key {:?}: {why}", Error::display_key(key)),
            }),
            None => Ok(()),
        }
    }
}

/// The smallest [`SetOptions::check_block`] a write takes: 4 KiB. (The
/// format allows blocks down to 16 bytes, which would cost a read, a
/// checksum and a buffer per 16 bytes.)
pub const MIN_CHECK_BLOCK: u64 = 4 << 10;

/// `kind` for a byte payload: bytes and arrow are taken.
fn byte_kind(key: &str, kind: Kind) -> Result<Kind> {
    match kind {
        Kind::Bytes | Kind::Arrow => Ok(kind),
        k => Err(Error::InvalidInput {
            message: format!(
                "key {:?}: {}",
                Error::display_key(key),
                not_a_byte_kind_message(k)
            ),
        }),
    }
}

fn not_a_byte_kind(kind: Kind) -> Error {
    Error::InvalidInput {
        message: not_a_byte_kind_message(kind),
    }
}

fn not_a_byte_kind_message(kind: Kind) -> String {
    format!(
        "kind {kind} cannot be set on a write: only a byte payload takes a kind \
         (bytes, arrow, or json for whole bytes); text and JSON values carry their own"
    )
}

/// The longest TTL a write accepts: 100 years. Entries store their expiry as
/// nanoseconds since the Unix epoch in 64 bits (until the year 2554).
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Reads the environment variable `name` for a builder's `from_env`:
/// `None` when unset, its trimmed value parsed as `T` otherwise.
///
/// # Errors
///
/// [`crate::Error::InvalidInput`] naming the variable when its value does
/// not parse.
pub fn env_var<T: std::str::FromStr>(name: &str) -> crate::Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| crate::Error::InvalidInput {
                message: format!("environment variable {name}={v:?} does not parse"),
            }),
        Err(_) => Ok(None),
    }
}
