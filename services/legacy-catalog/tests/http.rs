//! The monolith's endpoints over real sockets: the 12-digit-only GTIN lookup and its bare 404, the HTML
//! pages, the `Server` header, HEAD, and HTTP/2 without TLS (h2c).

mod common;

use std::time::Duration;

use common::{get, get_with, h2c_client, within, Server};
use http::StatusCode;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn twelve_digit_lookup_returns_the_exact_legacy_json() -> anyhow::Result<()> {
    let server = Server::start(&["--products", "1000", "--seed", "1"])?;
    within(LIMIT, async {
        let reply = get(&server.url("/stores/1/gtins/123456789012")).await?;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content_type(), "application/json");
        assert_eq!(reply.headers["server"], "legacy-catalog/2009");
        assert_eq!(
            reply.body,
            r#"{"store":"1","upc":"123456789012","item_no":"100000001","desc":"Demo Product 123456789012","brand":"ACME","dept":"GROC","price":"1.99"}"#
        );
        let reply = get(&server.url("/stores/42/gtins/036000291452")).await?;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body.starts_with(r#"{"store":"42","upc":"036000291452","item_no":"100000002","#));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn thirteen_digits_and_other_forms_get_a_bare_404() -> anyhow::Result<()> {
    let server = Server::start(&["--products", "1000"])?;
    within(LIMIT, async {
        for gtin in ["0123456789012", "00123456789012", "7501031311309", "9780471117094", "123456789013", "12345678901"]
        {
            let reply = get(&server.url(&format!("/stores/1/gtins/{gtin}"))).await?;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{gtin}");
            assert_eq!(reply.body, r#"{"error":"not found"}"#, "{gtin}");
            assert_eq!(reply.headers["server"], "legacy-catalog/2009");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn html_pages_are_served_as_html() -> anyhow::Result<()> {
    let server = Server::start(&["--products", "1000"])?;
    within(LIMIT, async {
        for (path, needle) in [
            ("/", "href=\"/catalog\""),
            ("/catalog", "Page 1 of 20"),
            ("/catalog?page=2", "/products/100000051"),
            ("/products/100000001", "Demo Product 123456789012"),
            ("/products/100000004", "9780471117094"),
        ] {
            let reply = get(&server.url(path)).await?;
            assert_eq!(reply.status, StatusCode::OK, "{path}");
            assert_eq!(reply.content_type(), "text/html; charset=utf-8", "{path}");
            assert_eq!(reply.headers["server"], "legacy-catalog/2009");
            assert!(reply.body.contains(needle), "{path} lacks {needle}");
        }
        let catalog = get(&server.url("/catalog")).await?;
        assert_eq!(catalog.body.matches("<a href=\"/products/").count(), 50);

        for path in ["/products/100001001", "/products/abc", "/no/such/page"] {
            let reply = get(&server.url(path)).await?;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(reply.content_type(), "text/html; charset=utf-8", "{path}");
            assert!(reply.body.contains("Page not found"));
        }
        let health = get(&server.url("/health")).await?;
        assert_eq!((health.status, health.body.as_str()), (StatusCode::OK, "ok\n"));
        assert_eq!(health.headers["server"], "legacy-catalog/2009");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn h2c_and_head_work() -> anyhow::Result<()> {
    let server = Server::start(&["--products", "1000"])?;
    within(LIMIT, async {
        let h2 = h2c_client();
        let reply = get_with(&h2, &server.url("/stores/1/gtins/123456789012")).await?;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body.contains("\"item_no\":\"100000001\""));
        assert_eq!(reply.headers["server"], "legacy-catalog/2009");
        let export = get_with(&h2, &server.url("/export")).await?;
        let rows = export.body.lines().count() - 3;
        assert!(export.body.ends_with(&format!("\n#END rows={rows}\n")));

        for client in [common::client(), h2c_client()] {
            let request = http::Request::head(server.url("/catalog")).body(http_body_util::Empty::new())?;
            let response = client.request(request).await?;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["server"], "legacy-catalog/2009");
            assert!(response.headers().contains_key("content-length"));
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn latency_slows_pages_but_not_health() -> anyhow::Result<()> {
    // A latency far longer than any bound below, so "slowed" and "not slowed" cannot be confused on a busy
    // machine: health answers well within it, a page is still waiting after a second.
    let server = Server::start(&["--products", "100", "--latency-ms", "60000"])?;
    within(LIMIT, async {
        let health = tokio::time::timeout(Duration::from_secs(30), get(&server.url("/health"))).await;
        assert_eq!(health.map_err(|_| anyhow::anyhow!("/health was delayed"))??.status, StatusCode::OK);
        let page = tokio::time::timeout(Duration::from_secs(1), get(&server.url("/stores/1/gtins/123456789012"))).await;
        assert!(page.is_err(), "a page was answered before its latency");
        Ok(())
    })
    .await
}

#[test]
fn bad_arguments_are_refused_at_start() -> anyhow::Result<()> {
    for args in [&["--dirty-rate", "1.5"][..], &["--products", "1000000000"][..], &["--listen", "not-an-address"][..]] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_legacy-catalog"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = child.kill();
        let _ = child.wait();
        match status {
            Some(status) => assert!(!status.success(), "{args:?} was accepted"),
            None => panic!("{args:?} was accepted: the server kept running"),
        }
    }
    Ok(())
}
