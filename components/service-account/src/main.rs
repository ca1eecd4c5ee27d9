//! `scripts/service-account`: creates a service account (or rotates its secret) and prints its
//! credentials once.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{Context, bail};
use orchestrator_core::auth::Scope;
use orchestrator_core::ids::WorkspaceId;
use service_account::{Account, upsert};

const USAGE: &str = "\
Usage: scripts/service-account --client-id ID [--scopes a,b] [--workspace ID] [--database-url URL]

Creates the service account ID for POST /api/auth/token, or gives an existing one a new secret, these
scopes and this workspace (and enables it). Prints client_id and client_secret; the secret is shown
only this once, since only its Argon2id hash is stored.

  --client-id     the account's id (the `sub` of its tokens)
  --scopes        comma-separated scopes it may request (default: all six); empty for none
  --workspace     confines its tokens to this workspace (without it: operator tokens)
  --database-url  default: $SPIN_VARIABLE_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/orchestrator";

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/orchestrator";

struct Arguments {
    account: Account,
    database_url: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    if arguments.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let parsed = match parse(&arguments) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("service-account: {e:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&parsed).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("service-account: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(arguments: &Arguments) -> anyhow::Result<()> {
    let (db, connection) = tokio_postgres::connect(&arguments.database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to the database (is it migrated? scripts/migrate)")?;
    tokio::spawn(connection);
    let secret = upsert(&db, &arguments.account).await?;
    let account = &arguments.account;
    let scopes: Vec<&str> = account.scopes.iter().map(|s| s.as_str()).collect();
    println!("client_id={}", account.client_id);
    println!("client_secret={secret}");
    println!("scopes={}", scopes.join(" "));
    match &account.workspace_id {
        Some(workspace) => println!("workspace_id={workspace}"),
        None => println!("workspace_id= (operator: every workspace)"),
    }
    eprintln!("service-account: store the secret now; it cannot be shown again");
    Ok(())
}

fn parse(arguments: &[String]) -> anyhow::Result<Arguments> {
    let mut client_id = None;
    let mut scopes: BTreeSet<Scope> = Scope::ALL.into_iter().collect();
    let mut workspace = None;
    let mut database_url = std::env::var("SPIN_VARIABLE_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    let mut rest = arguments.iter();
    while let Some(flag) = rest.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (flag.as_str(), None),
        };
        let value = match inline {
            Some(value) => value,
            None => rest
                .next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))?,
        };
        match name {
            "--client-id" => client_id = Some(value),
            "--scopes" => scopes = parse_scopes(&value)?,
            "--workspace" => {
                workspace = Some(
                    WorkspaceId::parse(&value).map_err(|e| anyhow::anyhow!("--workspace {e}"))?,
                )
            }
            "--database-url" => database_url = value,
            other => bail!("unknown argument {other}"),
        }
    }
    let client_id = client_id.context("--client-id is required")?;
    Ok(Arguments {
        account: Account::new(&client_id, scopes, workspace)?,
        database_url,
    })
}

fn parse_scopes(list: &str) -> anyhow::Result<BTreeSet<Scope>> {
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            name.parse()
                .map_err(|e| anyhow::anyhow!("--scopes: {e}; known: {}", known_scopes()))
        })
        .collect()
}

fn known_scopes() -> String {
    let names: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn flags_take_separate_or_inline_values() {
        let parsed = parse(&args(&[
            "--client-id",
            "ci-bot",
            "--scopes=jobs:read, jobs:write",
            "--workspace",
            "ws_a",
            "--database-url=postgres://db/x?sslmode=disable",
        ]))
        .unwrap();
        assert_eq!(parsed.account.client_id, "ci-bot");
        assert_eq!(
            parsed.account.scopes,
            BTreeSet::from([Scope::JobsRead, Scope::JobsWrite])
        );
        assert_eq!(parsed.account.workspace_id.unwrap().as_str(), "ws_a");
        assert_eq!(parsed.database_url, "postgres://db/x?sslmode=disable");
    }

    #[test]
    fn defaults_and_refusals() {
        let parsed = parse(&args(&["--client-id", "ops"])).unwrap();
        assert_eq!(parsed.account.scopes.len(), 6);
        assert_eq!(parsed.account.workspace_id, None);
        assert!(
            parse(&args(&["--client-id", "ops", "--scopes", ""]))
                .unwrap()
                .account
                .scopes
                .is_empty()
        );
        for bad in [
            &["--scopes", "jobs:read"][..],
            &["--client-id", "bad id"],
            &["--client-id", "ok", "--scopes", "jobs:admin"],
            &["--client-id", "ok", "--workspace", "no/slash"],
            &["--client-id"],
            &["--client-id", "ok", "--verbose", "1"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
