//! Where entries live in the store: object names derived from keys.
//!
//! A key keeps its folder structure: `my_folder/financial_data` under the
//! prefix `cache` is the object `cache/my_folder/financial_data`. Each
//! `/`-separated segment of the key is escaped so that every key maps to one
//! valid object name and back:
//!
//! - ASCII letters, digits, `-`, `_` and `.` and non-ASCII characters stay as
//!   they are (but control characters);
//! - every other byte becomes `%XX` (upper-case hex);
//! - a `.` that starts a segment becomes `%.` (so `.` and `..` never appear
//!   as segments, and no object name starts a segment with a dot);
//! - an empty segment (as in `a//b` or `/absolute`) becomes a lone `%`.
//!
//! On stores whose names are files (`LocalFileSystem`), the last segment of
//! an entry also ends with `%` (`financial_data%`): a file named like a
//! folder of another key (`a` beside `a/b`) cannot exist there, and escaped
//! folder names never end with `%`.
//!
//! Segments that start with `.` are never produced by a key; the cache keeps
//! its own objects under `<prefix>/.etl-cache/`:
//!
//! - `.etl-cache/long/<sha256 of key>`: entries whose escaped name would pass
//!   the limits of some store (a segment over [`MAX_SEGMENT`] bytes, a name
//!   over [`MAX_OBJECT_NAME`] bytes); the key itself is in the entry header.
//! - `.etl-cache/leases/<sha256 of key>`: single-flight leases.

use object_store::path::Path;
use sha2::{Digest, Sha256};

/// The folder under the prefix that holds the cache's own objects.
pub const RESERVED: &str = ".etl-cache";
/// The longest escaped segment kept as a folder or file name (file systems
/// allow 255 bytes).
pub const MAX_SEGMENT: usize = 255;
/// The longest object name (prefix included) before a key is stored by hash:
/// S3, GCS and Azure allow 1024 bytes.
pub const MAX_OBJECT_NAME: usize = 1024;

/// Object names of one cache: its prefix and the layout under it.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: Path,
    /// Mark the last segment of entries (stores where names are files).
    leaf_marker: bool,
}

/// What an object under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Name {
    /// An entry stored under its escaped key.
    Direct(String),
    /// An entry stored under the hash of its key; the key is in its header.
    Long,
    /// A lease or another object of the cache's own.
    Internal,
    /// Not a name the cache writes.
    Foreign,
}

