//! Text the operating system deals in as bytes: a process's arguments, its
//! environment and its working directory. On Unix each may hold any byte
//! but NUL, UTF-8 or not, and bpm passes them on exactly as given.
//!
//! In JSON (records, the control socket, the keeper's protocol, MCP) an
//! [`OsText`] that is valid UTF-8 is a plain string, so almost every record
//! reads as before; any other is an object `{"hex": "..."}` holding its
//! bytes in hexadecimal. An environment whose every name is UTF-8 is a JSON
//! object; one with a name that is not is a list of `[name, value]` pairs
//! (see [`env_serde`]).

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Environment variables, by name: bytes on Unix (see [`OsText`]).
pub type Environment = std::collections::BTreeMap<OsText, OsText>;

/// Bytes of an argument, variable or path: usually UTF-8, never assumed to
/// be (see the module's documentation).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct OsText(Vec<u8>);

impl OsText {
    /// The text made of `bytes`.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        OsText(bytes.into())
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Its bytes, taken.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Itself, if it is UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Itself as UTF-8, each invalid sequence replaced by U+FFFD (for
    /// matching and display only: never to pass on).
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// Itself as the OS's own string type.
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    /// Itself as a path.
    pub fn as_path(&self) -> &Path {
        Path::new(self.as_os_str())
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether it holds `byte`.
    pub fn contains_byte(&self, byte: u8) -> bool {
        self.0.contains(&byte)
    }

    /// Whether it holds nothing but whitespace.
    pub fn is_blank(&self) -> bool {
        self.0.iter().all(u8::is_ascii_whitespace)
    }
}

impl From<&str> for OsText {
    fn from(s: &str) -> Self {
        OsText(s.as_bytes().to_vec())
    }
}

impl From<String> for OsText {
    fn from(s: String) -> Self {
        OsText(s.into_bytes())
    }
}

impl From<&String> for OsText {
    fn from(s: &String) -> Self {
        OsText::from(s.as_str())
    }
}

impl From<OsString> for OsText {
    fn from(s: OsString) -> Self {
        OsText(s.into_vec())
    }
}

impl From<&OsStr> for OsText {
    fn from(s: &OsStr) -> Self {
        OsText(s.as_bytes().to_vec())
    }
}

impl From<PathBuf> for OsText {
    fn from(p: PathBuf) -> Self {
        OsText::from(p.into_os_string())
    }
}

impl From<OsText> for OsString {
    fn from(t: OsText) -> Self {
        OsString::from_vec(t.0)
    }
}

impl From<OsText> for PathBuf {
    fn from(t: OsText) -> Self {
        PathBuf::from(OsString::from(t))
    }
}

impl PartialEq<str> for OsText {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for OsText {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<OsText> for &str {
    fn eq(&self, other: &OsText) -> bool {
        other == self
    }
}

/// UTF-8 as it is; each byte that is not, as `\xNN`.
impl fmt::Display for OsText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for OsText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                write!(f, "{}", c.escape_debug())?;
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

impl Serialize for OsText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Some(text) = self.to_str() {
            return s.serialize_str(text);
        }
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("hex", &hex(&self.0))?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for OsText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OsTextVisitor)
    }
}

struct OsTextVisitor;

impl<'de> Visitor<'de> for OsTextVisitor {
    type Value = OsText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a string, or {"hex": "..."} for bytes that are not UTF-8"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<OsText, E> {
        Ok(OsText::from(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<OsText, E> {
        Ok(OsText::from(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OsText, A::Error> {
        let mut bytes = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key != "hex" {
                return Err(de::Error::unknown_field(&key, &["hex"]));
            }
            if bytes.is_some() {
                return Err(de::Error::duplicate_field("hex"));
            }
            let text: Cow<'de, str> = map.next_value()?;
            bytes = Some(unhex(&text).ok_or_else(|| {
                de::Error::invalid_value(
                    de::Unexpected::Str(&text),
                    &"an even number of hex digits",
                )
            })?);
        }
        bytes
            .map(OsText)
            .ok_or_else(|| de::Error::missing_field("hex"))
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

/// Serde for an optional path as an [`OsText`] (`PathBuf`'s own refuses a
/// path that is not UTF-8).
pub mod path_serde {
    use super::{Deserialize, Deserializer, OsText, PathBuf, Serialize, Serializer};

    /// Writes `path` as its bytes.
    ///
    /// # Errors
    /// Those of the serializer.
    pub fn serialize<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        path.as_ref()
            .map(|p| OsText::from(p.as_os_str()))
            .serialize(s)
    }

    /// Reads a path written by [`serialize`] (or as a plain string).
    ///
    /// # Errors
    /// Neither a string nor `{"hex": ...}`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Ok(Option::<OsText>::deserialize(d)?.map(PathBuf::from))
    }
}

/// Serde for a list of paths, each as an [`OsText`] (see [`path_serde`]).
pub mod paths_serde {
    use super::{Deserialize, Deserializer, OsText, PathBuf, Serializer};
    use serde::ser::SerializeSeq as _;

    /// Writes each path as its bytes.
    ///
    /// # Errors
    /// Those of the serializer.
    pub fn serialize<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(paths.len()))?;
        for p in paths {
            seq.serialize_element(&OsText::from(p.as_os_str()))?;
        }
        seq.end()
    }

    /// Reads paths written by [`serialize`] (or as plain strings).
    ///
    /// # Errors
    /// An element that is neither a string nor `{"hex": ...}`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Ok(Vec::<OsText>::deserialize(d)?
            .into_iter()
            .map(PathBuf::from)
            .collect())
    }
}

/// Serde for an environment: a JSON object when every name is UTF-8, else a
/// list of `[name, value]` pairs (a JSON object's keys must be strings).
/// Either form is read.
pub mod env_serde {
    use std::collections::BTreeMap;
    use std::fmt;
    use std::sync::Arc;

