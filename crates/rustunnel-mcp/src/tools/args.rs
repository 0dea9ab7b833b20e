//! Reading tool arguments: strict types, bounded sizes, and error messages that name the field
//! and say what is expected. (Hand-rolled rather than serde so every mistake — a string port,
//! port 70000, an unknown protocol — becomes a precise `isError` result.)
use rmcp::model::JsonObject;
use serde_json::Value;

use super::ToolError;

/// Longest string argument accepted (tokens, hosts, names).
pub const MAX_STRING: usize = 512;

/// A view over a call's arguments.
#[derive(Debug)]
pub struct Args<'a> {
    map: &'a JsonObject,
}

impl<'a> Args<'a> {
    /// Fails on arguments the tool does not define (typos would otherwise be silently ignored).
    pub fn new(map: &'a JsonObject, allowed: &[&str]) -> Result<Self, ToolError> {
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ToolError::invalid(format!(
                "unknown argument '{}' (this tool accepts: {})",
                truncate(k, 64),
                if allowed.is_empty() { "no arguments".to_string() } else { allowed.join(", ") }
            )));
        }
        Ok(Args { map })
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// An optional string, trimmed; empty counts as absent.
    pub fn opt_str(&self, name: &str, max: usize) -> Result<Option<String>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => {
                let s = s.trim();
                if s.len() > max.min(MAX_STRING) {
                    return Err(ToolError::invalid(format!(
                        "'{name}' is too long (at most {} characters)",
                        max.min(MAX_STRING)
                    )));
                }
                Ok((!s.is_empty()).then(|| s.to_string()))
            }
            Some(v) => Err(ToolError::invalid(format!("'{name}' must be a string, got {}", describe(v)))),
        }
    }

    pub fn req_str(&self, name: &str, max: usize) -> Result<String, ToolError> {
        self.opt_str(name, max)?.ok_or_else(|| ToolError::invalid(format!("'{name}' is required")))
    }

    /// An optional integer within `min..=max`.
    /// A whole number of at least `min`; values above `cap` are taken as `cap` (the error
    /// names the cap, not the largest number JSON can carry).
    pub fn opt_int_capped(&self, name: &str, min: i64, cap: i64) -> Result<Option<i64>, ToolError> {
        match self.opt_int(name, min, i64::MAX) {
            Ok(v) => Ok(v.map(|i| i.min(cap))),
            Err(_) => Err(ToolError::invalid(format!(
                "'{name}' must be a whole number of at least {min} (values above {cap} are capped to {cap})"
            ))),
        }
    }

    pub fn opt_int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let Some(i) =
                    n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15).map(|f| f as i64))
                else {
                    return Err(ToolError::invalid(format!(
                        "'{name}' must be a whole number between {min} and {max}, got {n}"
                    )));
                };
                if i < min || i > max {
                    return Err(ToolError::invalid(format!("'{name}' must be between {min} and {max}, got {i}")));
                }
                Ok(Some(i))
            }
            Some(v) => Err(ToolError::invalid(format!(
                "'{name}' must be an integer between {min} and {max}, got {}",
                describe(v)
            ))),
        }
    }

    /// A TCP/UDP port (1-65535).
    pub fn req_port(&self, name: &str) -> Result<u16, ToolError> {
        let p = self
            .opt_int(name, 1, 65535)?
            .ok_or_else(|| ToolError::invalid(format!("'{name}' is required (1-65535)")))?;
        u16::try_from(p).map_err(|_| ToolError::invalid(format!("'{name}' must be between 1 and 65535")))
    }

    /// One of `choices`, case-insensitive.
    pub fn opt_choice(&self, name: &str, choices: &[&'static str]) -> Result<Option<&'static str>, ToolError> {
        let Some(s) = self.opt_str(name, 64)? else { return Ok(None) };
        let lower = s.to_ascii_lowercase();
        choices.iter().find(|c| **c == lower).copied().map(Some).ok_or_else(|| {
            ToolError::invalid(format!("unknown {name} '{}': use one of {}", truncate(&s, 32), choices.join(", ")))
        })
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ToolError::invalid(format!("'{name}' must be true or false, got {}", describe(v)))),
        }
    }

    /// An optional array of strings (each trimmed, at most `max_len` long); absent: empty.
    pub fn opt_str_list(&self, name: &str, max_items: usize, max_len: usize) -> Result<Vec<String>, ToolError> {
        let items = match self.get(name) {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) if items.len() <= max_items => items,
            Some(Value::Array(_)) => {
                return Err(ToolError::invalid(format!("'{name}' has more than {max_items} items")))
            }
            Some(v) => {
                return Err(ToolError::invalid(format!("'{name}' must be an array of strings, got {}", describe(v))))
            }
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) if s.trim().len() <= max_len => Ok(s.trim().to_string()),
                Value::String(_) => {
                    Err(ToolError::invalid(format!("'{name}': an item is longer than {max_len} characters")))
                }
                v => Err(ToolError::invalid(format!("'{name}' must hold strings, got {}", describe(v)))),
            })
            .collect()
    }

    /// An optional object (returned as is, for the caller to read with a nested [`Args`]).
    pub fn opt_object(&self, name: &str) -> Result<Option<&'a JsonObject>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(v) => Err(ToolError::invalid(format!("'{name}' must be an object, got {}", describe(v)))),
        }
    }
}

