//! JSON Schemas as a model reads them best: plain `type`/`properties`/`required`/`enum`,
//! everything inline, no `$ref`, no `format` annotations, no `["T","null"]` unions.
use rmcp::model::JsonObject;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{Map, Value};

/// The output schema of `T` (a struct: MCP requires an object at the root), simplified.
pub fn output_schema<T: JsonSchema>() -> JsonObject {
    let schema = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut v = schema.to_value();
    simplify(&mut v);
    match v {
        Value::Object(mut o) => {
            o.remove("title");
            o
        }
        _ => JsonObject::new(),
    }
}

/// Removes what models and strict clients trip on; keeps the meaning.
pub fn simplify(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("$schema");
            o.remove("format");
            o.remove("$defs");
            // Option<T> comes out as `"type": ["T", "null"]` or `anyOf: [T, {"type":"null"}]`;
            // absence already means "none" (the field is not required).
            if let Some(Value::Array(types)) = o.get("type") {
                let non_null: Vec<Value> = types.iter().filter(|t| t.as_str() != Some("null")).cloned().collect();
                if non_null.len() == 1 {
                    o.insert("type".into(), non_null[0].clone());
                }
            }
            if let Some(Value::Array(any)) = o.get("anyOf") {
                let non_null: Vec<Value> = any.iter().filter(|s| !is_null_schema(s)).cloned().collect();
                if non_null.len() == 1 && any.len() == 2 {
                    o.remove("anyOf");
                    if let Value::Object(inner) = &non_null[0] {
                        for (k, val) in inner {
                            o.entry(k.clone()).or_insert_with(|| val.clone());
                        }
                    }
                }
            }
            if o.get("default") == Some(&Value::Null) {
                o.remove("default");
            }
            if let Some(Value::Array(e)) = o.get_mut("enum") {
                e.retain(|x| !x.is_null());
            }
            for (_, child) in o.iter_mut() {
                simplify(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(simplify),
        _ => {}
    }
}

fn is_null_schema(s: &Value) -> bool {
    s.get("type").and_then(Value::as_str) == Some("null") || s.get("const") == Some(&Value::Null)
}

/// `{"type":"object","properties":{..},"required":[..],"additionalProperties":false}`.
pub fn object(properties: Vec<(&str, Value)>, required: &[&str]) -> Value {
    let mut props = Map::new();
    for (k, v) in properties {
        props.insert(k.to_string(), v);
    }
    let mut o = Map::new();
    o.insert("type".into(), "object".into());
    o.insert("properties".into(), Value::Object(props));
    if !required.is_empty() {
        o.insert("required".into(), Value::Array(required.iter().map(|r| Value::from(*r)).collect()));
    }
    o.insert("additionalProperties".into(), false.into());
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, JsonSchema)]
    struct Inner {
        a: u16,
    }

    #[derive(serde::Serialize, JsonSchema)]
    struct Outer {
        /// A name.
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        maybe: Option<String>,
        inner: Option<Inner>,
        list: Vec<Inner>,
    }

    #[test]
    fn output_schemas_are_plain() {
        let s = Value::Object(output_schema::<Outer>());
        let text = s.to_string();
        for bad in ["$ref", "$defs", "format", "\"null\"", "$schema"] {
            assert!(!text.contains(bad), "{bad} in {text}");
        }
        assert_eq!(s["type"], "object");
        assert_eq!(s["properties"]["maybe"]["type"], "string");
        assert_eq!(s["properties"]["inner"]["type"], "object");
        assert_eq!(s["properties"]["list"]["items"]["properties"]["a"]["type"], "integer");
        assert_eq!(s["properties"]["name"]["description"], "A name.");
    }
}
