//! What is known of an object: its metadata and when it was last checked,
//! and the form the cache keeps it in across restarts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::DateTime;
use object_store::ObjectMeta;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

/// An object's metadata as last seen, and when.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub meta: ObjectMeta,
    pub checked: SystemTime,
}

/// [`Known`] as kept in the cache (JSON).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredMeta {
    location: String,
    size: u64,
    last_modified_ns: i64,
    e_tag: Option<String>,
    version: Option<String>,
    checked_ns: u64,
}

impl StoredMeta {
    pub(crate) fn from_known(k: &Known) -> Self {
        StoredMeta {
            location: k.meta.location.to_string(),
            size: k.meta.size,
            last_modified_ns: k
                .meta
                .last_modified
                .timestamp_nanos_opt()
                .unwrap_or(i64::MAX),
            e_tag: k.meta.e_tag.clone(),
            version: k.meta.version.clone(),
            checked_ns: k
                .checked
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        }
    }

    /// `None` when the stored form does not make a valid path.
    pub(crate) fn into_known(self) -> Option<Known> {
        Some(Known {
            meta: ObjectMeta {
                location: Path::parse(&self.location).ok()?,
                last_modified: DateTime::from_timestamp_nanos(self.last_modified_ns),
                size: self.size,
                e_tag: self.e_tag,
                version: self.version,
            },
            checked: UNIX_EPOCH.checked_add(Duration::from_nanos(self.checked_ns))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_its_stored_form() {
        let k = Known {
            meta: ObjectMeta {
                location: Path::from("lake/part-0.parquet"),
                last_modified: DateTime::from_timestamp_nanos(1_700_000_000_123_456_789),
                size: 123,
                e_tag: Some("\"abc\"".into()),
                version: None,
            },
            checked: UNIX_EPOCH + Duration::from_nanos(1_800_000_000_000_000_001),
        };
        let json = serde_json::to_value(StoredMeta::from_known(&k)).unwrap();
        let back = serde_json::from_value::<StoredMeta>(json)
            .unwrap()
            .into_known()
            .unwrap();
        assert_eq!(back.meta, k.meta);
        assert_eq!(back.checked, k.checked);
    }
}