/// A host name or IP literal: no spaces, slashes, schemes or ports (the client library's rule
/// for a local host, which it applies again before connecting).
pub fn check_host(name: &str, host: &str) -> Result<(), ToolError> {
    use rustunnel_client::config::{local_host, valid_local_host};
    let ok = !host.contains(char::is_whitespace) && valid_local_host(local_host(host));
    if !ok {
        return Err(ToolError::invalid(format!(
            "'{name}' must be a host name or IP address like localhost or 127.0.0.1 (no scheme, path or port), got '{}'",
            truncate(host, 64)
        )));
    }
    Ok(())
}

/// Ids and names: letters, digits, `-`, `_`, `.`.
pub fn check_ident(name: &str, v: &str, max: usize) -> Result<(), ToolError> {
    if v.len() > max || !v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(ToolError::invalid(format!(
            "'{name}' may contain only letters, digits, '-', '_' and '.' (at most {max}), got '{}'",
            truncate(v, 64)
        )));
    }
    Ok(())
}

/// `s` as one word for a POSIX shell: as it is when it has only characters no shell reads
/// specially, else single-quoted (`[` and `]` are glob characters: `[::1]:4040` is quoted).
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'@' | b','));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string \"{}\"", truncate(s, 32)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn truncate(s: &str, max: usize) -> String {
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

    #[test]
    fn shell_words_survive_bash() {
        for (raw, quoted) in [
            ("127.0.0.1:4040", "127.0.0.1:4040"),
            ("[::1]:4040", "'[::1]:4040'"),
            ("it's", r"'it'\''s'"),
            ("", "''"),
            ("a b;rm -rf", "'a b;rm -rf'"),
        ] {
            assert_eq!(shell_quote(raw), quoted);
            // With nullglob a glob that matches nothing would vanish: the word must not be one.
            let script = format!("shopt -s nullglob; printf %s {quoted}");
            let out = std::process::Command::new("bash").args(["-c", &script]).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), raw, "{quoted}");
        }
    }

    fn obj(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn ports_are_checked() {
        let m = obj(json!({"p": 3000, "z": 0, "big": 70000, "s": "3000", "f": 1.5}));
        let a = Args::new(&m, &["p", "z", "big", "s", "f"]).unwrap();
        assert_eq!(a.req_port("p").unwrap(), 3000);
        for (k, want) in [
            ("z", "between 1 and 65535"),
            ("big", "between 1 and 65535"),
            ("s", "must be an integer"),
            ("f", "whole number"),
        ] {
            let e = a.req_port(k).unwrap_err().to_string();
            assert!(e.contains(want), "{k}: {e}");
        }
        assert!(a.req_port("missing").unwrap_err().to_string().contains("required"));
    }

    #[test]
    fn capped_numbers_name_their_cap() {
        let m = obj(json!({"neg": -5, "big": 90000, "ok": 300}));
        let a = Args::new(&m, &["neg", "big", "ok"]).unwrap();
        let e = a.opt_int_capped("neg", 0, 45000).unwrap_err().to_string();
        assert!(e.contains("at least 0") && e.contains("capped to 45000") && !e.contains("9223372036854775807"), "{e}");
        assert_eq!(a.opt_int_capped("big", 0, 45000).unwrap(), Some(45000));
        assert_eq!(a.opt_int_capped("ok", 0, 45000).unwrap(), Some(300));
    }

    #[test]
    fn unknown_arguments_and_choices() {
        let m = obj(json!({"protocol": "FTP", "bogus": 1}));
        assert!(Args::new(&m, &["protocol"]).unwrap_err().to_string().contains("unknown argument 'bogus'"));
        let m = obj(json!({"protocol": "FTP"}));
        let a = Args::new(&m, &["protocol"]).unwrap();
        let e = a.opt_choice("protocol", &["http", "tcp"]).unwrap_err().to_string();
        assert!(e.contains("unknown protocol 'FTP'") && e.contains("http, tcp"), "{e}");
        let m = obj(json!({"protocol": "HTTP"}));
        assert_eq!(Args::new(&m, &["protocol"]).unwrap().opt_choice("protocol", &["http"]).unwrap(), Some("http"));
    }

    #[test]
    fn strings_are_bounded_and_typed() {
        let long = "x".repeat(600);
        let m = obj(json!({"a": long, "b": 5, "c": "  ", "d": null}));
        let a = Args::new(&m, &["a", "b", "c", "d"]).unwrap();
        assert!(a.opt_str("a", 100).unwrap_err().to_string().contains("too long"));
        assert!(a.opt_str("b", 100).unwrap_err().to_string().contains("must be a string"));
        assert_eq!(a.opt_str("c", 100).unwrap(), None);
        assert_eq!(a.opt_str("d", 100).unwrap(), None);
    }

    #[test]
    fn hosts() {
        assert!(check_host("h", "localhost").is_ok());
        assert!(check_host("h", "::1").is_ok());
        assert!(check_host("h", "http://x").is_err());
        assert!(check_host("h", "a b").is_err());
        assert!(check_host("h", "[::1]").is_ok());
        for with_port in ["localhost:80", "[::1]:80", "127.0.0.1:80"] {
            assert!(check_host("h", with_port).is_err(), "{with_port}");
        }
    }
}
