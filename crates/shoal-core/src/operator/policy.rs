//! Which scope each coordinator request needs.

use super::Scope;

/// Paths any client may read without a signature: probes, metrics, the web page and the API
/// document. They carry no secret and change nothing.
const OPEN_PATHS: [&str; 5] = ["/health", "/ready", "/role", "/metrics", "/v1/openapi.json"];

/// The prefix of the web page's static files, open like [`OPEN_PATHS`].
const UI_PREFIX: &str = "/ui";

/// The prefix of onboarding-token requests, which need [`Scope::Admin`].
const TOKENS_PREFIX: &str = "/v1/tokens";

/// The scope a request to the coordinator needs, or `None` for the open paths.
///
/// Reads (`GET`, `HEAD`) need [`Scope::Read`]; changes to onboarding tokens need
/// [`Scope::Admin`]; every other change needs [`Scope::Release`]. A path this table does not
/// know falls under the same rules, so a new route is closed until it is opened here.
pub fn required_scope(method: &str, path: &str) -> Option<Scope> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let read = matches!(method, "GET" | "HEAD");
    if read && (OPEN_PATHS.contains(&path) || is_under(path, UI_PREFIX)) {
        return None;
    }
    if read {
        Some(Scope::Read)
    } else if is_under(path, TOKENS_PREFIX) {
        Some(Scope::Admin)
    } else {
        Some(Scope::Release)
    }
}

fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_needs_its_scope() {
        for (method, path, scope) in [
            ("GET", "/health", None),
            ("GET", "/metrics", None),
            ("GET", "/ui", None),
            ("GET", "/ui/app.js", None),
            ("GET", "/v1/openapi.json", None),
            ("GET", "/uiother", Some(Scope::Read)),
            ("POST", "/health", Some(Scope::Release)),
            ("GET", "/v1/rollouts", Some(Scope::Read)),
            ("GET", "/v1/audit?since=3", Some(Scope::Read)),
            ("GET", "/v1/fleet", Some(Scope::Read)),
            ("POST", "/v1/rollouts", Some(Scope::Release)),
            ("POST", "/v1/rollouts/3/pause", Some(Scope::Release)),
            ("POST", "/v1/publish", Some(Scope::Release)),
            ("POST", "/v1/tokens", Some(Scope::Admin)),
            ("POST", "/v1/tokens/revoke", Some(Scope::Admin)),
            ("POST", "/v1/tokensx", Some(Scope::Release)),
            ("DELETE", "/v1/unknown", Some(Scope::Release)),
        ] {
            assert_eq!(required_scope(method, path), scope, "{method} {path}");
        }
    }
}
