//! Parser tests: the accepted language, the exact error messages operators will see in logs and
//! `/status`, the canonical form, and that no input can make the parser panic.

use super::*;

fn ok(src: &str) -> RouteExpr {
    parse(src).unwrap_or_else(|e| panic!("{src:?} should parse: {e}"))
}

fn err(src: &str) -> String {
    match parse(src) {
        Err(e) => e.to_string(),
        Ok(expr) => panic!("{src:?} should fail, parsed as {expr}"),
    }
}

#[test]
fn every_matcher_parses() {
    let expr = ok(concat!(
        r#"Host("API.example.com") && PathPrefix("/v1") && Method("GET")"#,
        r#" && Header("X-Canary", "1") && HeaderRegexp(`User-Agent`, `Mobile`)"#,
    ));
    assert_eq!(
        expr.to_string(),
        concat!(
            r#"Host("api.example.com") && PathPrefix("/v1") && Method("GET")"#,
            r#" && HeaderRegexp("user-agent", "Mobile") && Header("x-canary", "1")"#,
        )
    );
    assert_eq!(expr.matcher_count(), 5);
    for src in [
        r#"HostRegexp(".*\.example\.com")"#,
        r#"Path("/stores/<store>/gtins/<int:gtin>")"#,
        r#"PathRegexp("/api/.*")"#,
        r#"MethodRegexp("GET|HEAD")"#,
    ] {
        assert_eq!(ok(src).matcher_count(), 1, "{src}");
    }
}

