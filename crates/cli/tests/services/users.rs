//! `spec.users` on a running cluster, checked where PostgreSQL keeps it: role attributes in
//! `pg_roles`, databases and their ACLs in `pg_database`, the `public` schema's grants by
//! using them, and passwords by logging in through `<c>-primary` (and `<c>-pgbouncer`) with
//! TLS verify-full, as an application with the Secret would.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::Ctx;
use crate::kube_support::eventually;
use crate::node_support::sql::{login_verified_by, Login};

const USER: &str = "rhino";

fn users(ctx: &Ctx, rhino: serde_json::Value) -> serde_json::Value {
    // The cluster's default user stays listed: the example relies on it (and pooling uses it).
    json!({"spec": {"users": [
        {"name": ctx.cluster, "databases": [ctx.cluster]},
        rhino
    ]}})
}

/// `rolcreatedb|rolcreaterole|rolconnlimit` of [`USER`] on the primary, once it exists.
async fn attributes(ctx: &Ctx<'_>, want: &str) {
    let leader = ctx.leader().await;
    let sql = format!(
        "select rolcreatedb || '|' || rolcreaterole || '|' || rolconnlimit \
         from pg_roles where rolname = '{USER}'"
    );
    eventually(
        &format!("{USER}'s attributes to be {want}"),
        Duration::from_secs(180),
        || async { (ctx.superuser_sql(&leader, "postgres", &sql) == want).then_some(()) },
    )
    .await;
}

pub async fn option_and_database_edits_are_applied(ctx: &Ctx<'_>) {
    ctx.patch_cluster(users(
        ctx,
        json!({"name": USER, "databases": ["zoo"], "options": "CREATEDB"}),
    ))
    .await;
    attributes(ctx, "true|false|-1").await;

    // Options replaced and a database added: attributes the options no longer name go back to
    // PostgreSQL's defaults, and the new database exists with the user's grants on it.
    ctx.patch_cluster(users(
        ctx,
        json!({"name": USER, "databases": ["zoo", "aquarium"],
               "options": "CREATEROLE CONNECTION LIMIT 5"}),
    ))
    .await;
    attributes(ctx, "false|true|5").await;
    let leader = ctx.leader().await;
    let grants = eventually(
        "the aquarium database with rhino's grants",
        Duration::from_secs(120),
        || async {
            let out = ctx.superuser_sql(
                &leader,
                "postgres",
                "select has_database_privilege('rhino', datname, 'CONNECT, CREATE, TEMPORARY') \
                 from pg_database where datname = 'aquarium'",
            );
            (out == "t").then_some(out)
        },
    )
    .await;
    assert_eq!(grants, "t");

    // Used as the user would: connect to the new database through the primary's Service and
    // create a table in its `public` schema (PostgreSQL 15 no longer opens it to PUBLIC).
    let mut rhino = current_login(ctx).await;
    assert_eq!(
        rhino.database, "zoo",
        "the Secret's dbname is the first database"
    );
    rhino.database = "aquarium".to_owned();
    let created = rhino
        .query("create table public.fish (name text); select current_user::text")
        .await
        .expect("rhino creates a table in aquarium's public schema");
    assert_eq!(created, [USER]);
}

/// `user` at the pooler's Service instead of the primary's (the same Secret and CA).
async fn through_pgbouncer(ctx: &Ctx<'_>, mut primary: Login) -> Login {
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ctx.namespace);
    let service = ctx.names.pgbouncer();
    let svc = services.get(&service).await.expect("the pgbouncer Service");
    let spec = svc.spec.expect("a Service spec");
    primary.target.host = format!("{service}.{}.svc", ctx.namespace);
    primary.target.hostaddr = spec
        .cluster_ip
        .as_deref()
        .map(|ip| ip.parse().expect("an IP"));
    primary.target.port = spec.ports.expect("ports")[0].port as u16;
    primary
}

/// [`USER`] through `<c>-primary` with the password its Secret holds now.
async fn current_login(ctx: &Ctx<'_>) -> Login {
    login_verified_by(
        ctx.client,
        ctx.namespace,
        &ctx.cluster,
        &ctx.names.primary_service(),
        USER,
        (&ctx.ca_secret, &ctx.ca_key),
    )
    .await
}

/// Waits for a Secret whose password differs from `old`'s and works; then `old` must fail.
async fn replaced(ctx: &Ctx<'_>, old: &Login, what: &str) -> Login {
    let old_password = old.target.password.clone();
    let new = eventually(
        &format!("a new password that works after {what}"),
        Duration::from_secs(240),
        || async {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ctx.namespace);
            let secret = secrets.get(&ctx.names.user_secret(USER)).await.ok()?;
            secret.data.as_ref()?.get("password")?;
            let new = current_login(ctx).await;
            if new.target.password == old_password {
                return None;
            }
            new.query("select 1").await.ok()?;
            Some(new)
        },
    )
    .await;
    let refused = old
        .query("select 1")
        .await
        .expect_err("the old password still logs in");
    assert!(
        refused.contains("password authentication failed"),
        "the old password is refused by authentication: {refused}"
    );
    // The pooler looks passwords up in PostgreSQL: the same holds there.
    let pooled = through_pgbouncer(ctx, new.clone()).await;
    assert_eq!(
        pooled.query("select current_user::text").await,
        Ok(vec![USER.to_owned()]),
        "the new password works through PgBouncer"
    );
    let pooled_old = through_pgbouncer(ctx, old.clone()).await;
    assert!(
        pooled_old.query("select 1").await.is_err(),
        "the old password is refused through PgBouncer"
    );
    new
}

pub async fn a_lost_password_is_replaced_and_the_old_one_refused(ctx: &Ctx<'_>) {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ctx.namespace);
    let name = ctx.names.user_secret(USER);
    let first = current_login(ctx).await;
    assert_eq!(first.query("select 1").await, Ok(vec!["1".to_owned()]));

    // The `password` key removed, as `kubectl patch --type=json` with a remove op would.
    secrets
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "remove", "path": "/data/password"}]))
                    .expect("a JSON patch"),
            ),
        )
        .await
        .expect("removing the password key");
    let second = replaced(ctx, &first, "removing the password key").await;

    // The whole Secret deleted.
    let uid = secrets.get(&name).await.expect("the Secret").metadata.uid;
    secrets
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deleting the user's Secret");
    let third = replaced(ctx, &second, "deleting the Secret").await;
    let recreated = secrets.get(&name).await.expect("the Secret is back");
    assert_ne!(recreated.metadata.uid, uid, "a new Secret object");
    assert!(
        first.query("select 1").await.is_err(),
        "the first password stays refused"
    );
    drop(third);
}
