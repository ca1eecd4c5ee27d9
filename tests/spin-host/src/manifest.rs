//! The parts of a Spin application manifest (`spin.toml`, version 2) that this
//! host serves: variables, HTTP triggers and components.
//!
//! Keys the host does not use are ignored, as Spin ignores keys of triggers it
//! does not run, so the same manifest works unmodified with `spin up`.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub spin_manifest_version: u32,
    pub application: Application,
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
    #[serde(default)]
    pub trigger: Triggers,
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
    /// The folder `spin.toml` is in; component sources are relative to it.
    #[serde(skip)]
    pub root: PathBuf,
}

#[derive(Debug, Deserialize)]
pub struct Application {
    pub name: String,
}

/// An application variable: `{ default = "…" }` or `{ required = true }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct Triggers {
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
}

#[derive(Debug, Deserialize)]
pub struct HttpTrigger {
    pub route: String,
    pub component: String,
}

#[derive(Debug, Deserialize)]
pub struct Component {
    pub source: String,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Component variables: templates over application variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    pub build: Option<Build>,
}

#[derive(Debug, Deserialize)]
pub struct Build {
    pub command: String,
    pub workdir: Option<String>,
}

impl Manifest {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the manifest {}", path.display()))?;
        let mut manifest: Manifest = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid Spin manifest", path.display()))?;
        manifest.root = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.spin_manifest_version != 2 {
            bail!("only spin_manifest_version = 2 is supported");
        }
        for (name, variable) in &self.variables {
            if !crate::variables::is_valid_name(name) {
                bail!("invalid variable name {name:?}: use lowercase letters, digits and '_'");
            }
            if variable.required && variable.default.is_some() {
                bail!("variable {name:?} cannot be both required and have a default");
            }
        }
        for (id, component) in &self.component {
            for name in component.variables.keys() {
                if !crate::variables::is_valid_name(name) {
                    bail!("component {id:?}: invalid variable name {name:?}");
                }
            }
        }
        for trigger in &self.trigger.http {
            if !self.component.contains_key(&trigger.component) {
                bail!(
                    "the route {:?} names the component {:?}, which the manifest does not define",
                    trigger.route,
                    trigger.component
                );
            }
        }
        Ok(())
    }

    /// Where a component's Wasm file is.
    pub fn source_path(&self, component: &Component) -> PathBuf {
        self.root.join(&component.source)
    }
}
