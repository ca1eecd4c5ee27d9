//! Copies the Spin WIT packages the host implements out of the spin-sdk crate
//! the components depend on, into `wit/deps/` (git-ignored), where `bindgen!`
//! reads them.

use std::path::{Path, PathBuf};

/// The packages `wit/host.wit` imports.
const PACKAGES: &[&str] = &[
    "spin-postgres@4.2.0",
    "spin-redis@3.0.0",
    "spin-variables@3.0.0",
];

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let sdk_wit = spin_sdk_wit_dir(&manifest_dir)?;
    let deps = manifest_dir.join("wit").join("deps");
    for package in PACKAGES {
        copy_dir(&sdk_wit.join("deps").join(package), &deps.join(package))?;
    }
    println!("cargo::rerun-if-changed=wit/host.wit");
    println!("cargo::rerun-if-changed=../../Cargo.lock");
    Ok(())
}

/// The `wit/` folder of the spin-sdk package in the workspace's dependency graph.
fn spin_sdk_wit_dir(manifest_dir: &Path) -> anyhow::Result<PathBuf> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .current_dir(manifest_dir)
        .exec()?;
    let sdk = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == "spin-sdk")
        .ok_or_else(|| anyhow::anyhow!("spin-sdk is not in the workspace's dependency graph"))?;
    let manifest = sdk.manifest_path.as_std_path();
    Ok(manifest
        .parent()
        .expect("a manifest has a folder")
        .join("wit"))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let bytes = std::fs::read(entry.path())?;
        // Rewrite only on change so `bindgen!` is not re-run needlessly.
        if std::fs::read(&target).ok().as_deref() != Some(bytes.as_slice()) {
            std::fs::write(&target, bytes)?;
        }
    }
    Ok(())
}