#[test]
fn whitespace_is_free_and_quotes_are_interchangeable() {
    let a = ok(r#"Host("a.com")&&Path("/x")"#);
    let b = ok(" \t\n Host ( `a.com` ) \n&&\n Path(\"/x\" )  ");
    assert_eq!(a, b);
    assert_eq!(a.to_string(), r#"Host("a.com") && Path("/x")"#);
}

#[test]
fn escapes() {
    let expr = ok(r#"Header("X-A", "say \"hi\" \\ \d")"#);
    assert_eq!(
        expr.to_string(),
        r#"Header("x-a", "say \"hi\" \\ \\d")"#,
        "only \\\" and \\\\ are escapes; other backslashes are kept"
    );
    // Raw strings take backslashes and double quotes literally.
    assert_eq!(ok(r#"PathRegexp(`/a\d+"`)"#), ok(r#"PathRegexp("/a\\d+\"")"#));
}

#[test]
fn canonical_form_is_order_independent() {
    let a = ok(r#"Header("X-B", "2") && Method("GET") && Header("x-a", "1") && Host("A.com")"#);
    let b = ok(r#"Host("a.com") && Header("X-A", "1") && Method("GET") && Header("X-B", "2")"#);
    assert_eq!(a, b);
    assert_eq!(a.to_string(), r#"Host("a.com") && Method("GET") && Header("x-a", "1") && Header("x-b", "2")"#);
    // A repeated identical header matcher adds nothing (and must not count towards rule 4).
    assert_eq!(ok(r#"Header("X-A", "1") && Header("x-a", "1")"#).matcher_count(), 1);
    assert_eq!(ok(r#"Path("/a/<string:b>")"#).to_string(), r#"Path("/a/<b>")"#);
}

#[test]
fn documented_error_messages() {
    assert_eq!(err(r#"Paht("/x")"#), "unknown matcher `Paht` at 0");
    assert_eq!(err(r#"Path("/a", "/b")"#), "Path expects 1 argument, got 2 at 0");
    assert_eq!(err(r#"Header("X-A")"#), "Header expects 2 arguments, got 1 at 0");
    assert_eq!(err("Path()"), "Path expects 1 argument, got 0 at 0");
    assert!(err(r#"PathRegexp("(")"#).starts_with("bad regexp in PathRegexp at 0: "));
    assert_eq!(err(r#"Path("/x"#), "unterminated string at 5");
    assert_eq!(err("Path(`/x"), "unterminated string at 5");
    assert_eq!(err(r#"Path("/x\"#), "unterminated string at 5");
    assert_eq!(err(r#"Path("/ab") Method("GET")"#), "expected `&&` at 12");
    assert_eq!(err(""), "empty route");
    assert_eq!(err(" \n\t "), "empty route");
    assert_eq!(err(r#"Path("<float:x>")"#), "bad Path argument at 5: must start with `/`");
    assert_eq!(err(r#"Path("/<float:x>")"#), "unknown segment type `float` in `<float:x>` at 5");
    assert_eq!(err(r#"Path("/")||Path("/b")"#), "|| is not supported (Vulcand routes only join matchers with &&) at 9");
}

#[test]
fn unsupported_operators_say_so() {
    assert!(err(r#"!Path("/")"#).starts_with("! is not supported"));
    assert!(err(r#"(Path("/"))"#).starts_with("grouping with parentheses is not supported"));
    assert!(err(r#"Host("a") && (Path("/"))"#).starts_with("grouping with parentheses"));
    assert!(err(r#"Host("a") && !Path("/")"#).contains("at 13"));
    assert_eq!(err(r#"Host("a") & Path("/")"#), "expected `&&` at 10");
    assert_eq!(err(r#"Host("a") | Path("/")"#), "unexpected character `|` at 10");
}

#[test]
fn one_matcher_per_kind() {
    assert_eq!(
        err(r#"Path("/a") && PathPrefix("/b")"#),
        "only one path matcher per route, got Path and PathPrefix at 14"
    );
    assert_eq!(
        err(r#"Host("a") && HostRegexp("b")"#),
        "only one host matcher per route, got Host and HostRegexp at 13"
    );
    assert_eq!(
        err(r#"Method("GET") && Method("POST")"#),
        "only one method matcher per route, got Method and Method at 17"
    );
    ok(r#"Header("X-A", "1") && Header("X-A", "2") && HeaderRegexp("X-B", ".")"#);
}

#[test]
fn syntax_errors() {
    assert_eq!(err("Path"), "expected `(` at 4");
    assert_eq!(err("Path(/x)"), "unexpected character `/` at 5");
    assert_eq!(err("Path(x)"), "expected a quoted argument at 5");
    assert_eq!(err(r#"Path("/x",)"#), "expected a quoted argument at 10");
    assert_eq!(err(r#"Path("/x" "/y")"#), "expected `,` or `)` at 10");
    assert_eq!(err(r#"Path("/x") &&"#), "expected a matcher such as `Path(\"/\")` at 13");
    assert_eq!(err(r#"Path("/x") && && Method("GET")"#), err(r#"Path("/x") && && "#));
    assert_eq!(err(r#""/x""#), "expected a matcher such as `Path(\"/\")` at 0");
    assert_eq!(err("é"), "unexpected character `é` at 0");
    assert_eq!(err(r#"Path("/é") é"#), "unexpected character `é` at 12");
    assert_eq!(err("path(`/`)"), "unknown matcher `path` at 0");
}

#[test]
fn argument_validation() {
    assert_eq!(err(r#"Method("GET POST")"#), "bad Method argument at 7: not a valid HTTP method token");
    assert_eq!(err(r#"Header("X A", "1")"#), "bad Header argument at 7: not a valid header name");
    assert_eq!(err("Header(`X-A`, `a\nb`)"), "bad Header argument at 14: not a valid header value");
    assert!(err(r#"PathPrefix("api")"#).contains("must start with `/`"));
    assert!(err(r#"PathPrefix("/a/<b>")"#).contains("literal prefix"));
    assert!(err(r#"PathPrefix("/a?b")"#).contains("must not contain `?`"));
    assert!(err(r#"Path("/a?b")"#).contains("must not contain `?`"));
    assert!(err(r#"Host("a.com:8080")"#).contains("must not include a port"));
    assert!(err(r#"HeaderRegexp("X-A", "(")"#).starts_with("bad regexp in HeaderRegexp at 0"));
    assert!(err(r#"Host("a") && MethodRegexp("[")"#).starts_with("bad regexp in MethodRegexp at 13"));
}

#[test]
fn regexps_must_compile_and_stay_bounded() {
    assert!(err(r#"PathRegexp("a)|(b")"#).starts_with("bad regexp in PathRegexp"));
    let huge = err(r#"PathRegexp("(\w{100}){100}")"#);
    assert!(huge.contains("size limit"), "{huge}");
    assert!(err(&format!("PathRegexp(`{}`)", "(".repeat(1000))).starts_with("bad regexp"));
}

#[test]
fn error_positions() {
    assert_eq!(ParseError::Empty.position(), None);
    assert_eq!(parse(r#"Host("a") && Paht("/")"#).err().and_then(|e| e.position()), Some(13));
}

#[test]
fn display_round_trips() {
    for src in [
        r#"Host("<tenant>.example.com") && Path("/a/<int:id>/<path:rest>")"#,
        r#"HostRegexp(`(?i)api\.(a|b)\.com`) && PathRegexp(`/x/\d+$`) && MethodRegexp(`GET|HEAD`)"#,
        r#"PathPrefix("/odd \"quote\" \\ dir") && HeaderRegexp("X-A", `^v\d`)"#,
        r#"Host("[::1]") && Path("/") && Method("PURGE") && Header("X-A", "é")"#,
        r#"Host("api-<int:n>.example.com") && Path("/v<int:version>/domains/<name>")"#,
        r#"Path("/v1/<hello") && Header("Content-Type", "application/<subtype>") && Header("Accept", "<string>/<string>")"#,
        r#"Header("X-A", "1") && Header("X-A", "<a>") && HeaderRegexp("X-A", "1")"#,
    ] {
        let expr = ok(src);
        let again = ok(&expr.to_string());
        assert_eq!(expr, again, "{src} -> {expr}");
        assert_eq!(expr.to_string(), again.to_string());
    }
}

use crate::test_rng::Rng;

/// Parses `src` and, if it is accepted, checks the canonical form parses back to the same route.
fn parse_without_panic(src: &str) {
    if let Ok(expr) = parse(src) {
        let canonical = expr.to_string();
        match parse(&canonical) {
            Ok(again) => assert_eq!(expr, again, "{src:?} -> {canonical:?}"),
            Err(e) => panic!("{src:?} -> {canonical:?} does not parse: {e}"),
        }
    }
}

#[test]
fn no_input_panics() {
    const FRAGMENTS: &[&str] = &[
        "Host",
        "HostRegexp",
        "Path",
        "PathPrefix",
        "PathRegexp",
        "Method",
        "MethodRegexp",
        "Header",
        "HeaderRegexp",
        "(",
        ")",
        "\"",
        "`",
        "\\",
        ",",
        "&&",
        "&",
        "||",
        "|",
        "!",
        " ",
        "\n",
        "<",
        ">",
        ":",
        "int:",
        "path:",
        "string:",
        "float:",
        "x",
        "/",
        "/a",
        ".",
        "*",
        "[",
        "]",
        "$",
        "^",
        "{",
        "}",
        "(?",
        "+",
        "?",
        "é",
        "日本",
        "\u{0}",
        "\u{FEFF}",
        "GET",
        "X-A",
        "a.com",
        "<n>",
        "<int:n>",
        "<path:p>",
        "\\\"",
        "\\\\",
        "{99999}",
        "\u{10FFFF}",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let len = rng.next() % 24;
        let src: String = (0..len).map(|_| rng.pick(FRAGMENTS)).collect();
        parse_without_panic(&src);
    }

    let valid = [
        r#"Host("a.com") && Path("/stores/<s>/gtins/<int:g>") && Method("GET")"#,
        r#"HostRegexp(`.*\.é\.com`) && PathPrefix("/日本/x") && Header("X-A", "\"1\"")"#,
        r#"PathRegexp("/api/.*") && MethodRegexp(`GET|HEAD`) && HeaderRegexp("X", "é")"#,
        r#"Host("<a>.<int:b>.com") && Path("/<path:p>")"#,
    ];
    for src in valid {
        parse_without_panic(src);
        for (i, _) in src.char_indices() {
            parse_without_panic(&src[..i]);
            parse_without_panic(&src[i..]);
            let mut dropped = src.to_owned();
            dropped.remove(i);
            parse_without_panic(&dropped);
        }
    }
}