    use serde::de::{MapAccess, SeqAccess, Visitor};
    use serde::ser::{SerializeMap, SerializeSeq};
    use serde::{Deserializer, Serializer};

    use super::OsText;

    /// The empty environment, one allocation shared by every spec read
    /// with none (most specs): a daemon holding 10,000 records holds it once.
    fn no_environment() -> Arc<BTreeMap<OsText, OsText>> {
        static EMPTY: std::sync::LazyLock<Arc<BTreeMap<OsText, OsText>>> =
            std::sync::LazyLock::new(Arc::default);
        Arc::clone(&EMPTY)
    }

    /// Writes `env`.
    ///
    /// # Errors
    /// Those of the serializer.
    pub fn serialize<S: Serializer>(
        env: &Arc<BTreeMap<OsText, OsText>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        if env.keys().all(|k| k.to_str().is_some()) {
            let mut map = s.serialize_map(Some(env.len()))?;
            for (k, v) in env.iter() {
                map.serialize_entry(k, v)?;
            }
            map.end()
        } else {
            let mut seq = s.serialize_seq(Some(env.len()))?;
            for pair in env.iter() {
                seq.serialize_element(&pair)?;
            }
            seq.end()
        }
    }

    /// Reads an environment in either form.
    ///
    /// # Errors
    /// Neither an object nor a list of pairs of texts.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Arc<BTreeMap<OsText, OsText>>, D::Error> {
        let env = d.deserialize_any(EnvVisitor)?;
        Ok(if env.is_empty() {
            no_environment()
        } else {
            Arc::new(env)
        })
    }

    /// The same for an optional environment.
    pub mod option {
        use std::sync::Arc;

        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        use crate::os_text::Environment;

        #[derive(Serialize, Deserialize)]
        struct Env(#[serde(with = "super")] Arc<Environment>);

        /// Writes `env`, if any.
        ///
        /// # Errors
        /// Those of the serializer.
        pub fn serialize<S: Serializer>(
            env: &Option<Arc<Environment>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            env.as_ref().map(|e| Env(Arc::clone(e))).serialize(s)
        }

        /// Reads an optional environment in either form.
        ///
        /// # Errors
        /// Neither null, an object nor a list of pairs of texts.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Arc<Environment>>, D::Error> {
            Ok(Option::<Env>::deserialize(d)?.map(|e| e.0))
        }
    }

    struct EnvVisitor;

