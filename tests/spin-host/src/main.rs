//! `spin-host`: serve a Spin app's HTTP components without a Spin binary.
//!
//! ```text
//! spin-host [--manifest spin.toml] [--listen 127.0.0.1:3000] [--quiet]
//!           [--max-instance-reuse-count N|A..B] [--max-instance-concurrent-reuse-count N|A..B]
//!           [--idle-instance-timeout 1s] [--request-timeout 30s]
//!           [--max-instances N] [--postgres-pool-size N]
//!           [--measure-instantiation ITERATIONS]
//! ```
//! Variables come from `SPIN_VARIABLE_<NAME>`, and the reuse flags mean what
//! they mean to `spin up` (defaults 128, 16, 1s, none).
//! `--measure-instantiation` serves nothing: it prints each component's mean
//! instantiation time, as every request pays it, and exits.

use anyhow::Context;
use spin_host::{App, AppOptions, reuse};
use std::net::SocketAddr;
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: spin-host [--manifest spin.toml] [--listen 127.0.0.1:3000] [--quiet] \
                     [--max-instance-reuse-count N|A..B] [--max-instance-concurrent-reuse-count N|A..B] \
                     [--idle-instance-timeout 1s] [--request-timeout 30s] \
                     [--max-instances N] [--postgres-pool-size N] [--measure-instantiation ITERATIONS]";

struct Args {
    options: AppOptions,
    listen: SocketAddr,
    log_requests: bool,
    measure_instantiation: Option<u32>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        options: AppOptions::new("spin.toml"),
        listen: "127.0.0.1:3000".parse()?,
        log_requests: true,
        measure_instantiation: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--manifest" => args.options.manifest = value()?.into(),
            "--listen" => {
                let addr = value()?;
                args.listen = addr
                    .parse()
                    .with_context(|| format!("--listen: {addr:?} is not host:port"))?;
            }
            "--quiet" => args.log_requests = false,
            "--max-instance-reuse-count" => {
                args.options.reuse.max_requests = reuse::parse_count(&value()?)?
            }
            "--max-instance-concurrent-reuse-count" => {
                args.options.reuse.max_concurrent = reuse::parse_count(&value()?)?
            }
            "--idle-instance-timeout" => {
                args.options.reuse.idle_timeout = reuse::parse_duration(&value()?)?
            }
            "--request-timeout" => {
                args.options.reuse.request_timeout = Some(reuse::parse_duration(&value()?)?)
            }
            "--max-instances" => args.options.max_instances = number(&value()?)?,
            "--postgres-pool-size" => args.options.postgres_pool_size = number(&value()?)?,
            "--measure-instantiation" => args.measure_instantiation = Some(number(&value()?)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(args)
}

fn number<T: std::str::FromStr + PartialOrd + Default>(raw: &str) -> anyhow::Result<T> {
    raw.parse()
        .ok()
        .filter(|n| *n > T::default())
        .with_context(|| format!("{raw:?} is not a positive number"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "spin_host=info".into()),
        )
        .with_target(false)
        .init();
    let args = parse_args()?;
    let app = App::load(&args.options)?;
    if let Some(iterations) = args.measure_instantiation {
        for (component, mean) in app.measure_instantiation(iterations).await? {
            println!("{component}\t{:.1}", mean.as_secs_f64() * 1e6);
        }
        return Ok(());
    }
    let running = app.serve(args.listen, args.log_requests).await?;
    tracing::info!(
        "serving {} on http://{}",
        args.options.manifest.display(),
        running.addr
    );
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate.recv() => {},
    }
    tracing::info!("stopping");
    drop(running);
    Ok(())
}
