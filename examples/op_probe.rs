//! Runs one cache operation many times, for an instruction counter.
//!
//! Timings on a shared machine move by more than the changes worth
//! measuring; callgrind's instruction counts do not. Counting a run of N
//! operations and one of 2N, and taking the difference, gives the cost of N
//! operations without the set-up's:
//!
//! ```text
//! cargo build --release --example op_probe --features object
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/op_probe disk get 1024 2000
//! ```
//!
//! Arguments: backend (`disk`: a DiskCache in a temp dir, `memory-object`:
//! an ObjectCache on object_store's InMemory), operation (`set` or `get`),
//! value size in bytes (uncompressed bytes), number of operations.

use std::sync::Arc;

use etl_cache::object::ObjectCache;
use etl_cache::object::object_store::memory::InMemory;
use etl_cache::{Cache, DiskCache, SetOptions, Value};

fn usage() -> ! {
    eprintln!("usage: op_probe disk|memory-object set|get SIZE_BYTES COUNT");
    std::process::exit(2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backend, op, size, count] = &args[..] else {
        usage()
    };
    let size: usize = size.parse().unwrap_or_else(|_| usage());
    let count: usize = count.parse().unwrap_or_else(|_| usage());
    // One thread: the count is that of the operation, not of a scheduler
    // moving work between threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    rt.block_on(async {
        let cache: Arc<dyn Cache> = match backend.as_str() {
            "disk" => Arc::new(DiskCache::open(dir.path()).await?),
            "memory-object" => Arc::new(ObjectCache::new(Arc::new(InMemory::new()), "probe")?),
            _ => usage(),
        };
        let value = Value::Bytes(bytes::Bytes::from(vec![7u8; size]));
        let opts = SetOptions::new();
        match op.as_str() {
            "set" => {
                for i in 0..count {
                    cache
                        .set(&format!("k{}", i % 16), value.clone(), opts)
                        .await?;
                }
            }
            "get" => {
                cache.set("k", value, opts).await?;
                for _ in 0..count {
                    let got = cache.get("k").await?;
                    assert!(got.is_some(), "the entry just set is there");
                }
            }
            _ => usage(),
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
