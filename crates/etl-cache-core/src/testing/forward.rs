//! Pass-through test wrappers: the [`Hooks`] a wrapper cache implements and
//! [`forward_cache!`](crate::forward_cache), which writes the `Cache`
//! methods that hand each call on to the wrapped cache through those hooks.
//!
//! A test wrapper counts, pauses, refuses or reshapes a few calls and
//! passes all the others on unchanged. It keeps its own struct (the
//! wrapped cache and the state the test reads), implements [`Hooks`] for
//! what it changes, and names in its `#[async_trait] impl Cache` block the
//! methods it passes on:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use etl_cache_core::testing::{Hooks, Op};
//! use etl_cache_core::{async_trait, Cache, DynCache, MemoryCache, Result};
//!
//! /// Counts the reads of whole values.
//! #[derive(Debug, Default)]
//! struct Counted {
//!     inner: MemoryCache,
//!     gets: AtomicUsize,
//! }
//!
//! #[async_trait]
//! impl Hooks for Counted {
//!     fn inner(&self) -> &DynCache {
//!         &self.inner
//!     }
//!     async fn before(&self, op: Op, _key: &str) -> Result<()> {
//!         if op == Op::Get {
//!             self.gets.fetch_add(1, Ordering::SeqCst);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! #[async_trait]
//! impl Cache for Counted {
//!     etl_cache_core::forward_cache! {
//!         set, set_stream, get, get_stream, head, delete, list, purge_expired, clear, stats
//!     }
//! }
//!
//! let cache = Counted::default();
//! assert_eq!(cache.get("k").await.unwrap(), None);
//! // `get_entry` is not named: the trait's own body runs, over `get_stream`.
//! assert_eq!(cache.get_entry("k").await.unwrap(), None);
//! assert_eq!(cache.gets.load(Ordering::SeqCst), 1);
//! # }
//! ```
//!
//! A method the wrapper does not name keeps the trait's own body, which
//! calls the wrapper's other methods (so their hooks see it): naming a
//! method or not is the choice between the inner cache's version and the
//! default. A method can also be written by hand next to the macro.
//! `handle_id` and `handle` are never passed on (a wrapper changes what
//! the cache does, so it must not share the inner cache's identity): a
//! wrapper that needs them writes them by hand.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    ByteStream, DynCache, EntryMeta, GetStream, InitFuture, Removal, Result, SetOptions, Stats,
    Value,
};

/// A call on one key, as [`Hooks`] see it: each names the `Cache` method
/// of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `set`.
    Set,
    /// `set_stream`.
    SetStream,
    /// `get`.
    Get,
    /// `get_entry`.
    GetEntry,
    /// `get_raw`.
    GetRaw,
    /// `get_stream`.
    GetStream,
    /// `get_range`.
    GetRange,
    /// `head`.
    Head,
    /// `contains`.
    Contains,
    /// `delete`.
    Delete,
    /// `get_or_insert_boxed`.
    GetOrInsert,
    /// `last_removal`.
    LastRemoval,
}

impl Op {
    /// The name of the `Cache` method, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Op::Set => "set",
            Op::SetStream => "set_stream",
            Op::Get => "get",
            Op::GetEntry => "get_entry",
            Op::GetRaw => "get_raw",
            Op::GetStream => "get_stream",
            Op::GetRange => "get_range",
            Op::Head => "head",
            Op::Contains => "contains",
            Op::Delete => "delete",
            Op::GetOrInsert => "get_or_insert_boxed",
            Op::LastRemoval => "last_removal",
        }
    }
}

