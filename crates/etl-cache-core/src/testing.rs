//! The shared contract suite. Every backend runs it with one macro call:
//!
//! ```rs
//! async fn make(clock: Arc<ManualClock>) -> Harness {
//!     let dir = tempfile::tempdir().unwrap();
//!     let cache = MyCache::open(dir.path(), clock.clone());
//!     Harness::new(Arc::new(cache), clock, dir)
//! }
//! etl_cache_core::contract_tests!(make);
//! ```
//!
//! `make` gets a [`ManualClock`](crate::ManualClock) that the backend must
//! read expiry from; the suite advances it instead of sleeping. The third
//! argument of [`Harness::new`] is kept alive for the test (a temporary
//! directory, a server).

mod entry_checks;
mod expiry_checks;
pub mod forward;
mod harness;
mod io_checks;
mod kind_checks;
mod obs_checks;
mod race_checks;
mod range_checks;
mod roundtrip_checks;

pub use self::entry_checks::{
    HOSTILE_KEYS, delete_and_clear, handle_ids_tell_handles_apart, head_reports_metadata,
    hostile_keys_are_plain_keys, invalid_keys_are_rejected, list_filters_by_prefix,
    stats_count_operations, typed_helpers,
};
pub use self::expiry_checks::{
    expires_by_bounds_the_expiry, extreme_ttls_are_refused_cleanly,
    purge_expired_removes_only_expired, ttl_hides_and_removes_expired,
};
pub use self::forward::{Hooks, Op};
pub use self::harness::{
    Harness, assert_no_changed_byte, assert_range_of_one_version, nested_json, noise_bytes,
    poll_then_drop, sample_bytes, stream_chunks,
};
pub use self::io_checks::{
    io_concurrent_writers_leave_one_whole_value, io_dropped_writer_keeps_previous_value,
    io_reader_reads_exact_bytes, io_set_between_writes_and_commit,
    io_shutdown_publishes_and_commit_reports_meta, io_writer_dropped_at_any_poll_publishes_nothing,
    io_writer_errors_carry_the_cache_error, io_writer_stores_exact_bytes,
    io_writers_on_two_handles_leave_one_whole_value,
};
pub use self::kind_checks::{
    arrow_kind_roundtrips, computed_values_keep_the_kind, json_bytes_store_a_json_entry,
    json_too_deep_to_read_is_never_stored, kind_only_on_byte_payloads,
};
pub use self::obs_checks::{
    Recorder, SeenSpan, concurrent_operations_report_their_own_outcome, operations_are_observed,
};
pub use self::race_checks::{
    concurrent_writers_leave_one_complete_value, failed_computation_stores_nothing,
    get_or_insert_returns_existing_value, single_flight_computes_once,
};
pub use self::range_checks::{ranges_come_from_one_version, ranges_read_the_logical_bytes};
pub use self::roundtrip_checks::{
    compression_roundtrips, dropped_stream_reader_leaves_entry, empty_values_roundtrip,
    failing_stream_keeps_previous_value, kinds_roundtrip_exactly, misses_are_none,
    overwrite_replaces, streams_roundtrip_in_exact_chunks, zero_chunk_size_is_invalid,
};

/// Generates one `#[tokio::test]` per contract check, each with a fresh cache
/// from `$make` (an `async fn(Arc<ManualClock>) -> Harness`).
#[macro_export]
macro_rules! contract_tests {
    ($make:path) => {
        $crate::with_contract_checks!($make => $crate::__contract_tests);
    };
}

/// Calls the macro after `=>` with `$make` and the name of every contract
/// check: `($make; check, check, ...)`. For suites that wrap the checks
/// their own way (a server that may be missing, say) and must not miss one.
#[macro_export]
macro_rules! with_contract_checks {
    ($make:path => $($callback:tt)+) => {
        $($callback)+!($make;
            kinds_roundtrip_exactly,
            empty_values_roundtrip,
            overwrite_replaces,
            misses_are_none,
            compression_roundtrips,
            streams_roundtrip_in_exact_chunks,
            failing_stream_keeps_previous_value,
            ttl_hides_and_removes_expired,
            purge_expired_removes_only_expired,
            invalid_keys_are_rejected,
            hostile_keys_are_plain_keys,
            list_filters_by_prefix,
            delete_and_clear,
            stats_count_operations,
            handle_ids_tell_handles_apart,
            typed_helpers,
            head_reports_metadata,
            zero_chunk_size_is_invalid,
            extreme_ttls_are_refused_cleanly,
            expires_by_bounds_the_expiry,
            json_too_deep_to_read_is_never_stored,
            concurrent_writers_leave_one_complete_value,
            dropped_stream_reader_leaves_entry,
            single_flight_computes_once,
            failed_computation_stores_nothing,
            get_or_insert_returns_existing_value,
            ranges_read_the_logical_bytes,
            ranges_come_from_one_version,
            io_writer_stores_exact_bytes,
            io_shutdown_publishes_and_commit_reports_meta,
            io_dropped_writer_keeps_previous_value,
            io_writer_dropped_at_any_poll_publishes_nothing,
            io_writer_errors_carry_the_cache_error,
            io_concurrent_writers_leave_one_whole_value,
            io_writers_on_two_handles_leave_one_whole_value,
            io_set_between_writes_and_commit,
            io_reader_reads_exact_bytes,
            arrow_kind_roundtrips,
            kind_only_on_byte_payloads,
            json_bytes_store_a_json_entry,
            computed_values_keep_the_kind,
            operations_are_observed,
            concurrent_operations_report_their_own_outcome,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ($make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let clock = ::std::sync::Arc::new($crate::ManualClock::new());
                let harness = $make(clock).await;
                $crate::testing::$name(&harness).await;
            }
        )*
    };
}
