//! JSON Schemas as a model reads them best: plain `type`/`properties`/`required`/`enum`,
//! everything inline, no `$ref`, no `format` annotations, no `["T","null"]` unions.
use rmcp::model::JsonObject;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::Value;

/// The output schema of `T` (a struct: MCP requires an object at the root), simplified.
pub fn output_schema<T: JsonSchema>() -> JsonObject {
    match inline_schema::<T>(SchemaSettings::draft2020_12().for_serialize()) {
        Value::Object(mut o) => {
            o.remove("title");
            o
        }
        _ => JsonObject::new(),
    }
}

/// `T`'s schema under `settings` with every subschema inline (no `$ref` to follow) and no
/// meta-schema line, then [`simplify`]d.
fn inline_schema<T: JsonSchema>(settings: SchemaSettings) -> Value {
    let mut v = settings
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    simplify(&mut v);
    v
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

/// The input schema of a tool's argument type `T`, as the tools publish it: the plain form of
/// [`simplify`], without the type's own title and description (the tool carries those), and
/// each field's description on one line (doc comments wrap).
pub fn input_schema<T: JsonSchema>() -> JsonObject {
    let mut v = inline_schema::<T>(SchemaSettings::draft2020_12().for_deserialize());
    plain_input(&mut v, true);
    match v {
        Value::Object(mut o) => {
            o.remove("title");
            o.remove("description");
            // A tool without arguments still lists its (empty) properties.
            o.entry("properties").or_insert_with(|| Value::Object(JsonObject::new()));
            o
        }
        _ => JsonObject::new(),
    }
}

/// Replaces the description of the argument `field` (tools that share an argument type but
/// say something different about one argument).
pub fn describe_field(schema: &mut JsonObject, field: &str, description: &str) {
    if let Some(Value::Object(p)) = schema.get_mut("properties").and_then(|p| p.get_mut(field)) {
        p.insert("description".into(), description.into());
    }
}

/// The names of an input schema's properties and those it requires.
pub fn fields(schema: &JsonObject) -> (Vec<&str>, Vec<&str>) {
    let names = schema.get("properties").and_then(Value::as_object).map(|p| p.keys().map(String::as_str).collect());
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    (names.unwrap_or_default(), required)
}

/// Titles of nested types go; multi-line doc comments become one line; nested objects (the
/// `health_check` argument) state no required fields, which the tool's own checks report by
/// name.
fn plain_input(v: &mut Value, root: bool) {
    let Value::Object(o) = v else { return };
    o.remove("title");
    if !root {
        o.remove("required");
    }
    if let Some(Value::String(d)) = o.get_mut("description") {
        *d = d.lines().map(str::trim).collect::<Vec<_>>().join(" ");
    }
    if let Some(Value::Object(props)) = o.get_mut("properties") {
        props.values_mut().for_each(|p| plain_input(p, false));
    }
    if let Some(items) = o.get_mut("items") {
        plain_input(items, false);
    }
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
