//! The service over real sockets, as a real child process: the GTIN table of the brief through HTTP (single,
//! batch, legacy shape, HTTP/1.1 and h2c), readiness before the first snapshot, reload and rollback, and a clean
//! exit on SIGTERM.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::{get, h2c_client, post, publish, Service};
use gtin::clock::Date;
use gtin::gtin::Gtin;
use gtin::record::Product;

fn product(code: &str, sku: &'static str, price_cents: u64) -> Product<'static> {
    Product {
        gtin: Gtin::parse(code).expect("test codes are valid"),
        sku,
        description: "Demo Product",
        brand: "ACME",
        department: "GROC",
        price_cents,
        updated: Date::from_u32(20240131).expect("real day"),
    }
}

fn catalogue() -> Vec<Product<'static>> {
    vec![
        product("036000291452", "100000001", 199),
        product("7501031311309", "100000002", 250),
        product("98412345678908", "100000003", 12_000),
        product("73513537", "100000004", 99),
        product("9780471117094", "100000005", 4_599),
        product("042100005264", "100000006", 5),
    ]
}

#[test]
fn gtin_table_through_http() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    publish(&data, &catalogue()).unwrap();
    let service = Service::start(&data, dir.path()).unwrap();
    common::run(Duration::from_secs(60), async {
        let c = common::client();
        let (status, body) = get(&c, &service.url("/v1/gtins/036000291452")).await?;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({"gtin":"00036000291452","input":"036000291452","sku":"100000001","description":"Demo Product",
                   "brand":"ACME","department":"GROC","price":{"amount_cents":199,"currency":"USD"},"updated":"2024-01-31"})
        );
        // Every form of the same code is the same product.
        for form in ["0036000291452", "00036000291452", "0-36000-29145-2", "036000%20291452"] {
            let (status, body) = get(&c, &service.url(&format!("/v1/gtins/{form}"))).await?;
            assert_eq!((status, body["sku"].as_str()), (200, Some("100000001")), "{form}: {body}");
        }
        for (code, sku) in [
            ("73513537", "100000004"),
            ("7501031311309", "100000002"),
            ("98412345678908", "100000003"),
            ("9780471117094", "100000005"),
        ] {
            let (status, body) = get(&c, &service.url(&format!("/v1/gtins/{code}"))).await?;
            assert_eq!((status, body["sku"].as_str()), (200, Some(sku)), "{code}: {body}");
        }
        let bad = [
            ("7501031311308", 400, "invalid_gtin", "check digit should be 9, got 8"),
            ("036000291458", 400, "invalid_gtin", "check digit should be 2, got 8"),
            ("75010313113", 400, "invalid_gtin", "GTIN must have 8, 12, 13 or 14 digits, got 11"),
            ("750103AAAA309", 400, "invalid_gtin", "unexpected character 'A' at 6"),
            ("212345678909", 422, "restricted_gtin", ""),
            ("2001234567893", 422, "restricted_gtin", ""),
            ("512345678900", 422, "coupon_gtin", ""),
            ("4006381333931", 404, "not_found", "no product with GTIN 04006381333931"),
        ];
        for (code, status_want, error, message) in bad {
            let (status, body) = get(&c, &service.url(&format!("/v1/gtins/{code}"))).await?;
            assert_eq!(status, status_want, "{code}: {body}");
            assert_eq!(body["error"], error, "{code}: {body}");
            assert_eq!(body["input"], code, "{code}: {body}");
            if !message.is_empty() {
                assert_eq!(body["message"], message, "{code}: {body}");
            }
        }
        // UPC-E only when asked for.
        let (status, body) = get(&c, &service.url("/v1/gtins/04252614?format=upc-e")).await?;
        assert_eq!((status, body["gtin"].as_str()), (200, Some("00042100005264")), "{body}");
        let (status, _) = get(&c, &service.url("/v1/gtins/04252614")).await?;
        assert_eq!(status, 400);
        let (status, body) = get(&c, &service.url("/v1/gtins/04252614?format=ean-99")).await?;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_format")));

        // The legacy shape, for every GTIN form.
        let (status, body) = get(&c, &service.url("/stores/1/gtins/0036000291452")).await?;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"store":"1","upc":"036000291452","item_no":"100000001","desc":"Demo Product","brand":"ACME",
                   "dept":"GROC","price":"1.99"})
        );
        let (status, body) = get(&c, &service.url("/stores/7/gtins/7501031311309")).await?;
        assert_eq!((status, body["upc"].as_str(), body["price"].as_str()), (200, Some("7501031311309"), Some("2.50")));
        let (status, _) = get(&c, &service.url("/stores/1/gtins/4006381333931")).await?;
        assert_eq!(status, 404);
        let (status, _) = get(&c, &service.url("/stores/a%20b/gtins/7501031311309")).await?;
        assert_eq!(status, 400);

        // Batch: per-code results in order.
        let batch = json!({"gtins": ["7501031311309", "7501031311308", "4006381333931", "512345678900"]});
        let (status, body) = post(&c, &service.url("/v1/gtins:batch"), &batch.to_string()).await?;
        assert_eq!(status, 200, "{body}");
        let results = body["results"].as_array().cloned().unwrap_or_default();
        let statuses: Vec<i64> = results.iter().map(|r| r["status"].as_i64().unwrap_or(0)).collect();
        assert_eq!(statuses, vec![200, 400, 404, 422]);
        assert_eq!(results[0]["product"]["sku"], "100000002");
        assert_eq!(results[1]["message"], "check digit should be 9, got 8");
        assert_eq!(results[1]["input"], "7501031311308");
        let too_many = json!({ "gtins": vec!["7501031311309"; 1001] });
        let (status, body) = post(&c, &service.url("/v1/gtins:batch"), &too_many.to_string()).await?;
        assert_eq!((status, body["error"].as_str()), (413, Some("too_many_gtins")));
        let huge = format!("{{\"gtins\":[\"{}\"]}}", "1".repeat(300_000));
        let (status, body) = post(&c, &service.url("/v1/gtins:batch"), &huge).await?;
        assert_eq!((status, body["error"].as_str()), (413, Some("body_too_large")));
        let (status, body) = post(&c, &service.url("/v1/gtins:batch"), "{\"gtins\": 5}").await?;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_json")));

        // Health, metrics, routing errors.
        assert_eq!(get(&c, &service.url("/health/live")).await?.0, 200);
        let (status, body) = get(&c, &service.url("/health/ready")).await?;
        assert_eq!((status, body["products"].as_u64()), (200, Some(6)));
        let (status, _) = post(&c, &service.url("/v1/gtins/7501031311309"), "").await?;
        assert_eq!(status, 405);
        assert_eq!(get(&c, &service.url("/nope")).await?.0, 404);
        let (status, Value::String(text)) = get(&c, &service.url("/metrics")).await? else {
            panic!("metrics is not text")
        };
        assert_eq!(status, 200);
        assert!(text.contains("gtin_http_requests_total{route=\"gtin\",code=\"200\"}"), "{text}");
        assert!(text.contains("gtin_snapshot_products 6"), "{text}");
        assert!(text.contains("gtin_lookup_duration_seconds_bucket"), "{text}");

        // The same port speaks h2c (HTTP/2 with prior knowledge).
        let (status, body) = get(&h2c_client(), &service.url("/v1/gtins/73513537")).await?;
        assert_eq!((status, body["sku"].as_str()), (200, Some("100000004")));
        Ok(())
    });
}

