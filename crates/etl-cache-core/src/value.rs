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
    /// Arrow record batches: the bytes of an Arrow IPC file. Read back as
    /// [`Value::Bytes`]; written with [`crate::SetOptions::kind`].
    Arrow,
}

impl Kind {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Kind::Text => 1,
            Kind::Bytes => 2,
            Kind::Json => 3,
            Kind::Arrow => 4,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Text),
            2 => Some(Kind::Bytes),
            3 => Some(Kind::Json),
            4 => Some(Kind::Arrow),
            _ => None,
        }
    }

    /// The lowercase name: `text`, `bytes`, `json` or `arrow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Bytes => "bytes",
            Kind::Json => "json",
            Kind::Arrow => "arrow",
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

    /// Rebuilds a value of `kind` from its stored bytes. An entry of a byte
    /// payload kind ([`Kind::Bytes`], [`Kind::Arrow`]) comes back as
    /// [`Value::Bytes`].
    ///
    /// JSON nested up to [`MAX_JSON_DEPTH`] levels (what a write accepts)
    /// reads back, and so does JSON nested up to [`MAX_JSON_READ_DEPTH`]
    /// levels, which entries written before writes had a limit may hold.
    ///
    /// # Errors
    ///
    /// A description of the problem when text is not UTF-8 or JSON does not
    /// parse (or is nested deeper than [`MAX_JSON_READ_DEPTH`]).
    pub fn from_stored(kind: Kind, bytes: Bytes) -> std::result::Result<Value, String> {
        match kind {
            Kind::Bytes | Kind::Arrow => Ok(Value::Bytes(bytes)),
            Kind::Text => String::from_utf8(bytes.into())
                .map(Value::Text)
                .map_err(|e| format!("text entry is not valid UTF-8: {e}")),
            Kind::Json => match serde_json::from_slice(&bytes) {
                Ok(doc) => Ok(Value::Json(doc)),
                // serde_json reads 127 levels; deeper ones are read without
                // recursion.
                Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
                    crate::deep_json::parse(&bytes, MAX_JSON_READ_DEPTH)
                        .map(Value::Json)
                        .map_err(|e| format!("JSON entry does not parse: {e}"))
                }
                Err(e) => Err(format!("JSON entry does not parse: {e}")),
            },
        }
    }

    /// Checks that the value can be stored and read back: a JSON document
    /// may nest at most [`MAX_JSON_DEPTH`] arrays and objects. Every write
    /// of a value calls it before storing anything. The walk does not
    /// recurse, so any depth is measured safely.
    ///
    /// ```
    /// use etl_cache_core::{MAX_JSON_DEPTH, Value};
    /// let mut doc = serde_json::json!(1);
    /// for _ in 0..MAX_JSON_DEPTH {
    ///     doc = serde_json::json!([doc]);
    /// }
    /// assert!(Value::Json(doc.clone()).check("k").is_ok());
    /// assert!(Value::Json(serde_json::json!([doc])).check("k").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidInput`] naming the key and the limit.
    pub fn check(&self, key: &str) -> crate::Result<()> {
        let Value::Json(doc) = self else {
            return Ok(());
        };
        if json_depth_exceeds(doc, MAX_JSON_DEPTH) {
            return Err(crate::Error::InvalidInput {
                message: format!(
                    "the JSON value for key {:?} nests arrays and objects more than {MAX_JSON_DEPTH} \
                     levels deep, the most an entry may hold (so that every reader can parse it back)",
                    crate::Error::display_key(key)
                ),
            });
        }
        Ok(())
    }
}

/// Checks that `text` is a JSON document that [`Value::from_stored`] reads
/// back, nested at most [`MAX_JSON_DEPTH`] levels: what a write of bytes as
/// [`Kind::Json`] stores. Every token is read as the reader reads it (strings
/// unescaped and UTF-8 checked, numbers in range), but nothing is kept.
pub(crate) fn check_json_text(text: &[u8]) -> std::result::Result<(), String> {
    match serde_json::from_slice::<Discard>(text) {
        Ok(Discard) => Ok(()),
        // serde_json reads 127 levels; the reader reads deeper ones without
        // recursion, and so does this check, up to the write limit.
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            crate::deep_json::parse(text, MAX_JSON_DEPTH).map(drop)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A JSON value read and dropped. Unlike `serde::de::IgnoredAny`, which
/// skips strings and numbers without reading them, it asks for every token
/// (`deserialize_any`, as `serde_json::Value` does), so that what it accepts
/// is exactly what the reader accepts (a lone surrogate escape, a number
/// out of range and invalid UTF-8 in a string are refused).
struct Discard;

impl<'de> serde::Deserialize<'de> for Discard {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(Discard)
    }
}

impl<'de> serde::de::Visitor<'de> for Discard {
    type Value = Discard;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Discard, E> {
        Ok(Discard)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Discard, E> {
        Ok(Discard)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Discard, E> {
        Ok(Discard)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Discard, E> {
        Ok(Discard)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Discard, E> {
        Ok(Discard)
    }
    fn visit_unit<E>(self) -> std::result::Result<Discard, E> {
        Ok(Discard)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Discard, A::Error> {
        while seq.next_element::<Discard>()?.is_some() {}
        Ok(Discard)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Discard, A::Error> {
        while map.next_entry::<Discard, Discard>()?.is_some() {}
        Ok(Discard)
    }
}

/// The deepest nesting of arrays and objects a JSON value may have to be
/// stored ([`Value::check`]): `[[1]]` nests 2 levels, `1` none.
pub const MAX_JSON_DEPTH: usize = 128;

/// The deepest nesting a stored JSON entry is read back with
/// ([`Value::from_stored`]). Above [`MAX_JSON_DEPTH`] so that entries stored
/// before writes were limited still read; bounded so that the document
/// handed out can be dropped, cloned and serialized (all recursive) on a
/// thread's ordinary stack.
pub const MAX_JSON_READ_DEPTH: usize = 1024;

/// True when `doc` nests arrays and objects more than `limit` levels deep.
fn json_depth_exceeds(doc: &serde_json::Value, limit: usize) -> bool {
    let mut todo: Vec<(&serde_json::Value, usize)> = vec![(doc, 0)];
    while let Some((v, depth)) = todo.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Array(a) => Box::new(a.iter()),
            serde_json::Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        if depth + 1 > limit {
            return true;
        }
        todo.extend(children.map(|c| (c, depth + 1)));
    }
    false
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
