//! The wasmtime engine and the compiled, pre-linked components.

use crate::bindings::SpinImports;
use crate::state::{HostState, Spin};
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::path::Path;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p3::bindings::ServicePre;

/// Sizes the pooling allocator: instance slots are reserved up front, so a
/// request never waits on `mmap`, and memories are reset copy-on-write.
///
/// A request dirties a few hundred KiB of its instance's memory. Resetting
/// them with `madvise` costs a system call when the instance ends and a page
/// fault per page in the next one, so instead the pages a request touched
/// (found with `PAGEMAP_SCAN` where the kernel has it) are restored in place
/// and stay resident.
pub fn engine(max_instances: u32) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(Enabled::Auto);
    pool.total_component_instances(max_instances)
        // A Rust component has a handful of core instances, memories and tables.
        .total_core_instances(max_instances * 8)
        .total_memories(max_instances * 2)
        .total_tables(max_instances * 4)
        .max_memory_size(64 << 20)
        .max_component_instance_size(1 << 20)
        .max_core_instances_per_component(32)
        .max_memories_per_component(4)
        .max_tables_per_component(16);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .wasm_component_model_async(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true);
    Ok(Engine::new(&config)?)
}

/// Bytes of each memory and table reset in place rather than given back.
const KEEP_RESIDENT: usize = 1 << 20;

/// Everything a component may import: WASI 0.2 (what Rust's std pulls in),
/// WASI 0.3 with `wasi:http`, and the Spin interfaces.
pub fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    SpinImports::add_to_linker::<HostState, Spin>(&mut linker, |state| state)?;
    Ok(linker)
}

/// Compiles a component, or loads its machine code from a previous run: the
/// cache file is named by a hash of the Wasm bytes and of the engine's
/// settings, so a stale entry is never used.
pub fn load_component(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    let wasm = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the component {} (has it been built?)",
            path.display()
        )
    })?;
    let mut hasher = Sha256::new();
    hasher.update(&wasm);
    std::hash::Hash::hash(
        &engine.precompile_compatibility_hash(),
        &mut HashWriter(&mut hasher),
    );
    let key: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cache_dir = path
        .parent()
        .unwrap_or(Path::new("."))
        .join(".spin-host-cache");
    let cached = cache_dir.join(format!("{key}.cwasm"));
    if cached.exists() {
        // SAFETY: the file was written by `precompile_component` below with
        // an engine of the same settings (both are part of its name).
        if let Ok(component) = unsafe { Component::deserialize_file(engine, &cached) } {
            return Ok(component);
        }
    }
    let compiled = engine
        .precompile_component(&wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{} is not a valid component", path.display()))?;
    // The cache is an optimisation: failing to write it is not an error.
    if std::fs::create_dir_all(&cache_dir).is_ok() {
        let partial = cached.with_extension("partial");
        if std::fs::write(&partial, &compiled).is_ok() {
            let _ = std::fs::rename(&partial, &cached);
        }
    }
    // SAFETY: `compiled` was just produced by this engine.
    Ok(unsafe { Component::deserialize(engine, &compiled) }?)
}

/// Pre-links a component so each request only instantiates it.
pub fn prepare(
    linker: &Linker<HostState>,
    component: &Component,
) -> anyhow::Result<ServicePre<HostState>> {
    let pre = linker.instantiate_pre(component)?;
    ServicePre::new(pre)
        .map_err(anyhow::Error::from)
        .context("the component does not export wasi:http/handler@0.3.0")
}

/// Feeds `Hash` output into a SHA-256.
struct HashWriter<'a>(&'a mut Sha256);

impl std::hash::Hasher for HashWriter<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