fn sha256_hex(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn escape_segment(seg: &str, out: &mut String) {
    if seg.is_empty() {
        out.push('%');
        return;
    }
    let rest = match seg.strip_prefix('.') {
        // `%.` stands for a leading dot: `.`, `..` and `%2E` would read as
        // relative segments to URL-based stores (LocalFileSystem).
        Some(rest) => {
            out.push_str("%.");
            rest
        }
        None => seg,
    };
    for c in rest.chars() {
        let keep = c.is_ascii_alphanumeric()
            || c == '-'
            || c == '_'
            || c == '.'
            || (!c.is_ascii() && !c.is_control());
        if keep {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
}

fn unescape_segment(seg: &str) -> Option<String> {
    if seg == "%" {
        return Some(String::new());
    }
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    if seg.starts_with("%.") {
        out.push(b'.');
        i = 2;
    }
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = seg.get(i + 1..i + 3)?;
            if !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Escapes a whole key, segment by segment.
pub(crate) fn escape_key(key: &str) -> Vec<String> {
    key.split('/')
        .map(|seg| {
            let mut s = String::with_capacity(seg.len());
            escape_segment(seg, &mut s);
            s
        })
        .collect()
}

/// The key an escaped name stands for, if it is one the cache writes.
pub(crate) fn unescape_key<'a>(segments: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut key = String::new();
    for (i, seg) in segments.enumerate() {
        let plain = unescape_segment(seg)?;
        // Only canonical escapes: re-escaping must give the same segment.
        let mut again = String::new();
        escape_segment(&plain, &mut again);
        if again != seg {
            return None;
        }
        if i > 0 {
            key.push('/');
        }
        key.push_str(&plain);
    }
    Some(key)
}

impl Layout {
    pub(crate) fn new(prefix: Path, leaf_marker: bool) -> Layout {
        Layout {
            prefix,
            leaf_marker,
        }
    }

    pub(crate) fn prefix(&self) -> &Path {
        &self.prefix
    }

    fn join(&self, parts: &[&str]) -> Path {
        let mut s = String::from(self.prefix.as_ref());
        for p in parts {
            if !s.is_empty() {
                s.push('/');
            }
            s.push_str(p);
        }
        Path::parse(&s).expect("escaped segments are valid path parts")
    }

    /// The object holding the entry of `key` (a valid key).
    pub(crate) fn entry(&self, key: &str) -> Path {
        let mut segments = escape_key(key);
        if self.leaf_marker {
            segments
                .last_mut()
                .expect("split yields a segment")
                .push('%');
        }
        let total: usize =
            self.prefix.as_ref().len() + segments.iter().map(|s| s.len() + 1).sum::<usize>();
        if total > MAX_OBJECT_NAME || segments.iter().any(|s| s.len() > MAX_SEGMENT) {
            return self.join(&[RESERVED, "long", &sha256_hex(key)]);
        }
        let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
        self.join(&refs)
    }

    /// Whether `key` is stored by hash rather than under its name.
    #[cfg(test)]
    pub(crate) fn is_long(&self, key: &str) -> bool {
        self.entry(key)
            .as_ref()
            .starts_with(self.join(&[RESERVED, "long"]).as_ref())
    }

    /// The lease object of `key`.
    pub(crate) fn lease(&self, key: &str) -> Path {
        self.join(&[RESERVED, "leases", &sha256_hex(key)])
    }

    /// The folder to list for keys starting with `key_prefix`: the folder of
    /// its complete segments (listing works on whole segments).
    pub(crate) fn list_root(&self, key_prefix: &str) -> Path {
        let Some((folders, _)) = key_prefix.rsplit_once('/') else {
            return self.prefix.clone();
        };
        let segments = escape_key(folders);
        if segments.iter().any(|s| s.len() > MAX_SEGMENT) {
            return self.prefix.clone();
        }
        let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
        self.join(&refs)
    }

    /// The folder of entries stored by hash.
    /// A fresh object name for checking what the store supports.
    pub(crate) fn probe(&self, name: &str) -> Path {
        self.join(&[RESERVED, "probe", name])
    }

    pub(crate) fn long_root(&self) -> Path {
        self.join(&[RESERVED, "long"])
    }

    /// What the object `location` is.
    pub(crate) fn classify(&self, location: &Path) -> Name {
        let Some(parts) = location.prefix_match(&self.prefix) else {
            return Name::Foreign;
        };
        let parts: Vec<_> = parts.collect();
        let Some(first) = parts.first() else {
            return Name::Foreign;
        };
        if first.as_ref() == RESERVED {
            return match parts.get(1).map(|p| p.as_ref()) {
                Some("long") if parts.len() == 3 => Name::Long,
                _ => Name::Internal,
            };
        }
        let mut names: Vec<&str> = parts.iter().map(|p| p.as_ref()).collect();
        if self.leaf_marker {
            let last = names.last_mut().expect("checked non-empty");
            match last.strip_suffix('%') {
                Some(l) if !l.is_empty() => *last = l,
                _ => return Name::Foreign,
            }
        }
        match unescape_key(names.into_iter()) {
            Some(key) if !key.is_empty() => Name::Direct(key),
            _ => Name::Foreign,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new(Path::parse("cache/runs").unwrap(), false)
    }

    #[test]
    fn folder_structure_is_kept() {
        let l = layout();
        assert_eq!(
            l.entry("my_folder/financial_data").as_ref(),
            "cache/runs/my_folder/financial_data"
        );
        assert_eq!(
            l.entry("report-2026.xml").as_ref(),
            "cache/runs/report-2026.xml"
        );
        let root = Layout::new(Path::ROOT, false);
        assert_eq!(root.entry("a/b").as_ref(), "a/b");
    }

    #[test]
    fn hostile_keys_escape_and_roundtrip() {
        let l = layout();
        // Beside the keys every backend must take: names of this layout's
        // own (leases), and its escape characters.
        let ours = [".etl-cache/leases/x", "trailing/", "100%", "%", "a#1"];
        let mut seen = std::collections::HashSet::new();
        for k in etl_cache_core::testing::HOSTILE_KEYS
            .into_iter()
            .chain(ours)
        {
            let p = l.entry(k);
            assert!(seen.insert(p.clone()), "{k:?} collides");
            assert_eq!(l.classify(&p), Name::Direct(k.to_string()), "{k:?} -> {p}");
            for part in p.parts() {
                assert!(part.as_ref() != "." && part.as_ref() != "..");
                assert!(!part.as_ref().contains('#'));
            }
        }
        assert_eq!(l.entry("../x").as_ref(), "cache/runs/%../x");
        assert_eq!(l.entry(".").as_ref(), "cache/runs/%.");
        assert_eq!(l.entry("a/.hidden").as_ref(), "cache/runs/a/%.hidden");
        assert_eq!(l.entry("/a").as_ref(), "cache/runs/%/a");
    }

    #[test]
    fn file_stores_mark_leaves() {
        let l = Layout::new(Path::parse("c").unwrap(), true);
        assert_eq!(l.entry("a").as_ref(), "c/a%");
        assert_eq!(l.entry("a/b").as_ref(), "c/a/b%");
        assert_eq!(l.entry("a/").as_ref(), "c/a/%%");
        assert_eq!(l.entry("..").as_ref(), "c/%..%");
        for k in ["a", "a/b", "a/", "..", "../x", "/", "%"] {
            assert_eq!(l.classify(&l.entry(k)), Name::Direct(k.into()), "{k:?}");
        }
        assert_eq!(l.classify(&Path::parse("c/a").unwrap()), Name::Foreign);
    }

    #[test]
    fn long_keys_go_by_hash() {
        let l = layout();
        let long = "y".repeat(1024);
        let p = l.entry(&long);
        assert!(p.as_ref().starts_with("cache/runs/.etl-cache/long/"));
        assert_eq!(l.classify(&p), Name::Long);
        assert!(l.is_long(&long));
        let seg = format!("a/{}", "z".repeat(300));
        assert!(l.is_long(&seg));
        assert!(!l.is_long("a/b"));
    }

    #[test]
    fn internal_and_foreign_names() {
        let l = layout();
        assert_eq!(l.classify(&l.lease("k")), Name::Internal);
        assert_eq!(l.classify(&Path::parse("other/x").unwrap()), Name::Foreign);
        assert_eq!(
            l.classify(&Path::parse("cache/runs/a%2fb").unwrap()),
            Name::Foreign,
            "lower-case escapes are not ours"
        );
        assert_eq!(
            l.classify(&Path::parse("cache/runs/a b").unwrap()),
            Name::Foreign
        );
    }

    #[test]
    fn list_root_uses_complete_segments() {
        let l = layout();
        assert_eq!(l.list_root("runs/20").as_ref(), "cache/runs/runs");
        assert_eq!(l.list_root("runs/2026/").as_ref(), "cache/runs/runs/2026");
        assert_eq!(l.list_root("ru").as_ref(), "cache/runs");
    }
}
