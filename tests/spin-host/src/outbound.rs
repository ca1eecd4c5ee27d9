//! `allowed_outbound_hosts`: which addresses a component may connect to.
//!
//! Entries are `scheme://host[:port]` as in Spin: `*` may stand for the
//! scheme, the host or the port, `*.example.com` for any subdomain, a port
//! may be a range (`5432-5433`), and an entry without a port allows only the
//! scheme's default port.

use anyhow::{Context, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Exact(String),
    /// `*.example.com`: the stored suffix is `.example.com`.
    Subdomain(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ports {
    Any,
    Range(u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    raw: String,
    scheme: Pattern,
    host: Pattern,
    ports: Ports,
}

/// One component's allow-list.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    entries: Vec<Allowed>,
}

/// The port a scheme uses when an address or an entry names none.
pub fn default_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "postgres" => 5432,
        "redis" | "rediss" => 6379,
        "mysql" => 3306,
        "http" => 80,
        "https" => 443,
        _ => return None,
    })
}

impl AllowList {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> anyhow::Result<Self> {
        let entries = entries
            .iter()
            .map(|e| parse_entry(e.as_ref()))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { entries })
    }

    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.entries.iter().any(|e| {
            e.scheme.matches(scheme)
                && e.host.matches(&host)
                && match e.ports {
                    Ports::Any => true,
                    Ports::Range(lo, hi) => (lo..=hi).contains(&port),
                }
        })
    }
}

impl Pattern {
    fn parse(text: &str) -> Self {
        match text {
            "*" => Pattern::Any,
            _ => match text.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => Pattern::Subdomain(suffix.to_owned()),
                _ => Pattern::Exact(text.to_ascii_lowercase()),
            },
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(exact) => exact == value,
            Pattern::Subdomain(suffix) => value.ends_with(suffix.as_str()),
        }
    }
}

fn parse_entry(raw: &str) -> anyhow::Result<Allowed> {
    let (scheme, rest) = raw.split_once("://").with_context(|| {
        format!("allowed_outbound_hosts entry {raw:?} has no scheme (e.g. postgres://host:5432)")
    })?;
    let rest = rest.trim_end_matches('/');
    if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
        bail!("allowed_outbound_hosts entry {raw:?} is not scheme://host[:port]");
    }
    let (host, port) = split_host_port(rest);
    let ports = match port {
        None => {
            let port = default_port(scheme).with_context(|| {
                format!(
                    "allowed_outbound_hosts entry {raw:?} needs a port: {scheme} has no default"
                )
            })?;
            Ports::Range(port, port)
        }
        Some("*") => Ports::Any,
        Some(port) => {
            let (lo, hi) = port.split_once('-').unwrap_or((port, port));
            let parse = |p: &str| {
                p.parse::<u16>().with_context(|| {
                    format!("invalid port {p:?} in allowed_outbound_hosts entry {raw:?}")
                })
            };
            Ports::Range(parse(lo)?, parse(hi)?)
        }
    };
    Ok(Allowed {
        raw: raw.to_owned(),
        scheme: Pattern::parse(scheme),
        host: Pattern::parse(host),
        ports,
    })
}

/// Splits `host:port`, keeping bracketed IPv6 literals whole.
fn split_host_port(text: &str) -> (&str, Option<&str>) {
    if let Some(inner) = text.strip_prefix('[') {
        if let Some((host, after)) = inner.split_once(']') {
            return (host, after.strip_prefix(':'));
        }
    }
    match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    }
}

/// The manifest line that would allow an address, for the warning Spin prints.
pub fn suggestion(scheme: &str, host: &str, port: u16) -> String {
    format!("allowed_outbound_hosts = [\"{scheme}://{host}:{port}\"]")
}

impl std::fmt::Display for AllowList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let raws: Vec<&str> = self.entries.iter().map(|e| e.raw.as_str()).collect();
        write!(f, "{raws:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_entries_allow_one_address() {
        let list =
            AllowList::parse(&["postgres://127.0.0.1:5432", "redis://127.0.0.1:6379"]).unwrap();
        assert!(list.allows("postgres", "127.0.0.1", 5432));
        assert!(!list.allows("postgres", "127.0.0.1", 5433));
        assert!(!list.allows("postgres", "localhost", 5432));
        assert!(!list.allows("mysql", "127.0.0.1", 5432));
        assert!(list.allows("redis", "127.0.0.1", 6379));
    }

    #[test]
    fn missing_ports_mean_the_default_port() {
        let list = AllowList::parse(&["postgres://db.internal"]).unwrap();
        assert!(list.allows("postgres", "DB.internal", 5432));
        assert!(!list.allows("postgres", "db.internal", 6432));
    }

    #[test]
    fn wildcards_and_ranges() {
        let list = AllowList::parse(&["*://*.example.com:*", "redis://[::1]:6379-6380"]).unwrap();
        assert!(list.allows("postgres", "db.example.com", 1));
        assert!(!list.allows("postgres", "example.com", 1));
        assert!(list.allows("redis", "::1", 6380));
        assert!(!list.allows("redis", "::1", 6381));
        assert!(!AllowList::default().allows("postgres", "127.0.0.1", 5432));
    }

    #[test]
    fn malformed_entries_are_errors() {
        for bad in [
            "127.0.0.1:5432",
            "postgres://",
            "postgres://h:x",
            "foo://h",
            "postgres://h/db",
        ] {
            assert!(AllowList::parse(&[bad]).is_err(), "{bad}");
        }
    }
}
