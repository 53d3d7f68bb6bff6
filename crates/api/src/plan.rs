//! Which instances (one StatefulSet each) a cluster should have, given what exists.
//!
//! Instance names are `<cluster>-<set>-<4 random characters>`; they must be stable across
//! reconciles, so the plan keeps every existing instance it can and only invents names for
//! new ones. Scale-down removes replicas, never the primary; instances whose StatefulSet is
//! gone but whose PVCs remain are reused first so their data is not wasted. Pure: randomness
//! is passed in.

use std::collections::{BTreeMap, BTreeSet};

use crate::ValidatedCluster;
use rand::Rng;

/// Characters of the random suffix: lowercase consonants and digits that cannot spell words
/// or be confused with each other (as the PGO family does).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const SUFFIX_LEN: usize = 4;

/// An instance found in the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedInstance {
    /// `<cluster>-<set>-xxxx`
    pub name: String,
    /// Value of its `tusk.rs/instance-set` label.
    pub set: String,
    /// Its StatefulSet exists (otherwise only its PVCs were found).
    pub has_statefulset: bool,
    /// Patroni labelled its pod `master`.
    pub is_primary: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstancePlan {
    /// Instance names per set, in spec order of sets and sorted by name within a set.
    pub sets: Vec<(String, Vec<String>)>,
    /// Instances whose StatefulSets are to be deleted (their PVCs are kept).
    pub removed: Vec<String>,
}

impl InstancePlan {
    /// Every instance name in the plan.
    pub fn instances(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sets
            .iter()
            .flat_map(|(set, names)| names.iter().map(move |n| (set.as_str(), n.as_str())))
    }
}

/// Plans instance names for `cluster` given the `observed` ones.
pub fn plan_instances(
    cluster: &ValidatedCluster,
    observed: &[ObservedInstance],
    rng: &mut impl Rng,
) -> InstancePlan {
    let mut taken: BTreeSet<String> = observed.iter().map(|o| o.name.clone()).collect();
    let mut plan = InstancePlan::default();
    for set in &cluster.instance_sets {
        let set_name = set.name.as_str();
        let want = set.replicas as usize;
        let mut running: Vec<&ObservedInstance> = observed
            .iter()
            .filter(|o| o.set == set_name && o.has_statefulset)
            .collect();
        // Keep the primary first, then by name; drop from the end.
        running.sort_by(|a, b| b.is_primary.cmp(&a.is_primary).then(a.name.cmp(&b.name)));
        let mut names: Vec<String> = running.iter().take(want).map(|o| o.name.clone()).collect();
        plan.removed
            .extend(running.iter().skip(want).map(|o| o.name.clone()));
        let mut leftovers: Vec<&ObservedInstance> = observed
            .iter()
            .filter(|o| o.set == set_name && !o.has_statefulset)
            .collect();
        leftovers.sort_by(|a, b| a.name.cmp(&b.name));
        for o in leftovers {
            if names.len() >= want {
                break;
            }
            names.push(o.name.clone());
        }
        while names.len() < want {
            let name = cluster.names.instance(set_name, &random_suffix(rng));
            if taken.insert(name.clone()) {
                names.push(name);
            }
        }
        names.sort();
        plan.sets.push((set_name.to_owned(), names));
    }
    // Instances of sets no longer in the spec.
    let sets: BTreeMap<&str, ()> = cluster
        .instance_sets
        .iter()
        .map(|s| (s.name.as_str(), ()))
        .collect();
    plan.removed.extend(
        observed
            .iter()
            .filter(|o| o.has_statefulset && !sets.contains_key(o.set.as_str()))
            .map(|o| o.name.clone()),
    );
    plan.removed.sort();
    plan
}

fn random_suffix(rng: &mut impl Rng) -> String {
    (0..SUFFIX_LEN)
        .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cluster(replicas: u32) -> ValidatedCluster {
        let yaml = format!(
            "apiVersion: tusk.rs/v1beta1\nkind: PostgresCluster\nmetadata: {{name: hippo, namespace: ns}}\nspec:\n  postgresVersion: 15\n  instances:\n    - name: instance1\n      replicas: {replicas}\n      dataVolumeClaimSpec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
        );
        crate::validate_yaml(&yaml).unwrap()
    }

    fn obs(name: &str, sts: bool, primary: bool) -> ObservedInstance {
        ObservedInstance {
            name: name.into(),
            set: "instance1".into(),
            has_statefulset: sts,
            is_primary: primary,
        }
    }

    #[test]
    fn new_names_are_random_and_well_formed() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let plan = plan_instances(&cluster(3), &[], &mut rng);
        let names = &plan.sets[0].1;
        assert_eq!(names.len(), 3);
        for n in names {
            let suffix = n.strip_prefix("hippo-instance1-").unwrap();
            assert_eq!(suffix.len(), 4);
            assert!(suffix.bytes().all(|c| SUFFIX_ALPHABET.contains(&c)));
        }
        assert!(plan.removed.is_empty());
    }

    #[test]
    fn existing_names_are_kept_and_scale_down_spares_the_primary() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let observed = [
            obs("hippo-instance1-aaaa", true, false),
            obs("hippo-instance1-bbbb", true, false),
            obs("hippo-instance1-zzzz", true, true),
        ];
        let plan = plan_instances(&cluster(3), &observed, &mut rng);
        assert_eq!(
            plan.sets[0].1,
            [
                "hippo-instance1-aaaa",
                "hippo-instance1-bbbb",
                "hippo-instance1-zzzz"
            ]
        );
        let plan = plan_instances(&cluster(1), &observed, &mut rng);
        assert_eq!(plan.sets[0].1, ["hippo-instance1-zzzz"]);
        assert_eq!(
            plan.removed,
            ["hippo-instance1-aaaa", "hippo-instance1-bbbb"]
        );
    }

    #[test]
    fn instances_with_only_volumes_left_are_reused() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let observed = [
            obs("hippo-instance1-aaaa", true, true),
            obs("hippo-instance1-kept", false, false),
        ];
        let plan = plan_instances(&cluster(2), &observed, &mut rng);
        assert_eq!(
            plan.sets[0].1,
            ["hippo-instance1-aaaa", "hippo-instance1-kept"]
        );
    }
}
