//! Vulcand's `rewrite`: the request's URL, as Vulcand spells it (`scheme://host` + the request target as
//! received), matched against the middleware's regexp; on a match the rewritten URL's path and query go
//! upstream, or, with `Redirect`, the client is sent there with a 302. Run by the chain in `request_filter`;
//! stateless, so nothing of it is kept across reloads but its compiled regexp. With `RewriteBody` the response
//! body is also a template of the request (`template`).

use crate::model::RewriteConfig;

pub struct Rewriter {
    pub config: RewriteConfig,
    /// The replacement has `{{...}}` actions, filled from the request before it is applied.
    templated: bool,
}

impl Rewriter {
    pub fn new(config: RewriteConfig) -> Self {
        let templated = config.replacement.contains("{{");
        Rewriter { config, templated }
    }

    /// The rewritten URL when the regexp matches `url`, every match replaced (`$1`, `${name}` expanded, and
    /// the replacement's template actions filled from `input`).
    pub fn apply(&self, url: &str, input: &super::Input<'_>) -> Option<String> {
        let re = self.config.regexp.as_ref()?;
        if !re.is_match(url) {
            return None;
        }
        if self.templated {
            let replacement = super::template::render_replacement(&self.config.replacement, input);
            return Some(re.replace_all(url, replacement.as_str()).into_owned());
        }
        Some(re.replace_all(url, self.config.replacement.as_str()).into_owned())
    }
}

/// The path and query of a rewritten URL, which is what goes upstream (the server, not the URL, says where):
/// after `scheme://authority` when the URL is absolute, the whole of it otherwise.
pub fn path_and_query(url: &str) -> String {
    let Some(at) = url.find("://") else { return url.to_string() };
    let rest = &url[at + 3..];
    match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('?') => format!("/{}", &rest[i..]),
        Some(i) => rest[i..].to_string(),
        None => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewriter(re: &str, replacement: &str) -> Rewriter {
        Rewriter::new(RewriteConfig {
            regexp: Some(regex::Regex::new(re).unwrap()),
            replacement: replacement.into(),
            rewrite_body: false,
            redirect: false,
        })
    }

    fn with_input<T>(f: impl FnOnce(&super::super::Input<'_>) -> T) -> T {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", "ann".parse().unwrap());
        f(&super::super::Input {
            method: &http::Method::GET,
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            host: None,
            headers: &headers,
            https: false,
            target: "/",
        })
    }

    #[test]
    fn vulcands_example_strips_a_prefix() {
        with_input(|i| {
            let r = rewriter("/foo(.*)", "$1");
            assert_eq!(r.apply("http://a.com/foo/bar?x=1", i).as_deref(), Some("http://a.com/bar?x=1"));
            assert_eq!(r.apply("http://a.com/other", i), None);
            let r = rewriter("^http://a.com/(.*)$", "https://b.com/$1");
            assert_eq!(r.apply("http://a.com/x/y", i).as_deref(), Some("https://b.com/x/y"));
            let r = rewriter("^http://a.com/me(.*)$", r#"http://a.com/users/{{.Request.Header.Get "X-User"}}$1"#);
            assert_eq!(r.apply("http://a.com/me/x", i).as_deref(), Some("http://a.com/users/ann/x"));
        })
    }

    #[test]
    fn the_path_and_query_of_a_url() {
        assert_eq!(path_and_query("http://a.com/bar?x=1"), "/bar?x=1");
        assert_eq!(path_and_query("http://a.com?x=1"), "/?x=1");
        assert_eq!(path_and_query("http://a.com"), "/");
        assert_eq!(path_and_query("/relative"), "/relative");
    }
}
