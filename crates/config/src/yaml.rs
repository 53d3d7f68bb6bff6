//! YAML text for Patroni, with every string double-quoted.
//!
//! Why not just `serde_yaml::to_string`: serde_yaml writes YAML 1.2, where `on`, `off`, `yes`
//! and `no` are plain strings and need no quotes, but Patroni reads its file with PyYAML,
//! which follows YAML 1.1 and turns them into booleans: `watchdog.mode: off` then fails
//! Patroni's validation and `synchronous_commit: on` becomes `True`. A double-quoted scalar is
//! a string in every YAML version, and JSON's string escapes are valid in it, so strings are
//! written with serde_json. Keys stay plain when they are unambiguous identifiers. Pure; no I/O.

use serde_json::Value;

/// Renders `value` as a block-style YAML document.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

fn write_mapping(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key_text(key));
        out.push(':');
        write_nested(out, value, indent + 2);
    }
}

fn write_sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            // The first key shares the dash's line: `- name: x`.
            Value::Object(map) if !map.is_empty() => {
                let mut nested = String::new();
                write_mapping(&mut nested, map, indent + 2);
                out.push(' ');
                out.push_str(&nested[indent + 2..]);
            }
            other => write_nested(out, other, indent + 2),
        }
    }
}

/// Writes what follows a `key:` or `-`: a scalar on the same line, a collection below it.
fn write_nested(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_mapping(out, map, indent);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_sequence(out, items, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quoted(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

/// Words YAML 1.1 resolves to booleans or null when plain.
const YAML11_SPECIAL: &[&str] = &[
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
];

fn key_text(key: &str) -> String {
    let mut chars = key.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !YAML11_SPECIAL.contains(&key.to_ascii_lowercase().as_str());
    if plain {
        key.to_owned()
    } else {
        quoted(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_are_quoted_so_yaml_1_1_keeps_them_strings() {
        let text = to_string(&json!({"watchdog": {"mode": "off"}, "n": 2, "x": true}));
        assert_eq!(text, "\"n\": 2\nwatchdog:\n  mode: \"off\"\nx: true\n");
    }

    #[test]
    fn nested_collections_round_trip() {
        let value = json!({
            "a": [{"name": "postgres", "port": 5432}, "data-checksums", {"encoding": "UTF8"}],
            "b": {"c": {"d": "line \"quoted\"\nnext"}, "empty": [], "none": {}},
            "tusk.rs/cluster": "hippo",
            "with space": null,
        });
        let text = to_string(&value);
        let back: Value = serde_yaml::from_str(&text).expect("valid YAML");
        assert_eq!(back, value, "{text}");
        assert!(
            text.contains("- name: \"postgres\"\n    port: 5432\n"),
            "{text}"
        );
    }
}
