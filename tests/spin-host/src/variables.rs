//! Application variables, resolved the way `spin up` resolves them: a value
//! from `SPIN_VARIABLE_<NAME>` wins over the manifest default, and a required
//! variable without a value is an error at start-up.

use crate::manifest::Variable;
use anyhow::{Context, bail};
use std::collections::{BTreeMap, HashMap};

/// Spin's rule for variable names: lowercase ASCII letters, digits and `_`,
/// starting with a letter.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The environment variable that overrides an application variable.
pub fn env_name(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

/// Resolved application variables.
#[derive(Debug, Clone)]
pub struct Variables {
    values: HashMap<String, String>,
}

impl Variables {
    /// Resolves every declared variable. `lookup` supplies provider values
    /// (the process environment for `spin up`; tests add their overrides).
    pub fn resolve(
        declared: &BTreeMap<String, Variable>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let mut values = HashMap::new();
        let mut missing = Vec::new();
        for (name, variable) in declared {
            match lookup(name).or_else(|| variable.default.clone()) {
                Some(value) => {
                    values.insert(name.clone(), value);
                }
                None if variable.required => missing.push(format!("{name} ({})", env_name(name))),
                None => {}
            }
        }
        if !missing.is_empty() {
            bail!(
                "required variables have no value: {}; set them in the environment",
                missing.join(", ")
            );
        }
        Ok(Self { values })
    }

    /// Expands `{{ name }}` references to application variables.
    pub fn render(&self, template: &str) -> anyhow::Result<String> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .with_context(|| format!("unclosed '{{{{' in {template:?}"))?;
            let name = after[..end].trim();
            let value = self.values.get(name).with_context(|| {
                format!("{template:?} refers to the undefined variable {name:?}")
            })?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `spin:variables`: a component sees only the variables its manifest entry
/// maps, already expanded at start-up.
impl crate::bindings::spin::variables::variables::HostWithStore<crate::state::HostState>
    for crate::state::Spin
{
    async fn get(
        accessor: &wasmtime::component::Accessor<crate::state::HostState, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, VariableError>> {
        Ok(accessor.with(|mut access| {
            if !is_valid_name(&name) {
                return Err(VariableError::InvalidName(name));
            }
            match access.get().component.variables.get(&name) {
                Some(value) => Ok(value.clone()),
                None => Err(VariableError::Undefined(name)),
            }
        }))
    }
}

impl crate::bindings::spin::variables::variables::Host for crate::state::HostState {}

use crate::bindings::spin::variables::variables::Error as VariableError;

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> BTreeMap<String, Variable> {
        BTreeMap::from([
            (
                "db_host".into(),
                Variable {
                    default: Some("127.0.0.1:5432".into()),
                    ..Default::default()
                },
            ),
            (
                "secret".into(),
                Variable {
                    required: true,
                    ..Default::default()
                },
            ),
        ])
    }

    #[test]
    fn provider_values_win_over_defaults() {
        let vars = Variables::resolve(&declared(), |name| match name {
            "db_host" => Some("10.0.0.1:5433".into()),
            "secret" => Some("s".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            vars.render("postgres://{{ db_host }}").unwrap(),
            "postgres://10.0.0.1:5433"
        );
        assert_eq!(vars.render("{{secret}}-{{ secret }}").unwrap(), "s-s");
    }

    #[test]
    fn a_missing_required_variable_is_named() {
        let err = Variables::resolve(&declared(), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("secret (SPIN_VARIABLE_SECRET)"), "{err}");
    }

    #[test]
    fn templates_must_name_known_variables() {
        let vars = Variables::resolve(&declared(), |_| Some("x".into())).unwrap();
        assert!(vars.render("{{ nope }}").is_err());
        assert!(vars.render("{{ db_host").is_err());
        assert_eq!(vars.render("plain").unwrap(), "plain");
    }

    #[test]
    fn names_follow_spin_rules() {
        assert!(is_valid_name("database_url"));
        assert!(is_valid_name("a1"));
        assert!(!is_valid_name("Database"));
        assert!(!is_valid_name("1a"));
        assert!(!is_valid_name("a-b"));
        assert!(!is_valid_name(""));
    }
}