/// What a pass-through wrapper adds to the calls it hands on to the cache
/// it wraps. Every hook but [`Hooks::inner`] does nothing by default.
///
/// A call on one key runs [`Hooks::before`], then the inner cache's method
/// (with the argument hooks below applied), then [`Hooks::after`]. The
/// calls on no key (`list`, `list_all`, `purge_expired`, `clear`, `stats`)
/// go straight to the inner cache.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// The cache the calls are handed on to.
    fn inner(&self) -> &DynCache;

    /// Runs before the call `op` on `key` reaches the inner cache: it may
    /// count it, pause it (on a gate the test opens), or refuse it by
    /// returning an error, which the call returns without going further.
    async fn before(&self, op: Op, key: &str) -> Result<()> {
        let _ = (op, key);
        Ok(())
    }

    /// Runs once the inner cache has answered the call `op` on `key`
    /// (`ok` says whether it succeeded), before the answer is returned:
    /// to count what was done, or to pause a call after its work.
    async fn after(&self, op: Op, key: &str, ok: bool) {
        let _ = (op, key, ok);
    }

    /// Whether the read `op` on `key` is answered as a miss (`None`, or
    /// `false` for `contains`) without asking the inner cache, as a read
    /// made just before another writer's set would be. Asked after
    /// [`Hooks::before`], for the reads `get`, `get_entry`, `get_raw`,
    /// `get_stream`, `get_range`, `head` and `contains`; [`Hooks::after`]
    /// then runs as for an answer of the inner cache.
    fn miss(&self, op: Op, key: &str) -> bool {
        let _ = (op, key);
        false
    }

    /// Runs for a `set`, after [`Hooks::before`], with the value to be
    /// stored: to pause or count the sets of some kind of value.
    async fn before_set(&self, key: &str, value: &Value) {
        let _ = (key, value);
    }

    /// The stream a `set_stream` hands on to the inner cache, made from
    /// the caller's: to slow its pieces down or count them.
    fn stream_in(&self, key: &str, stream: ByteStream) -> ByteStream {
        let _ = key;
        stream
    }

    /// The computation a `get_or_insert_boxed` hands on to the inner
    /// cache, made from the caller's: to see when it begins.
    fn init<'a>(&'a self, key: &'a str, init: InitFuture<'a>) -> InitFuture<'a> {
        let _ = key;
        init
    }
}

/// Runs `call` (the inner cache's answer to `op` on `key`) between the
/// hooks [`Hooks::before`] and [`Hooks::after`].
async fn call<H: Hooks, T>(
    hooks: &H,
    op: Op,
    key: &str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    hooks.before(op, key).await?;
    let r = call.await;
    hooks.after(op, key, r.is_ok()).await;
    r
}

/// As [`call`], for a read that [`Hooks::miss`] may answer as a miss
/// (the default value) without running it.
async fn read<H: Hooks, T: Default>(
    hooks: &H,
    op: Op,
    key: &str,
    read: impl Future<Output = Result<T>>,
) -> Result<T> {
    let answer = async {
        if hooks.miss(op, key) {
            return Ok(T::default());
        }
        read.await
    };
    call(hooks, op, key, answer).await
}

/// `set` through the hooks.
pub async fn set<H: Hooks>(h: &H, key: &str, value: Value, opts: SetOptions) -> Result<EntryMeta> {
    let set = async {
        h.before_set(key, &value).await;
        h.inner().set(key, value, opts).await
    };
    call(h, Op::Set, key, set).await
}

/// `set_stream` through the hooks.
pub async fn set_stream<H: Hooks>(
    h: &H,
    key: &str,
    stream: ByteStream,
    opts: SetOptions,
) -> Result<EntryMeta> {
    let set = async {
        h.inner()
            .set_stream(key, h.stream_in(key, stream), opts)
            .await
    };
    call(h, Op::SetStream, key, set).await
}

/// `get` through the hooks.
pub async fn get<H: Hooks>(h: &H, key: &str) -> Result<Option<Value>> {
    read(h, Op::Get, key, h.inner().get(key)).await
}

/// `get_entry` through the hooks.
pub async fn get_entry<H: Hooks>(h: &H, key: &str) -> Result<Entry<Value>> {
    read(h, Op::GetEntry, key, h.inner().get_entry(key)).await
}

/// `get_raw` through the hooks.
pub async fn get_raw<H: Hooks>(h: &H, key: &str) -> Result<RawEntry> {
    read(h, Op::GetRaw, key, h.inner().get_raw(key)).await
}

/// `get_stream` through the hooks.
pub async fn get_stream<H: Hooks>(
    h: &H,
    key: &str,
    chunk_size: usize,
) -> Result<Option<GetStream>> {
    read(h, Op::GetStream, key, h.inner().get_stream(key, chunk_size)).await
}

/// `get_range` through the hooks.
pub async fn get_range<H: Hooks>(h: &H, key: &str, range: Range<u64>) -> Result<RawEntry> {
    read(h, Op::GetRange, key, h.inner().get_range(key, range)).await
}

/// `head` through the hooks.
pub async fn head<H: Hooks>(h: &H, key: &str) -> Result<Option<EntryMeta>> {
    read(h, Op::Head, key, h.inner().head(key)).await
}

/// `contains` through the hooks.
pub async fn contains<H: Hooks>(h: &H, key: &str) -> Result<bool> {
    read(h, Op::Contains, key, h.inner().contains(key)).await
}

