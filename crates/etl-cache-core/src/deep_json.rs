//! Reads JSON nested deeper than serde_json's recursion limit (127 levels),
//! without recursion: containers are kept on a heap stack, and each scalar
//! (string, number, literal) is handed to serde_json, so that escapes and
//! numbers read exactly as they do everywhere else.

use serde_json::{Map, Value};

enum Open {
    Array(Vec<Value>),
    /// An object, and the key whose value is being read.
    Object(Map<String, Value>, String),
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.at)
    }

    fn skip_ws(&mut self) {
        let b = self.text.as_bytes();
        while self.at < b.len() && matches!(b[self.at], b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected {:?}", c as char)))
        }
    }

    /// A string token, from its opening quote, read by serde_json.
    fn string(&mut self) -> Result<String, String> {
        let b = self.text.as_bytes();
        let start = self.at;
        let mut i = start + 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => {
                    self.at = i + 1;
                    return serde_json::from_str(&self.text[start..=i])
                        .map_err(|e| format!("{e} in the string at byte {start}"));
                }
                _ => i += 1,
            }
        }
        Err(self.error("unterminated string"))
    }

    /// A number or a literal (`true`, `false`, `null`), read by serde_json.
    fn scalar(&mut self) -> Result<Value, String> {
        let b = self.text.as_bytes();
        let start = self.at;
        let mut i = start;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b'+' | b'.')) {
            i += 1;
        }
        if i == start {
            return Err(self.error("expected a value"));
        }
        self.at = i;
        let token = &self.text[start..i];
        match token {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            "null" => Ok(Value::Null),
            _ => serde_json::from_str::<serde_json::Number>(token)
                .map(Value::Number)
                .map_err(|e| format!("{e} in the number at byte {start}")),
        }
    }

    /// After a comma or an opening brace: a key and its colon.
    fn key(&mut self) -> Result<String, String> {
        self.skip_ws();
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a key"));
        }
        let key = self.string()?;
        self.expect(b':')?;
        Ok(key)
    }
}

/// Parses `bytes` as one JSON document nested at most `limit` levels deep.
pub(crate) fn parse(bytes: &[u8], limit: usize) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut p = Parser { text, at: 0 };
    let mut open: Vec<Open> = Vec::new();
    loop {
        // A value starts here.
        p.skip_ws();
        let mut done = match p.peek() {
            Some(b'[') | Some(b'{') if open.len() >= limit => {
                return Err(p.error(&format!("nested more than {limit} levels deep")));
            }
            Some(b'[') => {
                p.at += 1;
                p.skip_ws();
                if p.peek() == Some(b']') {
                    p.at += 1;
                    Value::Array(Vec::new())
                } else {
                    open.push(Open::Array(Vec::new()));
                    continue;
                }
            }
            Some(b'{') => {
                p.at += 1;
                p.skip_ws();
                if p.peek() == Some(b'}') {
                    p.at += 1;
                    Value::Object(Map::new())
                } else {
                    let key = p.key()?;
                    open.push(Open::Object(Map::new(), key));
                    continue;
                }
            }
            Some(b'"') => Value::String(p.string()?),
            _ => p.scalar()?,
        };
        // A value ended: put it in its container, and close the containers
        // that end with it.
        loop {
            match open.last_mut() {
                None => {
                    p.skip_ws();
                    if p.at != text.len() {
                        return Err(p.error("trailing characters"));
                    }
                    return Ok(done);
                }
                Some(Open::Array(items)) => {
                    items.push(done);
                    p.skip_ws();
                    match p.peek() {
                        Some(b',') => {
                            p.at += 1;
                            break;
                        }
                        Some(b']') => {
                            p.at += 1;
                            let Some(Open::Array(items)) = open.pop() else {
                                unreachable!("the top is an array")
                            };
                            done = Value::Array(items);
                        }
                        _ => return Err(p.error("expected ',' or ']'")),
                    }
                }
                Some(Open::Object(map, key)) => {
                    map.insert(std::mem::take(key), done);
                    p.skip_ws();
                    match p.peek() {
                        Some(b',') => {
                            p.at += 1;
                            *key = p.key()?;
                            break;
                        }
                        Some(b'}') => {
                            p.at += 1;
                            let Some(Open::Object(map, _)) = open.pop() else {
                                unreachable!("the top is an object")
                            };
                            done = Value::Object(map);
                        }
                        _ => return Err(p.error("expected ',' or '}'")),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn nested(depth: usize) -> String {
        let mut s = String::new();
        for i in 0..depth {
            if i % 2 == 0 {
                s.push_str("[1, \"a\\\"b\\u00e9\", ");
            } else {
                s.push_str("{\"k\": null, \"v\": ");
            }
        }
        s.push_str("-1.5e3");
        for i in (0..depth).rev() {
            s.push_str(if i % 2 == 0 { "]" } else { "}" });
        }
        s
    }

    #[test]
    fn reads_what_serde_json_reads_the_same_way() {
        for doc in [
            "1",
            " true ",
            "null",
            "\"x\\n\\ud83d\\ude00\"",
            "[]",
            "{}",
            "[[], {}, [1, 2], {\"a\": [3]}]",
            "{\"a\": 1, \"a\": 2}",
            "123456789012345678901234567890",
            "-0.0",
            &nested(100),
        ] {
            let ours = parse(doc.as_bytes(), 1024).unwrap();
            let theirs: serde_json::Value = serde_json::from_str(doc).unwrap();
            assert_eq!(ours, theirs, "{doc}");
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for doc in [
            "",
            "[",
            "[1,]",
            "{\"a\" 1}",
            "{\"a\": 1,}",
            "[1] 2",
            "tru",
            "01",
            "1.",
            "\"a",
            "[\"\u{1}\"]",
            "{1: 2}",
            "[1 2]",
            "nul",
            "truex",
            "+1",
        ] {
            assert!(
                serde_json::from_str::<serde_json::Value>(doc).is_err(),
                "{doc}"
            );
            assert!(parse(doc.as_bytes(), 1024).is_err(), "{doc:?} accepted");
        }
    }

    #[test]
    fn reads_deep_documents_up_to_the_limit() {
        let doc = nested(1000);
        let v = parse(doc.as_bytes(), 1000).unwrap();
        let again = serde_json::to_string(&v).unwrap();
        assert_eq!(parse(again.as_bytes(), 1000).unwrap(), v);
        assert!(
            again.starts_with("[1,\"a\\\"bé\",{\"k\":null,\"v\":[1,"),
            "{again:.40}"
        );
        let e = parse(doc.as_bytes(), 999).unwrap_err();
        assert!(e.contains("999 levels"), "{e}");
        let flat = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(parse(flat.as_bytes(), 1024).is_err());
    }
}
