//! The types of tool arguments: each reads its JSON value strictly, bounds its size, and says
//! what is wrong in words a model can act on ("'local_port' must be between 1 and 65535, got
//! 0"), where serde's own messages would name Rust types. Each also gives its JSON Schema, so
//! an argument struct deriving `Deserialize` and `JsonSchema` from these types has its parsing
//! and its published schema from one source.
//!
//! Messages name the argument as [`FIELD`]; [`super::parse`] puts the real name in (serde does
//! not tell a value's deserializer which field it fills).
use std::borrow::Cow;
use std::marker::PhantomData;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{Deserialize, Deserializer};
use serde_json::Value;

/// Stands for the argument's name in error messages.
pub const FIELD: &str = "{field}";

/// Longest string argument accepted (tokens, hosts, names).
pub const MAX_STRING: usize = 512;

fn fail<E: serde::de::Error>(msg: String) -> E {
    E::custom(msg)
}

macro_rules! inline_schema {
    ($name:literal, $body:expr) => {
        fn inline_schema() -> bool {
            true
        }
        fn schema_name() -> Cow<'static, str> {
            Cow::Borrowed($name)
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            $body
        }
    };
}

/// A string, trimmed, at most `MAX` (and [`MAX_STRING`]) characters. Blank counts as absent
/// ([`super::parse`] drops it before this type sees it).
#[derive(Debug, Clone)]
pub struct Str<const MAX: usize>(pub String);

impl<const MAX: usize> Str<MAX> {
    fn read(v: Value) -> Result<String, String> {
        let max = MAX.min(MAX_STRING);
        match v {
            Value::String(s) => {
                let s = s.trim();
                if s.len() > max {
                    return Err(format!("'{FIELD}' is too long (at most {max} characters)"));
                }
                Ok(s.to_string())
            }
            v => Err(format!("'{FIELD}' must be a string, got {}", describe(&v))),
        }
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Str<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::read(Value::deserialize(d)?).map(Str).map_err(fail)
    }
}

impl<const MAX: usize> JsonSchema for Str<MAX> {
    inline_schema!("Str", json_schema!({"type": "string"}));
}

/// An id or name: a [`Str`] of letters, digits, `-`, `_` and `.`.
#[derive(Debug, Clone)]
pub struct Ident<const MAX: usize>(pub String);

impl<'de, const MAX: usize> Deserialize<'de> for Ident<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Str::<MAX>::read(Value::deserialize(d)?).map_err(fail)?;
        if s.len() > MAX || !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            return Err(fail(format!(
                "'{FIELD}' may contain only letters, digits, '-', '_' and '.' (at most {MAX}), got '{}'",
                truncate(&s, 64)
            )));
        }
        Ok(Ident(s))
    }
}

impl<const MAX: usize> JsonSchema for Ident<MAX> {
    inline_schema!("Ident", json_schema!({"type": "string"}));
}

/// A host name or IP literal: no spaces, slashes, schemes or ports (the client library's rule
/// for a local host, which it applies again before connecting).
#[derive(Debug, Clone)]
pub struct Host(pub String);

impl<'de> Deserialize<'de> for Host {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use rustunnel_client::config::{local_host, valid_local_host};
        let host = Str::<253>::read(Value::deserialize(d)?).map_err(fail)?;
        if host.contains(char::is_whitespace) || !valid_local_host(local_host(&host)) {
            return Err(fail(format!(
                "'{FIELD}' must be a host name or IP address like localhost or 127.0.0.1 (no scheme, path or port), got '{}'",
                truncate(&host, 64)
            )));
        }
        Ok(Host(host))
    }
}

impl JsonSchema for Host {
    inline_schema!("Host", json_schema!({"type": "string"}));
}

/// The values a [`Choice`] takes.
pub trait Choices {
    const ALL: &'static [&'static str];
}

/// One of `C::ALL`, case-insensitive.
pub struct Choice<C>(pub &'static str, PhantomData<C>);

impl<C> std::fmt::Debug for Choice<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl<C> Clone for Choice<C> {
    fn clone(&self) -> Self {
        Choice(self.0, PhantomData)
    }
}

impl<'de, C: Choices> Deserialize<'de> for Choice<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Str::<64>::read(Value::deserialize(d)?).map_err(fail)?;
        let lower = s.to_ascii_lowercase();
        match C::ALL.iter().find(|c| **c == lower) {
            Some(c) => Ok(Choice(c, PhantomData)),
            None => Err(fail(format!("unknown {FIELD} '{}': use one of {}", truncate(&s, 32), C::ALL.join(", ")))),
        }
    }
}