/// `delete` through the hooks.
pub async fn delete<H: Hooks>(h: &H, key: &str) -> Result<bool> {
    call(h, Op::Delete, key, h.inner().delete(key)).await
}

/// `last_removal` through the hooks.
pub async fn last_removal<H: Hooks>(h: &H, key: &str) -> Result<Option<Removal>> {
    call(h, Op::LastRemoval, key, h.inner().last_removal(key)).await
}

/// `get_or_insert_boxed` through the hooks.
pub async fn get_or_insert_boxed<'a, H: Hooks>(
    h: &'a H,
    key: &'a str,
    opts: SetOptions,
    init: InitFuture<'a>,
) -> Result<Value> {
    let run = async move {
        let init = h.init(key, init);
        h.inner().get_or_insert_boxed(key, opts, init).await
    };
    call(h, Op::GetOrInsert, key, run).await
}

/// `purge_expired`, straight to the inner cache.
pub async fn purge_expired<H: Hooks>(h: &H) -> Result<u64> {
    h.inner().purge_expired().await
}

/// `clear`, straight to the inner cache.
pub async fn clear<H: Hooks>(h: &H) -> Result<u64> {
    h.inner().clear().await
}

/// `stats`, straight to the inner cache.
pub async fn stats<H: Hooks>(h: &H) -> Result<Stats> {
    h.inner().stats().await
}

