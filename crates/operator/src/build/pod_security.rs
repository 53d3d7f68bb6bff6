//! Security contexts that make instance pods pass the Kubernetes "restricted" Pod Security
//! Standard: non-root, no privilege escalation, no capabilities, the runtime's default
//! seccomp profile, and (beyond the standard) a read-only root filesystem.
//!
//! User-supplied sidecars (`spec.instances[].containers`) get the same settings field by
//! field where they leave a field unset; what they set explicitly is kept. A pod that then
//! fails the namespace's Pod Security admission is the user's explicit choice, and the
//! API server's rejection names the container, which is clearer than Tusk overriding it
//! silently. Pure.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, SeccompProfile, SecurityContext,
};

/// UID and GID of the `postgres` user in Tusk's database image (the PGO family's value).
pub const POSTGRES_UID: i64 = 26;

pub fn instance_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(POSTGRES_UID),
        // Volumes (data, certificates) are group-owned by the postgres group, so the key
        // files can be 0640 root:26.
        fs_group: Some(POSTGRES_UID),
        // Re-chowning a large data directory on every start would delay failover.
        fs_group_change_policy: Some("OnRootMismatch".to_owned()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// The security context of every container Tusk defines.
pub fn restricted_container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        ..SecurityContext::default()
    }
}

/// A user's sidecar with every security field it leaves unset filled from
/// [`restricted_container_security_context`].
pub fn with_restricted_defaults(mut container: Container) -> Container {
    let defaults = restricted_container_security_context();
    let ctx = container
        .security_context
        .get_or_insert_with(SecurityContext::default);
    ctx.allow_privilege_escalation = ctx
        .allow_privilege_escalation
        .or(defaults.allow_privilege_escalation);
    if ctx.capabilities.is_none() {
        ctx.capabilities = defaults.capabilities;
    }
    ctx.privileged = ctx.privileged.or(defaults.privileged);
    ctx.read_only_root_filesystem = ctx
        .read_only_root_filesystem
        .or(defaults.read_only_root_filesystem);
    container
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_settings_are_kept_and_gaps_filled() {
        let sidecar = Container {
            name: "logs".to_owned(),
            security_context: Some(SecurityContext {
                read_only_root_filesystem: Some(false),
                ..SecurityContext::default()
            }),
            ..Container::default()
        };
        let ctx = with_restricted_defaults(sidecar).security_context.unwrap();
        assert_eq!(ctx.read_only_root_filesystem, Some(false));
        assert_eq!(ctx.allow_privilege_escalation, Some(false));
        assert_eq!(ctx.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    }
}