impl<C: Choices> JsonSchema for Choice<C> {
    inline_schema!("Choice", json_schema!({"type": "string", "enum": C::ALL}));
}

/// A whole number within `MIN..=MAX` (`MAX = i64::MAX`: no upper bound in the schema).
#[derive(Debug, Clone, Copy)]
pub struct Int<const MIN: i64, const MAX: i64>(pub i64);

/// The whole number `v` holds, or why not (a message without the argument's bounds).
fn whole(v: &Value) -> Result<i64, Option<String>> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15).map(|f| f as i64))
            .ok_or_else(|| Some(n.to_string())),
        _ => Err(None),
    }
}

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Int<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match whole(&v) {
            Ok(i) if (MIN..=MAX).contains(&i) => Ok(Int(i)),
            Ok(i) => Err(fail(format!("'{FIELD}' must be between {MIN} and {MAX}, got {i}"))),
            Err(Some(n)) => Err(fail(format!("'{FIELD}' must be a whole number between {MIN} and {MAX}, got {n}"))),
            Err(None) => {
                Err(fail(format!("'{FIELD}' must be an integer between {MIN} and {MAX}, got {}", describe(&v))))
            }
        }
    }
}

impl<const MIN: i64, const MAX: i64> JsonSchema for Int<MIN, MAX> {
    inline_schema!("Int", {
        let mut s = json_schema!({"type": "integer", "minimum": MIN});
        if MAX != i64::MAX {
            s.insert("maximum".into(), MAX.into());
        }
        s
    });
}

/// A TCP/UDP port (1-65535).
pub type Port = Int<1, 65535>;

impl Port {
    pub fn port(self) -> u16 {
        u16::try_from(self.0).unwrap_or(u16::MAX)
    }
}

/// A whole number of at least `MIN`; values above `CAP` are taken as `CAP` (the error names
/// the cap, not the largest number JSON can carry).
#[derive(Debug, Clone, Copy)]
pub struct Capped<const MIN: i64, const CAP: i64>(pub i64);

impl<'de, const MIN: i64, const CAP: i64> Deserialize<'de> for Capped<MIN, CAP> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match whole(&Value::deserialize(d)?) {
            Ok(i) if i >= MIN => Ok(Capped(i.min(CAP))),
            _ => Err(fail(format!(
                "'{FIELD}' must be a whole number of at least {MIN} (values above {CAP} are capped to {CAP})"
            ))),
        }
    }
}

impl<const MIN: i64, const CAP: i64> JsonSchema for Capped<MIN, CAP> {
    inline_schema!("Capped", json_schema!({"type": "integer", "minimum": MIN}));
}

/// `true` or `false`.
#[derive(Debug, Clone, Copy)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Flag(b)),
            v => Err(fail(format!("'{FIELD}' must be true or false, got {}", describe(&v)))),
        }
    }
}

impl JsonSchema for Flag {
    inline_schema!("Flag", json_schema!({"type": "boolean"}));
}

/// An array of at most `ITEMS` strings, each trimmed and at most `LEN` long.
#[derive(Debug, Clone, Default)]
pub struct StrList<const ITEMS: usize, const LEN: usize>(pub Vec<String>);

impl<'de, const ITEMS: usize, const LEN: usize> Deserialize<'de> for StrList<ITEMS, LEN> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = match Value::deserialize(d)? {
            Value::Array(items) if items.len() <= ITEMS => items,
            Value::Array(_) => return Err(fail(format!("'{FIELD}' has more than {ITEMS} items"))),
            v => return Err(fail(format!("'{FIELD}' must be an array of strings, got {}", describe(&v)))),
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) if s.trim().len() <= LEN => Ok(s.trim().to_string()),
                Value::String(_) => Err(fail(format!("'{FIELD}': an item is longer than {LEN} characters"))),
                v => Err(fail(format!("'{FIELD}' must hold strings, got {}", describe(v)))),
            })
            .collect::<Result<_, _>>()
            .map(StrList)
    }
}

impl<const ITEMS: usize, const LEN: usize> JsonSchema for StrList<ITEMS, LEN> {
    inline_schema!("StrList", json_schema!({"type": "array", "items": {"type": "string"}, "maxItems": ITEMS}));
}