/// Writes, inside an `#[async_trait] impl Cache for Wrapper` block, each
/// named `Cache` method as a call of the wrapped cache through the
/// wrapper's [`Hooks`](crate::testing::Hooks) (see
/// [`testing::forward`](crate::testing::forward)):
///
/// ```ignore
/// #[async_trait]
/// impl Cache for Wrapper {
///     etl_cache_core::forward_cache! {
///         set, set_stream, get, get_stream, head, delete, list, purge_expired, clear, stats
///     }
/// }
/// ```
///
/// Every method of `Cache` can be named but `handle_id` and `handle`. A
/// method not named keeps the trait's own body (or is written by hand in
/// the block). `#[async_trait]` rewrites only the `async fn`s written in
/// the block itself, so the async methods are written here in the form it
/// gives them: a boxed `Send` future that borrows its arguments.
#[macro_export]
macro_rules! forward_cache {
    ($($method:ident),+ $(,)?) => {
        $($crate::forward_cache!(@method $method);)+
    };

    (@method set) => { $crate::forward_cache!(@write set value: $crate::Value); };
    (@method set_stream) => {
        $crate::forward_cache!(@write set_stream stream: $crate::ByteStream);
    };
    (@method get) => { $crate::forward_cache!(@read get $crate::Value); };
    (@method get_entry) => {
        $crate::forward_cache!(@key get_entry -> $crate::testing::forward::Entry<$crate::Value>);
    };
    (@method head) => { $crate::forward_cache!(@read head $crate::EntryMeta); };
    (@method get_raw) => {
        $crate::forward_cache!(@key get_raw -> $crate::testing::forward::RawEntry);
    };
    (@method contains) => { $crate::forward_cache!(@key contains -> bool); };
    (@method last_removal) => { $crate::forward_cache!(@read last_removal $crate::Removal); };
    (@method delete) => { $crate::forward_cache!(@key delete -> bool); };
    (@method get_stream) => {
        $crate::forward_cache!(@async get_stream ('life0, 'life1) (
            key: &'life1 str, chunk_size: usize
        ) -> ::std::option::Option<$crate::GetStream>);
    };
    (@method get_range) => {
        $crate::forward_cache!(@async get_range ('life0, 'life1) (
            key: &'life1 str, range: ::std::ops::Range<u64>
        ) -> $crate::testing::forward::RawEntry);
    };
    (@method get_or_insert_boxed) => {
        $crate::forward_cache!(@async get_or_insert_boxed ('a) (
            key: &'a str, opts: $crate::SetOptions, init: $crate::InitFuture<'a>
        ) -> $crate::Value);
    };
    (@method purge_expired) => { $crate::forward_cache!(@async purge_expired ('life0) () -> u64); };
    (@method list) => { $crate::forward_cache!(@list list); };
    (@method clear) => { $crate::forward_cache!(@async clear ('life0) () -> u64); };
    (@method list_all) => { $crate::forward_cache!(@list list_all); };
    (@method stats) => { $crate::forward_cache!(@async stats ('life0) () -> $crate::Stats); };
    (@method $other:ident) => {
        ::std::compile_error!(::std::concat!(
            "forward_cache! cannot write `", ::std::stringify!($other), "`: write it by hand"
        ));
    };

    // A read of one key that may miss.
    (@read $name:ident $found:ty) => {
        $crate::forward_cache!(@key $name -> ::std::option::Option<$found>);
    };
    // `set` or `set_stream`: a key, what to store, the options.
    (@write $name:ident $what:ident: $ty:ty) => {
        $crate::forward_cache!(@async $name ('life0, 'life1)
            (key: &'life1 str, $what: $ty, opts: $crate::SetOptions) -> $crate::EntryMeta);
    };
    // A method of one argument, the key.
    (@key $name:ident -> $out:ty) => {
        $crate::forward_cache!(@async $name ('life0, 'life1) (key: &'life1 str) -> $out);
    };
    // `list` or `list_all`: no hooks, straight to the inner cache.
    (@list $name:ident) => {
        fn $name(
            &self,
            prefix: ::std::option::Option<&str>,
        ) -> $crate::testing::forward::EntryStream {
            $crate::testing::Hooks::inner(self).$name(prefix)
        }
    };
    // An async method as `#[async_trait]` writes it: `self` borrowed for
    // the first lifetime, each borrowed argument for its own, all outliving
    // the returned future.
    (@async $name:ident ($me:lifetime $(, $lt:lifetime)*)
        ($($arg:ident: $ty:ty),*) -> $out:ty
    ) => {
        fn $name<$me, $($lt,)* 'async_trait>(&$me self, $($arg: $ty),*)
            -> $crate::testing::forward::CallFuture<'async_trait, $out>
        where
            $me: 'async_trait,
            $($lt: 'async_trait,)*
            Self: 'async_trait,
        {
            ::std::boxed::Box::pin($crate::testing::forward::$name(self, $($arg),*))
        }
    };
}

/// The future of an async `Cache` method, as `#[async_trait]` writes it.
pub type CallFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// What `get_entry`, `get_raw` and `get_range` return: an entry's
/// metadata with its value or bytes.
pub type Entry<T> = Option<(EntryMeta, T)>;

/// What `get_raw` and `get_range` return.
pub type RawEntry = Entry<Bytes>;

/// What `list` and `list_all` return.
pub type EntryStream = futures::stream::BoxStream<'static, Result<EntryMeta>>;

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{Cache, Error, MemoryCache};

    /// Writes down the hooks run; refuses the key "no" and answers the
    /// reads of "gone" as misses.
    #[derive(Debug, Default)]
    struct Log {
        inner: MemoryCache,
        seen: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Hooks for Log {
        fn inner(&self) -> &DynCache {
            &self.inner
        }

        async fn before(&self, op: Op, key: &str) -> Result<()> {
            self.seen
                .lock()
                .unwrap()
                .push(format!("{} {key}", op.name()));
            if key == "no" {
                return Err(Error::InvalidInput {
                    message: "refused".into(),
                });
            }
            Ok(())
        }

        async fn after(&self, op: Op, key: &str, ok: bool) {
            self.seen
                .lock()
                .unwrap()
                .push(format!("{} {key} {ok}", op.name()));
        }

        fn miss(&self, _op: Op, key: &str) -> bool {
            key == "gone"
        }
    }

    #[async_trait]
    impl Cache for Log {
        crate::forward_cache! {
            set, set_stream, get, get_stream, get_range, head, delete, list, purge_expired, clear,
            stats
        }
    }

    #[tokio::test]
    async fn hooks_run_around_the_named_methods_and_defaults_reach_them() {
        let log = Log::default();
        for key in ["k", "gone"] {
            log.set(key, Value::from("v"), SetOptions::new())
                .await
                .unwrap();
        }
        let refused = log.set("no", Value::from("v"), SetOptions::new()).await;
        assert!(matches!(refused, Err(Error::InvalidInput { .. })));
        assert_eq!(log.get("gone").await.unwrap(), None);
        assert!(log.inner.get("gone").await.unwrap().is_some());
        // Not named: the trait's own body, over the wrapper's `get_stream`.
        assert!(log.get_entry("k").await.unwrap().is_some());
        let (_, part) = log.get_range("k", 0..1).await.unwrap().unwrap();
        assert_eq!(&part[..], b"v");
        assert_eq!(
            *log.seen.lock().unwrap(),
            [
                "set k",
                "set k true",
                "set gone",
                "set gone true",
                "set no",
                "get gone",
                "get gone true",
                "get_stream k",
                "get_stream k true",
                "get_range k",
                "get_range k true",
            ]
        );
    }
}
