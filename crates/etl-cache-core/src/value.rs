//! Values and their kinds.

use std::fmt;

use bytes::Bytes;

/// What a stored entry holds. Stored with the entry, never guessed from content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// UTF-8 text.
    Text,
    /// Raw bytes (also what `set_stream` stores).
    Bytes,
    /// A JSON document.
    Json,
}

impl Kind {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Kind::Text => 1,
            Kind::Bytes => 2,
            Kind::Json => 3,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Text),
            2 => Some(Kind::Bytes),
            3 => Some(Kind::Json),
            _ => None,
        }
    }

    /// The lowercase name: `text`, `bytes` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Bytes => "bytes",
            Kind::Json => "json",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value to cache, or one read back. It comes back as the kind it went in:
/// a text that looks like JSON stays text, bytes that are valid UTF-8 stay bytes.
///
/// ```
/// use etl_cache_core::Value;
/// let v: Value = "<xml/>".into();
/// assert_eq!(v.as_text(), Some("<xml/>"));
/// let j: Value = serde_json::json!({"rows": 1042}).into();
/// assert_eq!(j.kind(), etl_cache_core::Kind::Json);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Bytes(Bytes),
    /// A JSON document (the seed's dicts and lists).
    Json(serde_json::Value),
}

impl Value {
    /// The kind of this value.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Text(_) => Kind::Text,
            Value::Bytes(_) => Kind::Bytes,
            Value::Json(_) => Kind::Json,
        }
    }

    /// The text, if this is a text value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is a bytes value.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The JSON document, if this is a JSON value.
    pub fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Value::Json(j) => Some(j),
            _ => None,
        }
    }

    /// The bytes as stored before compression: UTF-8 for text, the serialized
    /// document for JSON.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Value::Text(s) => Bytes::copy_from_slice(s.as_bytes()),
            Value::Bytes(b) => b.clone(),
            Value::Json(j) => {
                Bytes::from(serde_json::to_vec(j).expect("a JSON value always serializes"))
            }
        }
    }

    /// Consumes the value into its stored bytes, without a copy where possible.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Value::Text(s) => Bytes::from(s.into_bytes()),
            Value::Bytes(b) => b,
            j @ Value::Json(_) => j.to_bytes(),
        }
    }

    /// Rebuilds a value of `kind` from its stored bytes.
    ///
    /// # Errors
    ///
    /// A description of the problem when text is not UTF-8 or JSON does not parse.
    pub fn from_stored(kind: Kind, bytes: Bytes) -> std::result::Result<Value, String> {
        match kind {
            Kind::Bytes => Ok(Value::Bytes(bytes)),
            Kind::Text => String::from_utf8(bytes.into())
                .map(Value::Text)
                .map_err(|e| format!("text entry is not valid UTF-8: {e}")),
            Kind::Json => serde_json::from_slice(&bytes)
                .map(Value::Json)
                .map_err(|e| format!("JSON entry does not parse: {e}")),
        }
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}
impl From<Bytes> for Value {
    fn from(b: Bytes) -> Self {
        Value::Bytes(b)
    }
}
impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(Bytes::from(b))
    }
}
impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value::Bytes(Bytes::copy_from_slice(b))
    }
}
impl From<serde_json::Value> for Value {
    fn from(j: serde_json::Value) -> Self {
        Value::Json(j)
    }
}
