//! Spin's HTTP route syntax: exact routes (`/api/health`), named segments
//! (`/users/:id`) and trailing wildcards (`/api/jobs/...`, which also matches
//! `/api/jobs` itself). When several routes match, the most specific wins:
//! more literal segments, then more segments, then exact over wildcard. An
//! exact route also matches its path with one trailing slash, as in Spin.

use anyhow::bail;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone)]
struct Route {
    /// The route as written in the manifest.
    raw: String,
    segments: Vec<Segment>,
    wildcard: bool,
    component: usize,
}

/// A request path resolved to a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    pub component: usize,
    /// The route as written, e.g. `/api/jobs/...`.
    pub raw_route: &'a str,
    /// The route without its wildcard, e.g. `/api/jobs`.
    pub component_route: String,
    /// The part of the path under the route, e.g. `/j_1/cancel`.
    pub path_info: String,
    /// Values of `:name` segments.
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn add(&mut self, raw: &str, component: usize) -> anyhow::Result<()> {
        if !raw.starts_with('/') {
            bail!("route {raw:?} must start with '/'");
        }
        let (body, wildcard) = match raw.strip_suffix("/...") {
            Some(prefix) => (prefix, true),
            None => (raw, false),
        };
        let segments: Vec<Segment> = body
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix(':') {
                Some(name) => Segment::Param(name.to_owned()),
                None => Segment::Literal(s.to_owned()),
            })
            .collect();
        if self
            .routes
            .iter()
            .any(|r| r.segments == segments && r.wildcard == wildcard)
        {
            bail!("duplicate route {raw:?}");
        }
        self.routes.push(Route {
            raw: raw.to_owned(),
            segments,
            wildcard,
            component,
        });
        Ok(())
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        self.routes
            .iter()
            .filter_map(|route| route.matches(path).map(|m| (route.specificity(), m)))
            .max_by_key(|(specificity, _)| *specificity)
            .map(|(_, m)| m)
    }
}

impl Route {
    fn specificity(&self) -> (usize, usize, bool) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (literals, self.segments.len(), !self.wildcard)
    }

    fn matches(&self, path: &str) -> Option<RouteMatch<'_>> {
        let mut rest = path;
        let mut params = Vec::new();
        let mut component_route = String::new();
        for segment in &self.segments {
            let after_slash = rest.strip_prefix('/')?;
            let end = after_slash.find('/').unwrap_or(after_slash.len());
            let value = &after_slash[..end];
            match segment {
                Segment::Literal(literal) if literal == value => {}
                Segment::Param(name) if !value.is_empty() => {
                    params.push((name.clone(), value.to_owned()));
                }
                _ => return None,
            }
            component_route.push('/');
            component_route.push_str(value);
            rest = &after_slash[end..];
        }
        // As Spin's router (routefinder) does, an exact route also takes its path with one
        // trailing slash (`/api/events/` reaches `/api/events`), with no path info.
        if !self.wildcard {
            match rest {
                "" => {}
                "/" => rest = "",
                _ => return None,
            }
        }
        Some(RouteMatch {
            component: self.component,
            raw_route: &self.raw,
            component_route: if component_route.is_empty() {
                "/".into()
            } else {
                component_route
            },
            path_info: rest.to_owned(),
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[&str]) -> Router {
        let mut router = Router::default();
        for (i, r) in routes.iter().enumerate() {
            router.add(r, i).unwrap();
        }
        router
    }

    #[test]
    fn wildcards_match_their_prefix_and_below() {
        let r = router(&["/api/jobs/..."]);
        let m = r.route("/api/jobs").unwrap();
        assert_eq!(
            (m.component_route.as_str(), m.path_info.as_str()),
            ("/api/jobs", "")
        );
        let m = r.route("/api/jobs/j_1/cancel").unwrap();
        assert_eq!(m.path_info, "/j_1/cancel");
        assert_eq!(m.raw_route, "/api/jobs/...");
        assert_eq!(r.route("/api/jobs/").unwrap().path_info, "/");
        assert!(r.route("/api/jobsx").is_none());
        assert!(r.route("/api").is_none());
    }

    #[test]
    fn exact_routes_match_only_themselves() {
        let r = router(&["/api/health"]);
        assert_eq!(r.route("/api/health").unwrap().path_info, "");
        assert_eq!(r.route("/api/health/").unwrap().path_info, "");
        assert!(r.route("/api/health/x").is_none());
        assert!(r.route("/api/healthz").is_none());
    }

    #[test]
    fn the_most_specific_route_wins() {
        let r = router(&[
            "/...",
            "/api/...",
            "/api/events",
            "/api/jobs/:id",
            "/api/jobs/...",
        ]);
        assert_eq!(r.route("/other").unwrap().component, 0);
        assert_eq!(r.route("/api/x").unwrap().component, 1);
        assert_eq!(r.route("/api/events").unwrap().component, 2);
        assert_eq!(r.route("/api/events/1").unwrap().component, 1);
        let m = r.route("/api/jobs/j_1").unwrap();
        assert_eq!(m.component, 3);
        assert_eq!(m.params, vec![("id".to_owned(), "j_1".to_owned())]);
        assert_eq!(r.route("/api/jobs/j_1/cancel").unwrap().component, 4);
        assert_eq!(r.route("/").unwrap().component, 0);
    }

    #[test]
    fn duplicates_and_relative_routes_are_rejected() {
        let mut r = Router::default();
        r.add("/a/...", 0).unwrap();
        assert!(r.add("/a/...", 1).is_err());
        assert!(r.add("a", 1).is_err());
    }
}
