//! What is known of an object: its metadata, its attributes and when it
//! was last checked, and the form the cache keeps them in across restarts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::DateTime;
use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes, ObjectMeta};
use serde::{Deserialize, Serialize};

/// An object's metadata and attributes as last seen, and when.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub meta: ObjectMeta,
    /// What the store answered with the object (content type, user
    /// metadata, ...), handed back with reads served from the cache.
    pub attributes: Attributes,
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
    /// The attributes as (name, value) pairs (see [`attribute_name`]);
    /// absent from what older versions kept, read as none.
    #[serde(default)]
    attributes: Vec<(String, String)>,
}

/// The name an attribute is kept under: the HTTP header it stands for, or
/// `meta:` and the name of user metadata. `None` for attributes this
/// version does not know (object_store may add some).
fn attribute_name(a: &Attribute) -> Option<String> {
    Some(match a {
        Attribute::ContentDisposition => "content-disposition".into(),
        Attribute::ContentEncoding => "content-encoding".into(),
        Attribute::ContentLanguage => "content-language".into(),
        Attribute::ContentType => "content-type".into(),
        Attribute::CacheControl => "cache-control".into(),
        Attribute::StorageClass => "storage-class".into(),
        Attribute::Metadata(name) => format!("meta:{name}"),
        _ => return None,
    })
}

/// The attribute `name` stands for ([`attribute_name`] read back).
fn attribute_of(name: &str) -> Option<Attribute> {
    Some(match name {
        "content-disposition" => Attribute::ContentDisposition,
        "content-encoding" => Attribute::ContentEncoding,
        "content-language" => Attribute::ContentLanguage,
        "content-type" => Attribute::ContentType,
        "cache-control" => Attribute::CacheControl,
        "storage-class" => Attribute::StorageClass,
        other => Attribute::Metadata(other.strip_prefix("meta:")?.to_owned().into()),
    })
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
            attributes: k
                .attributes
                .iter()
                .filter_map(|(a, v)| Some((attribute_name(a)?, v.to_string())))
                .collect(),
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
            attributes: self
                .attributes
                .into_iter()
                .filter_map(|(n, v)| Some((attribute_of(&n)?, AttributeValue::from(v))))
                .collect(),
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
            attributes: [
                (Attribute::ContentType, "application/vnd.apache.parquet"),
                (Attribute::CacheControl, "max-age=60"),
                (Attribute::ContentDisposition, "inline"),
                (Attribute::ContentEncoding, "identity"),
                (Attribute::ContentLanguage, "en"),
                (Attribute::StorageClass, "STANDARD"),
                (Attribute::Metadata("owner".into()), "etl"),
                (Attribute::Metadata("meta:odd".into()), "x"),
            ]
            .into_iter()
            .map(|(a, v)| (a, AttributeValue::from(v)))
            .collect(),
            checked: UNIX_EPOCH + Duration::from_nanos(1_800_000_000_000_000_001),
        };
        let json = serde_json::to_value(StoredMeta::from_known(&k)).unwrap();
        let back = serde_json::from_value::<StoredMeta>(json)
            .unwrap()
            .into_known()
            .unwrap();
        assert_eq!(back.meta, k.meta);
        assert_eq!(back.attributes, k.attributes);
        assert_eq!(back.checked, k.checked);
    }

    #[test]
    fn metadata_kept_before_attributes_were_reads_with_none() {
        let json = serde_json::json!({
            "location": "a/b", "size": 3, "last_modified_ns": 5,
            "e_tag": "\"t\"", "version": null, "checked_ns": 7
        });
        let k = serde_json::from_value::<StoredMeta>(json)
            .unwrap()
            .into_known()
            .unwrap();
        assert!(k.attributes.is_empty());
        assert_eq!(k.meta.e_tag.as_deref(), Some("\"t\""));
    }
}
