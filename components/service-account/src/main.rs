//! `scripts/service-account`: creates a service account (or rotates its secret) and prints its
//! credentials once; or disables or deletes one, revoking every token it holds.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{Context, bail};
use orchestrator_core::auth::Scope;
use orchestrator_core::ids::WorkspaceId;
use service_account::{Account, Retirement, Revocations, retire, upsert};

const USAGE: &str = "\
Usage: scripts/service-account --client-id ID [--scopes a,b] [--workspace ID] [--database-url URL]
       scripts/service-account --client-id ID --disable|--delete [--database-url URL] [--redis-url URL]

Creates the service account ID for POST /api/auth/token, or gives an existing one a new secret, these
scopes and this workspace (and enables it). Prints client_id and client_secret; the secret is shown
only this once, since only its Argon2id hash is stored.

With --disable or --delete, retires the account instead: the token endpoint refuses it, and every
token issued to it until now is refused by every endpoint (recorded in Redis, where the app looks for
it under its database URL: give the URL the app is configured with).

  --client-id     the account's id (the `sub` of its tokens)
  --scopes        comma-separated scopes it may request (default: all six); empty for none
  --workspace     confines its tokens to this workspace (without it: operator tokens)
  --disable       disable the account (a later run without it enables it again, with a new secret)
  --delete        delete the account
  --database-url  default: $SPIN_VARIABLE_DATABASE_URL, else the app's default database_url
  --redis-url     default: $SPIN_VARIABLE_REDIS_URL, else redis://127.0.0.1:6379";

/// The defaults of `database_url` and `redis_url` in spin.toml.
const DEFAULT_DATABASE_URL: &str =
    "postgres://postgres@127.0.0.1:5432/orchestrator?sslmode=disable";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

struct Arguments {
    action: Action,
    database_url: String,
    redis_url: String,
}

enum Action {
    Upsert(Account),
    Retire(String, Retirement),
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
    let (mut db, connection) =
        tokio_postgres::connect(&arguments.database_url, tokio_postgres::NoTls)
            .await
            .context("connecting to the database (is it migrated? scripts/migrate)")?;
    tokio::spawn(connection);
    match &arguments.action {
        Action::Upsert(account) => print_credentials(account, &upsert(&db, account).await?),
        Action::Retire(client_id, retirement) => {
            let mut revocations =
                Revocations::connect(&arguments.redis_url, &arguments.database_url).await?;
            if !retire(&mut db, &mut revocations, client_id, *retirement).await? {
                bail!("there is no service account {client_id}");
            }
            let done = match retirement {
                Retirement::Disable => "disabled",
                Retirement::Delete => "deleted",
            };
            println!("{client_id} {done}; the tokens issued to it until now are revoked");
        }
    }
    Ok(())
}

fn print_credentials(account: &Account, secret: &str) {
    let scopes: Vec<&str> = account.scopes.iter().map(|s| s.as_str()).collect();
    println!("client_id={}", account.client_id);
    println!("client_secret={secret}");
    println!("scopes={}", scopes.join(" "));
    match &account.workspace_id {
        Some(workspace) => println!("workspace_id={workspace}"),
        None => println!("workspace_id= (operator: every workspace)"),
    }
    eprintln!("service-account: store the secret now; it cannot be shown again");
}

fn parse(arguments: &[String]) -> anyhow::Result<Arguments> {
    let mut client_id = None;
    let mut scopes: BTreeSet<Scope> = Scope::ALL.into_iter().collect();
    let mut workspace = None;
    let mut retirement = None;
    let mut database_url = variable_or("SPIN_VARIABLE_DATABASE_URL", DEFAULT_DATABASE_URL);
    let mut redis_url = variable_or("SPIN_VARIABLE_REDIS_URL", DEFAULT_REDIS_URL);
    let mut rest = arguments.iter();
    while let Some(flag) = rest.next() {
        let switch = match flag.as_str() {
            "--disable" => Some(Retirement::Disable),
            "--delete" => Some(Retirement::Delete),
            _ => None,
        };
        if let Some(switch) = switch {
            if retirement.replace(switch).is_some() {
                bail!("--disable and --delete exclude each other");
            }
            continue;
        }
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
            "--redis-url" => redis_url = value,
            other => bail!("unknown argument {other}"),
        }
    }
    let client_id = client_id.context("--client-id is required")?;
    let account = Account::new(&client_id, scopes, workspace)?;
    Ok(Arguments {
        action: match retirement {
            Some(retirement) => Action::Retire(account.client_id, retirement),
            None => Action::Upsert(account),
        },
        database_url,
        redis_url,
    })
}

fn variable_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
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

    fn account(list: &[&str]) -> Account {
        match parse(&args(list)).unwrap().action {
            Action::Upsert(account) => account,
            Action::Retire(..) => panic!("{list:?} retires"),
        }
    }

    #[test]
    fn flags_take_separate_or_inline_values() {
        let list = [
            "--client-id",
            "ci-bot",
            "--scopes=jobs:read, jobs:write",
            "--workspace",
            "ws_a",
            "--database-url=postgres://db/x?sslmode=disable",
            "--redis-url",
            "redis://cache:6379",
        ];
        let parsed = parse(&args(&list)).unwrap();
        assert_eq!(parsed.database_url, "postgres://db/x?sslmode=disable");
        assert_eq!(parsed.redis_url, "redis://cache:6379");
        let account = account(&list);
        assert_eq!(account.client_id, "ci-bot");
        assert_eq!(
            account.scopes,
            BTreeSet::from([Scope::JobsRead, Scope::JobsWrite])
        );
        assert_eq!(account.workspace_id.unwrap().as_str(), "ws_a");
    }

    #[test]
    fn defaults_and_refusals() {
        let defaults = account(&["--client-id", "ops"]);
        assert_eq!(defaults.scopes.len(), 6);
        assert_eq!(defaults.workspace_id, None);
        assert!(
            account(&["--client-id", "ops", "--scopes", ""])
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
            &["--client-id", "ok", "--disable", "--delete"],
            &["--client-id", "bad id", "--delete"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn disable_and_delete_are_switches() {
        for (switch, expected) in [
            ("--disable", Retirement::Disable),
            ("--delete", Retirement::Delete),
        ] {
            let parsed = parse(&args(&[switch, "--client-id", "ci-bot"])).unwrap();
            match parsed.action {
                Action::Retire(client_id, retirement) => {
                    assert_eq!((client_id.as_str(), retirement), ("ci-bot", expected));
                }
                Action::Upsert(_) => panic!("{switch} upserts"),
            }
        }
    }
}
