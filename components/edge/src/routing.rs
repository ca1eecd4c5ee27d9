//! Matching a request's method and path against a component's endpoints.
//!
//! A component lists its endpoints as `(method, pattern, endpoint)` with
//! `{name}` segments; a path that matches no pattern is 404 and a path that
//! matches only with other methods is 405 with `Allow`. As OpenAPI says, a
//! concrete path wins over a templated one: `/api/jobs/submit` is the submit
//! endpoint's path only (GET there is 405), not also a job id for
//! `/api/jobs/{id}`. Trailing slashes are not redirected: `/api/jobs/` matches
//! nothing.

use orchestrator_core::ApiError;

pub type Routes<E> = [(&'static str, &'static str, E)];

/// The endpoint and the values of its `{name}` segments, in order.
pub fn dispatch<E: Copy>(
    routes: &Routes<E>,
    method: &str,
    path: &str,
) -> Result<(E, Vec<String>), ApiError> {
    let matches: Vec<_> = routes
        .iter()
        .filter_map(|(route_method, pattern, endpoint)| {
            match_pattern(pattern, path).map(|params| (*route_method, *endpoint, params))
        })
        .collect();
    // The most concrete patterns: those that matched with the fewest `{name}` segments.
    let fewest = matches.iter().map(|(.., params)| params.len()).min();
    let mut allow = Vec::new();
    for (route_method, endpoint, params) in matches {
        if Some(params.len()) != fewest {
            continue;
        }
        if route_method == method {
            return Ok((endpoint, params));
        }
        allow.push(route_method);
    }
    if allow.is_empty() {
        Err(ApiError::NotFound(format!("no endpoint at {path}")))
    } else {
        Err(ApiError::MethodNotAllowed { allow })
    }
}

fn match_pattern(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut pattern_segments = pattern.split('/');
    let mut path_segments = path.split('/');
    loop {
        match (pattern_segments.next(), path_segments.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(s)) if p.starts_with('{') && p.ends_with('}') && !s.is_empty() => {
                params.push(s.to_owned());
            }
            (Some(p), Some(s)) if p == s => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &Routes<u8> = &[
        ("GET", "/api/jobs", 0),
        ("GET", "/api/jobs/{id}", 1),
        ("POST", "/api/jobs/{id}/cancel", 2),
        ("POST", "/api/jobs/submit", 3),
    ];

    #[test]
    fn paths_match_endpoints_and_capture_segments() {
        assert_eq!(dispatch(ROUTES, "GET", "/api/jobs").unwrap(), (0, vec![]));
        assert_eq!(
            dispatch(ROUTES, "GET", "/api/jobs/j_1").unwrap(),
            (1, vec!["j_1".to_owned()])
        );
        assert_eq!(
            dispatch(ROUTES, "POST", "/api/jobs/j_1/cancel").unwrap().0,
            2
        );
        assert_eq!(dispatch(ROUTES, "POST", "/api/jobs/submit").unwrap().0, 3);
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        assert_eq!(
            dispatch(ROUTES, "GET", "/api/jobs/").unwrap_err().status(),
            404
        );
        assert_eq!(
            dispatch(ROUTES, "GET", "/api/jobs/j_1/x")
                .unwrap_err()
                .status(),
            404
        );
        let err = dispatch(ROUTES, "DELETE", "/api/jobs/j_1").unwrap_err();
        assert_eq!(err.status(), 405);
        assert_eq!(err.extra_headers()[0].1, "GET");
        // `submit` is also an id-shaped segment, but the concrete path wins: GET is not allowed.
        let err = dispatch(ROUTES, "GET", "/api/jobs/submit").unwrap_err();
        assert_eq!(err.status(), 405);
        assert_eq!(err.extra_headers()[0].1, "POST");
    }
}
