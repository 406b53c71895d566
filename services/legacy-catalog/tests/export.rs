//! The bulk export over a real socket: the EXPORT.md format with every product's clean row, dirty rows of
//! each kind and a correct trailer; and streaming at a size whose body would not fit the memory bound.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{client, get, within, Server};
use http::StatusCode;
use http_body_util::BodyExt;
use legacy_catalog::gs1::Code;
use legacy_catalog::Catalog;

/// The clean row of every product, formatted here independently of the crate's own writer.
fn clean_rows(seed: u64, products: u64) -> anyhow::Result<Vec<String>> {
    let catalog = Catalog::new(seed, products)?;
    Ok((0..products)
        .filter_map(|i| catalog.product(i))
        .map(|p| {
            format!(
                "{}|{}|{}|{}|{}|{:09}|{}",
                p.item_no,
                p.code,
                p.desc,
                p.brand,
                p.dept.code,
                p.price.0,
                p.updated.yyyymmdd()
            )
        })
        .collect())
}

#[tokio::test]
async fn export_of_1000_products_follows_the_contract() -> anyhow::Result<()> {
    let server = Server::start(&["--products", "1000", "--seed", "1", "--dirty-rate", "0.2"])?;
    within(Duration::from_secs(60), async {
        let reply = get(&server.url("/export")).await?;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["server"], "legacy-catalog/2009");
        assert_eq!(reply.headers["transfer-encoding"], "chunked");
        assert!(reply.content_type().starts_with("text/plain"));

        let lines: Vec<&str> = reply.body.lines().collect();
        assert!(reply.body.ends_with('\n'));
        assert_eq!(lines[0], "#LEGACY-CATALOG-EXPORT v1 seed=1 products=1000");
        assert_eq!(lines[1], "ITEM_NO|UPC_EAN|ITEM_DESC|BRAND_NM|DEPT_CD|RETAIL_PRC|UPD_DT");
        let data = &lines[2..lines.len() - 1];
        assert_eq!(lines[lines.len() - 1], format!("#END rows={}", data.len()));

        let clean = clean_rows(1, 1000)?;
        let present: HashSet<&str> = data.iter().copied().collect();
        for row in &clean {
            assert!(present.contains(row.as_str()), "missing clean row {row}");
        }
        assert_eq!(data[0], clean[0]);
        assert_eq!(data[0], "100000001|123456789012|Demo Product 123456789012|ACME|GROC|000000199|20240131");

        // Classify every extra row against its product's clean row.
        let by_item: HashMap<&str, Vec<&str>> = clean.iter().map(|row| (&row[..9], row.split('|').collect())).collect();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let mut seen_clean = HashSet::new();
        for row in data {
            let fields: Vec<&str> = row.split('|').collect();
            assert_eq!(fields.len(), 7, "{row}");
            let want = &by_item[fields[0]];
            let kind = if fields == *want {
                if seen_clean.insert(fields[0]) {
                    continue;
                }
                "duplicate"
            } else if fields[1].is_empty() {
                "empty code"
            } else if fields[1] != fields[1].trim() {
                "stray spaces"
            } else if Code::parse_any(fields[1]).is_none() {
                "wrong check digit"
            } else if fields[2].is_empty() {
                "empty description"
            } else if fields[2] != fields[2].trim() && fields[3] != fields[3].trim() {
                "padded text"
            } else if fields[5] == "N/A" {
                "N/A price"
            } else if fields[..6] == want[..6] && fields[6] > want[6] {
                "newer duplicate"
            } else {
                panic!("unexpected row {row}");
            };
            *counts.entry(kind).or_default() += 1;
        }
        for kind in [
            "duplicate",
            "newer duplicate",
            "empty code",
            "stray spaces",
            "wrong check digit",
            "empty description",
            "padded text",
            "N/A price",
        ] {
            assert!(counts.get(kind).copied().unwrap_or(0) > 0, "no {kind} rows: {counts:?}");
        }
        let extra: usize = counts.values().sum();
        assert_eq!(data.len(), 1000 + extra);
        assert!((120..280).contains(&extra), "{extra} dirty rows at rate 0.2");
        Ok(())
    })
    .await
}

/// Streams the whole export while watching the child's RSS. 2,000,000 products is about 120 MB of text, so
/// a server that buffered the body could not stay under the bound.
#[tokio::test]
async fn export_streams_in_bounded_memory() -> anyhow::Result<()> {
    const PRODUCTS: u64 = 2_000_000;
    const RSS_LIMIT: u64 = 64 * 1024 * 1024;
    let server = Server::start(&["--products", &PRODUCTS.to_string()])?;
    within(Duration::from_secs(240), async {
        let started = Instant::now();
        let response = client().get(server.url("/export").parse()?).await?;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let (mut bytes, mut newlines, mut max_rss) = (0u64, 0u64, server.rss_bytes()?);
        let mut tail = Vec::new();
        let mut last_sample = Instant::now();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            bytes += data.len() as u64;
            newlines += data.iter().filter(|b| **b == b'\n').count() as u64;
            tail = data.to_vec();
            if last_sample.elapsed() > Duration::from_millis(20) {
                max_rss = max_rss.max(server.rss_bytes()?);
                last_sample = Instant::now();
            }
        }
        max_rss = max_rss.max(server.rss_bytes()?);
        let elapsed = started.elapsed();
        eprintln!(
            "export of {PRODUCTS} products: {bytes} bytes, {newlines} lines in {elapsed:?}, max RSS {} KiB",
            max_rss / 1024
        );
        let tail = String::from_utf8(tail)?;
        let rows = newlines - 3;
        assert!(tail.ends_with(&format!("#END rows={rows}\n")), "tail {tail:?}");
        assert!(rows >= PRODUCTS);
        assert!(bytes > 4 * RSS_LIMIT / 2, "the body ({bytes} bytes) should dwarf the bound");
        assert!(max_rss < RSS_LIMIT, "RSS reached {max_rss} bytes");
        Ok(())
    })
    .await
}
