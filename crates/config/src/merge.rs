//! Deep merge of JSON documents, the way Patroni merges a `PATCH /config`: objects merge key
//! by key, any other value replaces, and `null` deletes the key. Used to lay the user's
//! `dynamicConfiguration` over Tusk's. Also the one equality of Patroni settings both
//! runtimes use to decide whether Patroni's configuration needs a write. Pure; no I/O.

use serde_json::Value;

/// Merges `overlay` into `base` in place.
pub fn deep_merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                if value.is_null() {
                    base.remove(key);
                } else if let Some(existing) = base.get_mut(key) {
                    deep_merge(existing, value);
                } else {
                    base.insert(key.clone(), value.clone());
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// Equal as Patroni settings: Patroni (or `patronictl edit-config`, which goes through YAML)
/// may hand back `"10"` where Tusk renders `10`, and that is no reason to write. Objects and
/// arrays compare member by member; an object or array never equals a scalar.
pub fn same_setting(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| same_setting(v, w)))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(v, w)| same_setting(v, w))
        }
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => false,
        (a, b) => a == b || scalar_text(a) == scalar_text(b),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_merge_scalars_replace_null_deletes() {
        let mut base = json!({"a": 1, "nested": {"keep": true, "change": "x"}, "gone": 5});
        deep_merge(
            &mut base,
            &json!({"nested": {"change": "y", "new": [1]}, "gone": null, "b": "added"}),
        );
        assert_eq!(
            base,
            json!({"a": 1, "nested": {"keep": true, "change": "y", "new": [1]}, "b": "added"})
        );
    }

    #[test]
    fn a_scalar_replaces_an_object_and_vice_versa() {
        let mut base = json!({"x": {"y": 1}, "z": 2});
        deep_merge(&mut base, &json!({"x": 3, "z": {"w": 4}}));
        assert_eq!(base, json!({"x": 3, "z": {"w": 4}}));
    }

    #[test]
    fn settings_equal_across_string_and_number_but_not_across_shapes() {
        assert!(same_setting(
            &json!({"ttl": "15", "pg_hba": ["a", 1]}),
            &json!({"ttl": 15, "pg_hba": ["a", "1"]})
        ));
        assert!(!same_setting(&json!({"ttl": 15}), &json!({"ttl": 16})));
        assert!(!same_setting(
            &json!({"ttl": 15}),
            &json!({"ttl": 15, "x": 1})
        ));
        assert!(!same_setting(&json!(["1"]), &json!("[\"1\"]")));
    }
}