    impl<'de> Visitor<'de> for EnvVisitor {
        type Value = BTreeMap<OsText, OsText>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of variables, or a list of [name, value] pairs")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut env = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<OsText, OsText>()? {
                env.insert(k, v);
            }
            Ok(env)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut env = BTreeMap::new();
            while let Some((k, v)) = seq.next_element::<(OsText, OsText)>()? {
                env.insert(k, v);
            }
            Ok(env)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[test]
    fn utf8_is_a_plain_string_and_other_bytes_are_hex() {
        let plain = OsText::from("café");
        assert_eq!(serde_json::to_string(&plain).unwrap(), r#""café""#);
        let raw = OsText::from_bytes(b"caf\xe9".to_vec());
        assert_eq!(
            serde_json::to_string(&raw).unwrap(),
            r#"{"hex":"636166e9"}"#
        );
        for t in [plain, raw, OsText::default()] {
            let back: OsText = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
            assert_eq!(back, t);
        }
    }

    #[test]
    fn bad_hex_is_refused_by_name() {
        for bad in [
            r#"{"hex":"abc"}"#,
            r#"{"hex":"zz"}"#,
            r#"{"hax":"00"}"#,
            "{}",
            "7",
        ] {
            let e = serde_json::from_str::<OsText>(bad).unwrap_err().to_string();
            assert!(e.contains("hex") || e.contains("a string"), "{bad}: {e}");
        }
    }

    #[test]
    fn display_shows_each_bad_byte() {
        let t = OsText::from_bytes(b"a\xffb\xc3".to_vec());
        assert_eq!(t.to_string(), r"a\xffb\xc3");
        assert_eq!(format!("{t:?}"), r#""a\xffb\xc3""#);
    }

    #[test]
    fn an_environment_with_a_name_that_is_not_utf8_is_a_list_of_pairs() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct E(
            #[serde(with = "env_serde")] std::sync::Arc<std::collections::BTreeMap<OsText, OsText>>,
        );
        let mut env = std::collections::BTreeMap::new();
        env.insert(OsText::from("A"), OsText::from_bytes(b"\xff".to_vec()));
        let e = E(env.clone().into());
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"A":{"hex":"ff"}}"#);
        env.insert(OsText::from_bytes(b"B\xfe".to_vec()), OsText::from("v"));
        let e = E(env.into());
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"[["A",{"hex":"ff"}],[{"hex":"42fe"},"v"]]"#);
        assert_eq!(serde_json::from_str::<E>(&json).unwrap(), e);
    }

    #[test]
    fn the_views_of_the_bytes_agree() {
        let raw = OsText::from_bytes(b"a\xffb".to_vec());
        assert_eq!(raw.as_bytes(), b"a\xffb");
        assert_eq!(raw.to_string_lossy(), "a\u{fffd}b");
        assert_eq!(raw.as_os_str().as_bytes(), b"a\xffb");
        assert_eq!(raw.as_path(), Path::new(raw.as_os_str()));
        assert_eq!(raw.clone().into_bytes(), b"a\xffb".to_vec());
        assert_eq!(raw.to_str(), None);
        let text = String::from("/tmp/x");
        for t in [
            OsText::from(&text),
            OsText::from(text.clone()),
            OsText::from(OsString::from(&text)),
            OsText::from(OsStr::new(&text)),
            OsText::from(PathBuf::from(&text)),
        ] {
            assert_eq!(t, *"/tmp/x");
            assert_eq!(t, "/tmp/x");
            assert_eq!("/tmp/x", t);
            assert!(!t.is_empty() && !t.is_blank() && t.contains_byte(b'x'));
        }
    }

    #[test]
    fn a_repeated_hex_field_is_refused_by_name() {
        let e = serde_json::from_str::<OsText>(r#"{"hex":"00","hex":"01"}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate field `hex`"), "{e}");
    }

    #[test]
    fn environments_read_back_with_none_share_one_map_and_a_bad_one_is_named() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct E(#[serde(with = "env_serde")] Arc<BTreeMap<OsText, OsText>>);
        let a: E = serde_json::from_str("{}").unwrap();
        let b: E = serde_json::from_str("[]").unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0), "one empty map for all");
        let full: E = serde_json::from_str(r#"{"A":"1"}"#).unwrap();
        assert_eq!(full.0.get(&OsText::from("A")), Some(&OsText::from("1")));
        let e = serde_json::from_str::<E>("7").unwrap_err().to_string();
        assert!(e.contains("an object of variables"), "{e}");
    }

    #[test]
    fn an_optional_environment_reads_back_as_written() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct O(#[serde(with = "env_serde::option")] Option<Arc<BTreeMap<OsText, OsText>>>);
        for o in [
            O(None),
            O(Some(Arc::new(BTreeMap::from([(
                OsText::from_bytes(b"N\xfe".to_vec()),
                OsText::from("v"),
            )])))),
        ] {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<O>(&json).unwrap(), o);
        }
        assert_eq!(serde_json::to_string(&O(None)).unwrap(), "null");
    }
}