/// A long text (goal, message, path) of at most `MAX` bytes and no NUL, trimmed if `TRIM`.
#[derive(Debug, Clone)]
pub struct Text<const MAX: usize, const TRIM: bool>(pub String);

impl<'de, const MAX: usize, const TRIM: bool> Deserialize<'de> for Text<MAX, TRIM> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => {
                if s.len() > MAX {
                    return Err(fail(format!("'{FIELD}' is too long ({} bytes; at most {MAX})", s.len())));
                }
                if s.contains('\0') {
                    return Err(fail(format!("'{FIELD}' must not contain NUL characters")));
                }
                Ok(Text(if TRIM { s.trim().to_string() } else { s }))
            }
            _ => Err(fail(format!("'{FIELD}' must be a string"))),
        }
    }
}

impl<const MAX: usize, const TRIM: bool> JsonSchema for Text<MAX, TRIM> {
    inline_schema!("Text", json_schema!({"type": "string"}));
}

/// An object read as `T` (its own serde rules and messages, after the argument's name).
#[derive(Debug, Clone)]
pub struct Nested<T>(pub T);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Nested<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            v @ Value::Object(_) => serde_json::from_value(v).map(Nested).map_err(|e| fail(format!("'{FIELD}': {e}"))),
            v => Err(fail(format!("'{FIELD}' must be an object, got {}", describe(&v)))),
        }
    }
}

impl<T: JsonSchema> JsonSchema for Nested<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// The arguments of a tool that takes none.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// `v` in words, for messages.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string \"{}\"", truncate(s, 32)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err<T: for<'de> Deserialize<'de> + std::fmt::Debug>(v: Value) -> String {
        serde_json::from_value::<T>(v).unwrap_err().to_string()
    }

    #[test]
    fn ports_are_checked() {
        assert_eq!(serde_json::from_value::<Port>(json!(3000)).unwrap().port(), 3000);
        for (v, want) in [
            (json!(0), "between 1 and 65535"),
            (json!(70000), "between 1 and 65535"),
            (json!("3000"), "must be an integer"),
            (json!(1.5), "whole number"),
        ] {
            let e = err::<Port>(v.clone());
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn capped_numbers_name_their_cap() {
        let e = err::<Capped<0, 45000>>(json!(-5));
        assert!(e.contains("at least 0") && e.contains("capped to 45000") && !e.contains("9223372036854775807"), "{e}");
        assert_eq!(serde_json::from_value::<Capped<0, 45000>>(json!(90000)).unwrap().0, 45000);
        assert_eq!(serde_json::from_value::<Capped<0, 45000>>(json!(300)).unwrap().0, 300);
    }

    struct Protocols;
    impl Choices for Protocols {
        const ALL: &'static [&'static str] = &["http", "tcp"];
    }

    #[test]
    fn choices_ignore_case_and_list_the_options() {
        let e = err::<Choice<Protocols>>(json!("FTP"));
        assert!(e.contains("unknown {field} 'FTP'") && e.contains("http, tcp"), "{e}");
        assert_eq!(serde_json::from_value::<Choice<Protocols>>(json!("HTTP")).unwrap().0, "http");
    }

    #[test]
    fn strings_are_bounded_and_typed() {
        assert!(err::<Str<100>>(json!("x".repeat(600))).contains("too long"));
        assert!(err::<Str<100>>(json!(5)).contains("must be a string"));
        assert_eq!(serde_json::from_value::<Str<100>>(json!("  a ")).unwrap().0, "a");
        assert!(err::<Text<5, false>>(json!("x".repeat(10))).contains("too long"));
        assert!(err::<Text<5, false>>(json!(5)).contains("must be a string"));
        assert!(err::<Text<5, false>>(json!("a\0b")).contains("NUL"));
        assert!(err::<StrList<2, 64>>(json!(["a", "b", "c"])).contains("more than 2"));
        assert!(err::<StrList<2, 64>>(json!("a")).contains("array of strings"));
    }

    #[test]
    fn hosts() {
        let ok = |h: &str| serde_json::from_value::<Host>(json!(h)).is_ok();
        assert!(ok("localhost") && ok("::1") && ok("[::1]"));
        for bad in ["http://x", "a b", "localhost:80", "[::1]:80", "127.0.0.1:80"] {
            assert!(!ok(bad), "{bad}");
        }
    }
}
