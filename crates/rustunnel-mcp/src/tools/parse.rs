//! Reading a tool call's arguments into the tool's argument type: the checks that concern the
//! whole object (unknown and missing arguments) come from the type's input schema, each value
//! is read by its field type ([`super::fields`]), and every failure becomes an
//! [`ToolError::InvalidArguments`] naming the argument.
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ToolError;
use super::fields::{truncate, FIELD};
use super::schema;

/// Parses `args` into `T`. Null and blank-string arguments count as absent.
pub fn parse<T: DeserializeOwned + JsonSchema>(args: JsonObject) -> Result<T, ToolError> {
    let schema = schema::input_schema::<T>();
    parse_with(&schema, args)
}

/// [`parse`] against an already built input schema of `T`.
pub fn parse_with<T: DeserializeOwned>(schema: &JsonObject, args: JsonObject) -> Result<T, ToolError> {
    let (names, required) = schema::fields(schema);
    if let Some(k) = args.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(ToolError::invalid(format!(
            "unknown argument '{}' (this tool accepts: {})",
            truncate(k, 64),
            if names.is_empty() { "no arguments".to_string() } else { names.join(", ") }
        )));
    }
    let args: JsonObject = args.into_iter().filter(|(_, v)| !is_absent(v)).collect();
    if let Some(missing) = required.iter().find(|r| !args.contains_key(**r)) {
        let what = schema.get("properties").and_then(|p| p.get(*missing)).map(expected).unwrap_or_default();
        return Err(ToolError::invalid(format!("'{missing}' is required{what}")));
    }
    serde_path_to_error::deserialize(Value::Object(args)).map_err(|e| {
        let field = e.path().iter().next().map(|s| s.to_string()).unwrap_or_default();
        let msg = e.into_inner().to_string();
        ToolError::invalid(if msg.contains(FIELD) {
            msg.replacen(FIELD, &field, 1)
        } else {
            format!("'{field}': {msg}")
        })
    })
}

fn is_absent(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// What a missing argument should be, from its schema: " (1-65535)", ": http, tcp or udp".
fn expected(prop: &Value) -> String {
    if let Some(choices) = prop.get("enum").and_then(Value::as_array) {
        let words: Vec<&str> = choices.iter().filter_map(Value::as_str).collect();
        return match words.split_last() {
            Some((last, [])) => format!(": {last}"),
            Some((last, rest)) => format!(": {} or {last}", rest.join(", ")),
            None => String::new(),
        };
    }
    match (prop.get("type").and_then(Value::as_str), prop.get("minimum"), prop.get("maximum")) {
        (Some("integer"), Some(min), Some(max)) => format!(" ({min}-{max})"),
        (Some("string"), ..) => " (a non-empty string)".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::fields::{Choice, Choices, Port, Str};
    use serde_json::json;

    struct Protocols;
    impl Choices for Protocols {
        const ALL: &'static [&'static str] = &["http", "tcp", "udp"];
    }

    /// Test arguments.
    #[derive(Debug, serde::Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Args {
        /// The port.
        local_port: Port,
        /// The protocol.
        protocol: Choice<Protocols>,
        /// A name.
        name: Str<8>,
        /// Optional.
        note: Option<Str<8>>,
    }

    fn err(v: Value) -> String {
        parse::<Args>(v.as_object().cloned().unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn messages_name_the_argument() {
        let ok = json!({"local_port": 80, "protocol": "tcp", "name": "a", "note": null});
        let a: Args = parse(ok.as_object().cloned().unwrap()).unwrap();
        assert!(a.note.is_none());
        for (v, want) in [
            (json!({"protocol": "tcp", "name": "a"}), "'local_port' is required (1-65535)"),
            (json!({"local_port": 80, "name": "a"}), "'protocol' is required: http, tcp or udp"),
            (json!({"local_port": 80, "protocol": "tcp", "name": "  "}), "'name' is required (a non-empty string)"),
            (json!({"local_port": 80, "protocol": "ftp", "name": "a"}), "unknown protocol 'ftp': use one of"),
            (json!({"local_port": 0, "protocol": "tcp", "name": "a"}), "'local_port' must be between 1 and 65535"),
            (json!({"local_port": 80, "protocol": "tcp", "name": "a", "colour": 1}), "unknown argument 'colour'"),
            (json!({"local_port": 80, "protocol": "tcp", "name": "a", "note": 5}), "'note' must be a string"),
        ] {
            let e = err(v.clone());
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
