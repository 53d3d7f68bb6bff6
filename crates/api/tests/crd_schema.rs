//! The generated CRD is one a real kube-apiserver accepts: a *structural* schema (types on every
//! node, no `$ref`, int-or-string marked, preserve-unknown-fields only where free-form), CEL
//! rules whose estimated cost fits the API server's budgets, and OpenAPI keywords that reject
//! what they should (repo names, versions, user names, cron schedules, list sizes).

mod common;

use std::collections::BTreeMap;

use common::*;
use kube::core::cel::cel::common::ast::{Expr, LiteralValue};
use kube::core::cel::cel::Program;
use serde_json::{json, Value};

/// Where the schema is deliberately free-form (kept as written, checked by `validate`).
const FREE_FORM: &[&str] = &[
    "spec.patroni.dynamicConfiguration",
    "spec.backups.pgbackrest.global.*",
    "spec.dataSource.pgbackrest.global.*",
    "spec.proxy.pgBouncer.config.global.*",
    "spec.proxy.pgBouncer.config.databases.*",
    "spec.proxy.pgBouncer.config.users.*",
];

fn walk<'a>(schema: &'a Value, path: String, visit: &mut dyn FnMut(&str, &'a Value)) {
    visit(&path, schema);
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            walk(v, join(&path, k), visit);
        }
    }
    if schema["additionalProperties"].is_object() {
        walk(&schema["additionalProperties"], join(&path, "*"), visit);
    }
    if schema["items"].is_object() {
        walk(&schema["items"], format!("{path}[]"), visit);
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

#[test]
fn the_schema_is_structural() {
    let schema = crd_schema();
    let mut problems = Vec::new();
    walk(&schema, String::new(), &mut |path, node| {
        let int_or_string = node["x-kubernetes-int-or-string"] == json!(true);
        let preserve = node["x-kubernetes-preserve-unknown-fields"] == json!(true);
        if node.get("type").is_none() && !int_or_string && !preserve {
            problems.push(format!("{path}: no type"));
        }
        for forbidden in ["$ref", "definitions", "$defs", "not"] {
            if node.get(forbidden).is_some() {
                problems.push(format!("{path}: has {forbidden}"));
            }
        }
        if node.get("properties").is_some() && node.get("additionalProperties").is_some() {
            problems.push(format!("{path}: both properties and additionalProperties"));
        }
        if preserve && !FREE_FORM.contains(&path) {
            problems.push(format!(
                "{path}: preserves unknown fields but is not free-form"
            ));
        }
        // Logical junctors may only restrict values, never declare types or fields, except for
        // the int-or-string pattern `anyOf: [{type: integer}, {type: string}]`.
        for junctor in ["allOf", "anyOf", "oneOf"] {
            for branch in node[junctor].as_array().into_iter().flatten() {
                let int_or_string_branch = int_or_string
                    && junctor == "anyOf"
                    && branch.as_object().is_some_and(|b| b.len() == 1)
                    && ["integer", "string"].contains(&branch["type"].as_str().unwrap_or(""));
                for key in [
                    "type",
                    "description",
                    "default",
                    "additionalProperties",
                    "nullable",
                    "properties",
                    "items",
                ] {
                    if branch.get(key).is_some() && !int_or_string_branch {
                        problems.push(format!("{path}: {junctor} branch sets {key}"));
                    }
                }
            }
        }
        if path == "metadata" && node.as_object().is_some_and(|m| m.len() > 1) {
            problems.push(format!("{path}: may only be {{type: object}}"));
        }
    });
    assert_eq!(problems, Vec::<String>::new());
    // The free-form places exist where they are declared.
    let mut seen = Vec::new();
    walk(&schema, String::new(), &mut |path, node| {
        if node["x-kubernetes-preserve-unknown-fields"] == json!(true) {
            seen.push(path.to_owned());
        }
    });
    seen.sort();
    let mut expected: Vec<String> = FREE_FORM.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

// ---------------------------------------------------------------------------------------------
// CEL cost. kube-apiserver estimates each rule's worst-case cost from the schema (list sizes
// from maxItems, string sizes from maxLength; unbounded ones from the 3 MiB request limit) and
// rejects the CRD when one rule exceeds 10^7 or all rules together, each multiplied by how often
// it can run (the maxItems of the lists around it), exceed 10^8. This is that estimate, coarser
// but never lower: it also fails outright when a rule iterates or scans something unbounded.
// ---------------------------------------------------------------------------------------------

const PER_RULE_LIMIT: f64 = 1e7;
const PER_CRD_LIMIT: f64 = 1e8;

struct Estimator<'a> {
    self_schema: &'a Value,
    vars: BTreeMap<String, &'a Value>,
    problems: Vec<String>,
}

static UNKNOWN: Value = Value::Null;

impl<'a> Estimator<'a> {
    /// The schema of an expression, when it is a path from `self`, `oldSelf` or a loop variable.
    fn schema_of(&self, e: &Expr) -> Option<&'a Value> {
        match e {
            Expr::Ident(name) if name == "self" || name == "oldSelf" => Some(self.self_schema),
            Expr::Ident(name) => self.vars.get(name).copied(),
            Expr::Select(sel) => {
                let parent = self.schema_of(&sel.operand.expr)?;
                if parent.get("properties").is_some() {
                    parent["properties"].get(&sel.field)
                } else if parent["additionalProperties"].is_object() {
                    Some(&parent["additionalProperties"])
                } else if parent
                    .as_object()
                    .is_some_and(|o| o.is_empty() || o.len() == 1)
                {
                    // `self.metadata` at the root: name is bounded by the API server (253).
                    Some(&UNKNOWN)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn string_len(&mut self, e: &Expr, rule: &str) -> f64 {
        match e {
            Expr::Literal(LiteralValue::String(s)) => s.len() as f64,
            _ => match self.schema_of(e) {
                Some(Value::Null) => 253.0,
                // As the API server does: maxLength counts characters of up to 4 bytes, and an
                // enum is as long as its longest value.
                Some(s) => match s["maxLength"].as_f64() {
                    Some(n) => 4.0 * n,
                    None if s["enum"].is_array() => s["enum"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|v| v.as_str().map_or(0, str::len) as f64)
                        .fold(0.0, f64::max),
                    None => {
                        self.problems
                            .push(format!("{rule}: scans a string without maxLength"));
                        3.0 * 1024.0 * 1024.0
                    }
                },
                None => 253.0,
            },
        }
    }

    fn cost(&mut self, e: &Expr, rule: &str) -> f64 {
        match e {
            Expr::Comprehension(c) => {
                let range_schema = self.schema_of(&c.iter_range.expr);
                let (size, item) = match (&c.iter_range.expr, range_schema) {
                    (Expr::List(l), _) => (l.elements.len() as f64, &UNKNOWN),
                    (_, Some(s)) if s["type"] == "array" => match s["maxItems"].as_f64() {
                        Some(n) => (n, &s["items"]),
                        None => {
                            self.problems
                                .push(format!("{rule}: iterates a list without maxItems"));
                            (1e6, &s["items"])
                        }
                    },
                    _ => {
                        self.problems
                            .push(format!("{rule}: iterates something of unknown size"));
                        (1e6, &UNKNOWN)
                    }
                };
                self.vars.insert(c.iter_var.clone(), item);
                let range = self.cost(&c.iter_range.expr, rule);
                let body = self.cost(&c.loop_step.expr, rule) + self.cost(&c.loop_cond.expr, rule);
                range + size * body.max(1.0)
            }
            Expr::Call(call) => {
                let mut total = 1.0;
                if let Some(t) = &call.target {
                    total += self.cost(&t.expr, rule);
                }
                for a in &call.args {
                    total += self.cost(&a.expr, rule);
                }
                // String work is 0.1 per character in the API server's cost model; a regex
                // costs its input times its own length.
                let scanned = match call.func_name.as_str() {
                    "matches" => {
                        let input = call
                            .target
                            .as_ref()
                            .map(|t| &t.expr)
                            .unwrap_or(&call.args[0].expr);
                        let pattern = call
                            .args
                            .last()
                            .map(|a| self.string_len(&a.expr, rule))
                            .unwrap_or(1.0);
                        0.1 * self.string_len(input, rule) * pattern.max(1.0)
                    }
                    "_==_" | "_!=_" | "contains" | "startsWith" | "endsWith" => {
                        let a = call
                            .target
                            .as_ref()
                            .map(|t| &t.expr)
                            .unwrap_or(&call.args[0].expr);
                        if self.schema_of(a).is_some_and(|s| s["type"] == "string") {
                            0.1 * self.string_len(a, rule)
                        } else {
                            0.0
                        }
                    }
                    _ => 0.0,
                };
                total + scanned
            }
            Expr::Select(sel) => 1.0 + self.cost(&sel.operand.expr, rule),
            Expr::List(l) => {
                l.elements
                    .iter()
                    .map(|x| self.cost(&x.expr, rule))
                    .sum::<f64>()
                    + 1.0
            }
            _ => 1.0,
        }
    }
}

#[test]
fn every_rule_fits_the_api_servers_cel_cost_budget() {
    let schema = crd_schema();
    let mut rules = Vec::new();
    // Cardinality: how often a node's rules can run, from the maxItems of enclosing lists.
    fn collect<'a>(
        s: &'a Value,
        path: String,
        times: f64,
        out: &mut Vec<(String, f64, &'a Value, String)>,
    ) {
        for r in s["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.push((
                path.clone(),
                times,
                s,
                r["rule"].as_str().unwrap().to_owned(),
            ));
        }
        if let Some(props) = s["properties"].as_object() {
            for (k, v) in props {
                collect(v, join(&path, k), times, out);
            }
        }
        if s["items"].is_object() {
            let n = s["maxItems"].as_f64().unwrap_or(f64::INFINITY);
            collect(&s["items"], format!("{path}[]"), times * n, out);
        }
        if s["additionalProperties"].is_object() {
            let n = s["maxProperties"].as_f64().unwrap_or(f64::INFINITY);
            collect(&s["additionalProperties"], join(&path, "*"), times * n, out);
        }
    }
    collect(&schema, String::new(), 1.0, &mut rules);
    assert!(rules.len() >= 20, "found {} rules", rules.len());

    let mut problems = Vec::new();
    let mut total = 0.0;
    for (path, times, node, rule) in &rules {
        Program::compile(rule).unwrap_or_else(|e| panic!("{path}: {rule:?} does not compile: {e}"));
        let program = Program::compile(rule).unwrap();
        let mut est = Estimator {
            self_schema: node,
            vars: BTreeMap::new(),
            problems: Vec::new(),
        };
        let cost = est.cost(&program.expression().expr, rule);
        problems.extend(est.problems.into_iter().map(|p| format!("{path}: {p}")));
        if cost > PER_RULE_LIMIT {
            problems.push(format!("{path}: {rule:?} costs {cost}"));
        }
        if !times.is_finite() {
            problems.push(format!("{path}: {rule:?} sits in an unbounded list"));
        }
        total += cost * times;
    }
    assert_eq!(problems, Vec::<String>::new());
    assert!(total < PER_CRD_LIMIT, "all rules together cost {total}");
}

#[test]
fn the_estimator_notices_unbounded_lists_and_strings() {
    // The cost test above is only worth something if it can fail.
    let node = json!({"type": "object", "properties": {
        "xs": {"type": "array", "items": {"type": "string", "maxLength": 10}},
        "s": {"type": "string"},
    }});
    for rule in ["self.xs.all(x, x != '')", "self.s.matches('^a+$')"] {
        let program = Program::compile(rule).unwrap();
        let mut est = Estimator {
            self_schema: &node,
            vars: BTreeMap::new(),
            problems: Vec::new(),
        };
        est.cost(&program.expression().expr, rule);
        assert_eq!(est.problems.len(), 1, "{rule}: {:?}", est.problems);
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAPI keywords: what the schema itself says (no CEL needed).
// ---------------------------------------------------------------------------------------------

#[test]
fn reference_manifests_satisfy_the_openapi_keywords() {
    let schema = crd_schema();
    for (file, manifest) in examples() {
        assert_eq!(schema_failures(&schema, &manifest), vec![], "{file}");
    }
    assert_eq!(schema_failures(&schema, &with_repo1()), vec![]);
}

fn edit(mut m: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut m);
    m
}

#[test]
fn openapi_keywords_reject_bad_values_at_their_field() {
    let schema = crd_schema();
    let repo = |m: &mut Value, name: &str| {
        m["spec"]["backups"]["pgbackrest"]["repos"][0]["name"] = json!(name)
    };
    let schedule = |m: &mut Value, s: &str| {
        m["spec"]["backups"]["pgbackrest"]["repos"][0]["schedules"] = json!({"full": s})
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "repo5",
            edit(with_repo1(), |m| repo(m, "repo5")),
            "spec.backups.pgbackrest.repos.0.name",
        ),
        (
            "repo0",
            edit(with_repo1(), |m| repo(m, "repo0")),
            "spec.backups.pgbackrest.repos.0.name",
        ),
        (
            "backup",
            edit(with_repo1(), |m| repo(m, "backup")),
            "spec.backups.pgbackrest.repos.0.name",
        ),
        (
            "five repos",
            edit(with_repo1(), |m| {
                let r = m["spec"]["backups"]["pgbackrest"]["repos"][0].clone();
                m["spec"]["backups"]["pgbackrest"]["repos"] =
                    json!([r.clone(), r.clone(), r.clone(), r.clone(), r]);
            }),
            "spec.backups.pgbackrest.repos",
        ),
        (
            "manual from repo9",
            edit(with_repo1(), |m| {
                m["spec"]["backups"]["pgbackrest"]["manual"] = json!({"repoName": "repo9"})
            }),
            "spec.backups.pgbackrest.manual.repoName",
        ),
        (
            "postgres 12",
            edit(minimal(), |m| m["spec"]["postgresVersion"] = json!(12)),
            "spec.postgresVersion",
        ),
        (
            "postgres 18",
            edit(minimal(), |m| m["spec"]["postgresVersion"] = json!(18)),
            "spec.postgresVersion",
        ),
        (
            "no instance sets",
            edit(minimal(), |m| m["spec"]["instances"] = json!([])),
            "spec.instances",
        ),
        (
            "upper-case user",
            edit(minimal(), |m| {
                m["spec"]["users"] = json!([{"name": "Rhino"}])
            }),
            "spec.users.0.name",
        ),
        (
            "user with underscore",
            edit(minimal(), |m| {
                m["spec"]["users"] = json!([{"name": "pg_rhino"}])
            }),
            "spec.users.0.name",
        ),
        (
            "user name of 64",
            edit(minimal(), |m| {
                m["spec"]["users"] = json!([{"name": "a".repeat(64)}])
            }),
            "spec.users.0.name",
        ),
        (
            "options with ;",
            edit(minimal(), |m| {
                m["spec"]["users"] = json!([{"name": "rhino", "options": "LOGIN; DROP"}])
            }),
            "spec.users.0.options",
        ),
        (
            "schedule in words",
            edit(with_repo1(), |m| schedule(m, "every day")),
            "spec.backups.pgbackrest.repos.0.schedules.full",
        ),
        (
            "schedule of 4 fields",
            edit(with_repo1(), |m| schedule(m, "0 0 * *")),
            "spec.backups.pgbackrest.repos.0.schedules.full",
        ),
        (
            "unknown macro",
            edit(with_repo1(), |m| schedule(m, "@sometimes")),
            "spec.backups.pgbackrest.repos.0.schedules.full",
        ),
        (
            "set name with capitals",
            edit(minimal(), |m| {
                m["spec"]["instances"][0]["name"] = json!("Set1")
            }),
            "spec.instances.0.name",
        ),
        (
            "zero replicas",
            edit(minimal(), |m| {
                m["spec"]["instances"][0]["replicas"] = json!(0)
            }),
            "spec.instances.0.replicas",
        ),
        (
            "nodePort 80",
            edit(minimal(), |m| {
                m["spec"]["service"] = json!({"type": "NodePort", "nodePort": 80})
            }),
            "spec.service.nodePort",
        ),
        (
            "service type Headless",
            edit(minimal(), |m| {
                m["spec"]["service"] = json!({"type": "Headless"})
            }),
            "spec.service.type",
        ),
        (
            "lease of 2s",
            edit(minimal(), |m| {
                m["spec"]["patroni"] = json!({"leaderLeaseDurationSeconds": 2})
            }),
            "spec.patroni.leaderLeaseDurationSeconds",
        ),
        (
            "standby repo9",
            edit(minimal(), |m| {
                m["spec"]["standby"] = json!({"enabled": true, "repoName": "repo9"})
            }),
            "spec.standby.repoName",
        ),
    ];
    for (what, manifest, path) in cases {
        let failures = schema_failures(&schema, &manifest);
        assert!(
            !failures.is_empty() && failures.iter().all(|f| f.path == path),
            "{what}: expected failures at {path}, got {failures:#?}"
        );
    }
    // Accepted shapes of a schedule: five fields with names, ranges, steps and lists, or a macro.
    for ok in ["0 1 * * 1-6", "*/15 * * * *", "0 2 1 JAN,JUL SUN", "@daily"] {
        assert_eq!(
            schema_failures(&schema, &edit(with_repo1(), |m| schedule(m, ok))),
            vec![],
            "{ok}"
        );
    }
}

#[test]
fn free_form_maps_keep_numbers_and_booleans() {
    // kubectl reads YAML 1.1, where `y` is a boolean; pgBackRest options arrive that way.
    let schema = crd_schema();
    let m = edit(with_repo1(), |m| {
        m["spec"]["backups"]["pgbackrest"]["global"] =
            json!({"repo1-retention-full": 4, "archive-async": true, "compress-level": 1.5});
        m["spec"]["proxy"] = json!({"pgBouncer": {"config": {"global": {"pool_mode": "transaction", "max_client_conn": 200}}}});
    });
    assert_eq!(schema_failures(&schema, &m), vec![]);
    assert_eq!(cel_failures(&schema, &m, None), vec![]);
}
