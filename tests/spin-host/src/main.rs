//! `spin-host`: serve a Spin app's HTTP components without a Spin binary.
//!
//! ```text
//! spin-host [--manifest spin.toml] [--listen 127.0.0.1:3000] [--quiet]
//! ```
//! Variables come from `SPIN_VARIABLE_<NAME>`, as with `spin up`.

use anyhow::Context;
use spin_host::{App, AppOptions};
use std::net::SocketAddr;
use tokio::signal::unix::{SignalKind, signal};

struct Args {
    manifest: String,
    listen: SocketAddr,
    log_requests: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        manifest: "spin.toml".into(),
        listen: "127.0.0.1:3000".parse()?,
        log_requests: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--manifest" => args.manifest = it.next().context("--manifest needs a path")?,
            "--listen" => {
                let addr = it.next().context("--listen needs an address")?;
                args.listen = addr
                    .parse()
                    .with_context(|| format!("--listen: {addr:?} is not host:port"))?;
            }
            "--quiet" => args.log_requests = false,
            "-h" | "--help" => {
                println!(
                    "usage: spin-host [--manifest spin.toml] [--listen 127.0.0.1:3000] [--quiet]"
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(args)
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
    let app = App::load(&AppOptions::new(&args.manifest))?;
    let running = app.serve(args.listen, args.log_requests).await?;
    tracing::info!("serving {} on http://{}", args.manifest, running.addr);
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate.recv() => {},
    }
    tracing::info!("stopping");
    drop(running);
    Ok(())
}
