//! `tusk render -f FILE`: the operator's build on an empty namespace, as a YAML stream.

use std::path::Path;

use anyhow::Context;
use tusk_operator::build::{build, BuildInput};
use tusk_operator::images::Images;
use tusk_operator::material::Material;
use tusk_operator::plan::plan_instances;

pub fn run(file: &Path) -> anyhow::Result<()> {
    let yaml =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    print!(
        "{}",
        render(&yaml).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
    );
    Ok(())
}

/// The YAML stream for a manifest; errors name the field.
pub fn render(yaml: &str) -> Result<String, tusk_api::ValidationErrors> {
    let cluster = tusk_api::validate_yaml(yaml)?;
    let images = Images::from_env();
    let plan = plan_instances(&cluster, &[], &mut rand::rng());
    let material = Material::placeholders(&cluster);
    let objects = build(&BuildInput {
        cluster: &cluster,
        images: &images,
        plan: &plan,
        material: &material,
    });
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        // Every string double-quoted: serde_yaml leaves `2026-11-21T10:00:00Z` or `on` bare,
        // which YAML 1.1 readers (kubectl's included) turn into timestamps and booleans.
        out.push_str(&tusk_config::yaml::to_string(&o.to_json()));
    }
    Ok(out)
}
