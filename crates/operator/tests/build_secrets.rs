//! User Secrets: the keys applications read (`user password dbname host port uri jdbc-uri`),
//! and URIs that give back the exact user and password however odd the password is.

#[path = "fixtures/support.rs"]
mod support;

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;
use tusk_operator::build::Managed;
use tusk_operator::material::Material;

use support::*;

const PASSWORD: &str = "p@ss:w/rd?#%&= é+";

fn secret_data(objects: &[Managed], name: &str) -> BTreeMap<String, String> {
    let Managed::Secret(secret) = find(objects, "Secret", name) else {
        unreachable!()
    };
    secret
        .data
        .as_ref()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
        .collect()
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8().unwrap().into_owned()
}

fn material_for_example_02() -> (tusk_api::ValidatedCluster, Material) {
    let cluster = example("02");
    let mut material = Material::placeholders(&cluster);
    material
        .passwords
        .insert("hippo".to_owned(), PASSWORD.to_owned());
    material
        .passwords
        .insert("rhino".to_owned(), "plain".to_owned());
    (cluster, material)
}

#[test]
fn user_secret_has_the_pgo_keys() {
    let (cluster, material) = material_for_example_02();
    let objects = build_with(&cluster, &material);
    let data = secret_data(&objects, "hippo-pguser-hippo");
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["dbname", "host", "jdbc-uri", "password", "port", "uri", "user", "verifier"]
    );
    assert_eq!(data["verifier"], material.verifiers["hippo"]);
    assert_eq!(data["user"], "hippo");
    assert_eq!(data["password"], PASSWORD);
    assert_eq!(data["dbname"], "zoo");
    assert_eq!(data["host"], "hippo-primary.tusk.svc");
    assert_eq!(data["port"], "5432");
    let Managed::Secret(secret) = find(&objects, "Secret", "hippo-pguser-rhino") else {
        unreachable!()
    };
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()[tusk_api::naming::LABEL_USER],
        "rhino"
    );
}

#[test]
fn uri_round_trips_user_and_password_with_special_characters() {
    let (cluster, material) = material_for_example_02();
    let data = secret_data(&build_with(&cluster, &material), "hippo-pguser-hippo");
    let uri = &data["uri"];
    let rest = uri.strip_prefix("postgresql://").unwrap();
    // Only the separator '@' may remain literal: the password's '@' must be encoded.
    assert_eq!(rest.matches('@').count(), 1, "{uri}");
    let (userinfo, host_and_path) = rest.split_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    assert_eq!(decode(user), "hippo");
    assert_eq!(decode(password), PASSWORD);
    assert_eq!(host_and_path, "hippo-primary.tusk.svc:5432/zoo");

    let jdbc = &data["jdbc-uri"];
    let (base, query) = jdbc.split_once('?').unwrap();
    assert_eq!(base, "jdbc:postgresql://hippo-primary.tusk.svc:5432/zoo");
    let params: BTreeMap<&str, String> = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k, decode(v))
        })
        .collect();
    assert_eq!(params.len(), 2, "{jdbc}");
    assert_eq!(params["password"], PASSWORD);
    assert_eq!(params["user"], "hippo");
}

#[test]
fn a_user_without_a_database_gets_no_dbname_and_no_uri_path() {
    // Example 01 has no spec.users: the default user is named after the cluster and owns a
    // database of the same name, so build a cluster with a database-less user instead.
    let cluster = validate(
        r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {name: hippo, namespace: tusk}
spec:
  postgresVersion: 15
  port: 5433
  users: [{name: rhino}]
  instances:
    - dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#,
    );
    let mut material = Material::placeholders(&cluster);
    material
        .passwords
        .insert("rhino".to_owned(), "pw".to_owned());
    let data = secret_data(&build_with(&cluster, &material), "hippo-pguser-rhino");
    assert!(!data.contains_key("dbname"));
    assert_eq!(
        data["uri"],
        "postgresql://rhino:pw@hippo-primary.tusk.svc:5433"
    );
    assert_eq!(
        data["jdbc-uri"],
        "jdbc:postgresql://hippo-primary.tusk.svc:5433/?password=pw&user=rhino"
    );
    assert_eq!(data["port"], "5433");
}

#[test]
fn placeholder_material_never_reaches_a_secret_as_a_real_value() {
    // `tusk render` output: every password is the placeholder, never something generated.
    let cluster = example("02");
    let objects = build_placeholders(&cluster);
    for user in ["hippo", "rhino"] {
        let data = secret_data(&objects, &format!("hippo-pguser-{user}"));
        assert_eq!(data["password"], tusk_operator::material::PLACEHOLDER);
    }
}
