//! Vulcand's `rewrite`: the request's URL, as Vulcand spells it (`scheme://host` + the request target as
//! received), matched against the middleware's regexp; on a match the rewritten URL's path and query go
//! upstream, or, with `Redirect`, the client is sent there with a 302. Run by the chain in `request_filter`;
//! stateless, so nothing of it is kept across reloads but its compiled regexp. With `RewriteBody` the response
//! body is also a template of the request (`template`).

use crate::model::RewriteConfig;

pub struct Rewriter {
    pub config: RewriteConfig,
}

impl Rewriter {
    /// The rewritten URL when the regexp matches `url`, every match replaced (`$1`, `${name}` expanded).
    pub fn apply(&self, url: &str) -> Option<String> {
        let re = self.config.regexp.as_ref()?;
        re.is_match(url).then(|| re.replace_all(url, self.config.replacement.as_str()).into_owned())
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
        Rewriter {
            config: RewriteConfig {
                regexp: Some(regex::Regex::new(re).unwrap()),
                replacement: replacement.into(),
                rewrite_body: false,
                redirect: false,
            },
        }
    }

    #[test]
    fn vulcands_example_strips_a_prefix() {
        let r = rewriter("/foo(.*)", "$1");
        assert_eq!(r.apply("http://a.com/foo/bar?x=1").as_deref(), Some("http://a.com/bar?x=1"));
        assert_eq!(r.apply("http://a.com/other"), None);
        let r = rewriter("^http://a.com/(.*)$", "https://b.com/$1");
        assert_eq!(r.apply("http://a.com/x/y").as_deref(), Some("https://b.com/x/y"));
    }

    #[test]
    fn the_path_and_query_of_a_url() {
        assert_eq!(path_and_query("http://a.com/bar?x=1"), "/bar?x=1");
        assert_eq!(path_and_query("http://a.com?x=1"), "/?x=1");
        assert_eq!(path_and_query("http://a.com"), "/");
        assert_eq!(path_and_query("/relative"), "/relative");
    }
}