#[test]
fn not_ready_until_a_snapshot_then_reload_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut service = Service::start(&data, dir.path()).unwrap();
    common::run(Duration::from_secs(60), async {
        let c = common::client();
        assert_eq!(get(&c, &service.url("/health/live")).await?.0, 200);
        let (status, body) = get(&c, &service.url("/health/ready")).await?;
        assert_eq!((status, body["status"].as_str()), (503, Some("not_ready")));
        let (status, body) = get(&c, &service.url("/v1/gtins/7501031311309")).await?;
        assert_eq!((status, body["error"].as_str()), (503, Some("not_ready")));

        // Only a corrupt file: the reload fails, nothing changes.
        std::fs::write(data.join("snapshot-20000101T000000-0001.gtin"), b"not a snapshot")?;
        let (status, body) = post(&c, &service.url("/admin/reload"), "").await?;
        assert_eq!((status, body["error"].as_str()), (500, Some("reload_failed")), "{body}");
        assert_eq!(get(&c, &service.url("/health/ready")).await?.0, 503);

        publish(&data, &[product("7501031311309", "1", 100)])?;
        let (status, body) = post(&c, &service.url("/admin/reload"), "").await?;
        assert_eq!((status, body["status"].as_str(), body["products"].as_u64()), (200, Some("swapped"), Some(1)));
        assert_eq!(get(&c, &service.url("/health/ready")).await?.0, 200);
        let (_, body) = get(&c, &service.url("/v1/gtins/7501031311309")).await?;
        assert_eq!(body["price"]["amount_cents"], 100);
        let (status, body) = post(&c, &service.url("/admin/rollback"), "").await?;
        assert_eq!((status, body["error"].as_str()), (409, Some("no_previous_snapshot")));

        publish(&data, &[product("7501031311309", "1", 200), product("73513537", "2", 5)])?;
        let (_, body) = post(&c, &service.url("/admin/reload"), "").await?;
        assert_eq!((body["status"].as_str(), body["generation"].as_u64()), (Some("swapped"), Some(2)));
        let (_, body) = get(&c, &service.url("/v1/gtins/7501031311309")).await?;
        assert_eq!(body["price"]["amount_cents"], 200);
        let (_, body) = post(&c, &service.url("/admin/reload"), "").await?;
        assert_eq!(body["status"], "unchanged");

        let (status, body) = post(&c, &service.url("/admin/rollback"), "").await?;
        assert_eq!((status, body["products"].as_u64()), (200, Some(1)), "{body}");
        let (_, body) = get(&c, &service.url("/v1/gtins/7501031311309")).await?;
        assert_eq!(body["price"]["amount_cents"], 100);
        assert_eq!(get(&c, &service.url("/v1/gtins/73513537")).await?.0, 404);
        Ok(())
    });
    let status = service.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "exit status {status}");
}
