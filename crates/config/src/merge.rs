//! Deep merge of JSON documents, the way Patroni merges a `PATCH /config`: objects merge key
//! by key, any other value replaces, and `null` deletes the key. Used to lay the user's
//! `dynamicConfiguration` over Tusk's. Pure; no I/O.

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
}
