//! Canonical JSON for step parameters: the same value always gives the same
//! bytes, whatever order a map was built in, and a value JSON cannot hold
//! faithfully is refused instead of being written as something else.
//!
//! `serde_json` turns a NaN or an infinity into `null`, so `f64::NAN` and
//! `None` would give one digest; a parameter with such a float is refused
//! here before any digest is taken. Maps are written with their keys sorted
//! by their UTF-8 bytes, whatever order `serde_json` keeps them in (its
//! `preserve_order` feature may be on in a build that also uses this crate).

use serde::Serialize;
use serde::ser;

/// Serializes `value` to canonical JSON bytes.
///
/// # Errors
///
/// A message saying what cannot be serialized: the value's own serde error,
/// or a float that is NaN or infinite (as a value or as a map key).
pub(crate) fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    value.serialize(FiniteCheck).map_err(|e| e.0)?;
    let json = serde_json::to_value(value).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    write(&json, &mut out);
    Ok(out)
}

fn write(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(
                    serde_json::to_string(k)
                        .expect("a string serializes")
                        .as_bytes(),
                );
                out.push(b':');
                write(item, out);
            }
            out.push(b'}');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// Why a value was refused.
#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

impl ser::Error for Refusal {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Refusal(msg.to_string())
    }
}

/// A serializer that writes nothing and only looks for floats JSON cannot
/// hold. Written by hand: no serde helper reports a non-finite float, and
/// `serde_json` replaces it silently.
#[derive(Clone, Copy)]
struct FiniteCheck;

fn float(v: f64) -> Result<(), Refusal> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Refusal(format!(
            "the float {v} has no JSON form (it would be written as null)"
        )))
    }
}

macro_rules! accept {
    ($($name:ident: $ty:ty),* $(,)?) => {
        $(fn $name(self, _: $ty) -> Result<(), Refusal> { Ok(()) })*
    };
}

impl ser::Serializer for FiniteCheck {
    type Ok = ();
    type Error = Refusal;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    accept!(
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char,
        serialize_str: &str, serialize_bytes: &[u8], serialize_unit_struct: &'static str,
    );

    fn serialize_f32(self, v: f32) -> Result<(), Refusal> {
        float(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Refusal> {
        float(v)
    }
    fn serialize_none(self) -> Result<(), Refusal> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Refusal> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Refusal> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Refusal> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Refusal> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> Result<(), Refusal> {
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Refusal> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Refusal> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Refusal> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Refusal> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Refusal> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Refusal> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Refusal> {
        Ok(self)
    }
}

macro_rules! compound {
    ($($trait:ident: $method:ident),* $(,)?) => {
        $(impl ser::$trait for FiniteCheck {
            type Ok = ();
            type Error = Refusal;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Refusal> {
                v.serialize(FiniteCheck)
            }
            fn end(self) -> Result<(), Refusal> {
                Ok(())
            }
        })*
    };
}

compound!(
    SerializeSeq: serialize_element,
    SerializeTuple: serialize_element,
    SerializeTupleStruct: serialize_field,
    SerializeTupleVariant: serialize_field,
);

impl ser::SerializeMap for FiniteCheck {
    type Ok = ();
    type Error = Refusal;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Refusal> {
        k.serialize(FiniteCheck)
            .map_err(|e| Refusal(format!("a map key: {e}")))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Refusal> {
        v.serialize(FiniteCheck)
    }
    fn end(self) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Structs and struct variants: as `compound!`, with the field's name in
/// the refusal.
macro_rules! named_fields {
    ($($trait:ident),* $(,)?) => {
        $(impl ser::$trait for FiniteCheck {
            type Ok = ();
            type Error = Refusal;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                name: &'static str,
                v: &T,
            ) -> Result<(), Refusal> {
                v.serialize(FiniteCheck)
                    .map_err(|e| Refusal(format!("field {name}: {e}")))
            }
            fn end(self) -> Result<(), Refusal> {
                Ok(())
            }
        })*
    };
}

named_fields!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn key_order_does_not_matter() {
        let a = serde_json::json!({"a": 1, "b": {"y": [1, 2], "x": null}});
        let b = serde_json::json!({"b": {"x": null, "y": [1, 2]}, "a": 1});
        assert_eq!(
            to_canonical_json(&a).unwrap(),
            to_canonical_json(&b).unwrap()
        );
        assert_eq!(
            to_canonical_json(&a).unwrap(),
            br#"{"a":1,"b":{"x":null,"y":[1,2]}}"#
        );
    }

    #[test]
    fn non_finite_floats_are_refused_not_nulled() {
        assert!(to_canonical_json(&f64::NAN).is_err());
        assert!(to_canonical_json(&vec![1.0, f64::INFINITY]).is_err());
        let mut m = HashMap::new();
        m.insert("x", f32::NAN);
        assert!(to_canonical_json(&m).is_err());
        assert_eq!(to_canonical_json(&Option::<f64>::None).unwrap(), b"null");
    }

    #[test]
    fn nan_map_keys_are_refused() {
        struct FloatKeys;
        impl Serialize for FloatKeys {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(&f64::NAN, &1)?;
                m.end()
            }
        }
        let e = to_canonical_json(&FloatKeys).unwrap_err();
        assert!(e.contains("map key"), "{e}");
        let ok: BTreeMap<i32, &str> = [(2, "b"), (1, "a")].into();
        assert_eq!(to_canonical_json(&ok).unwrap(), br#"{"1":"a","2":"b"}"#);
    }
}
