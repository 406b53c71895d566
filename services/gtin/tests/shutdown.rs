//! The serving kit's two-signal shutdown in the real `gtin-service` process: after the first SIGTERM a request
//! already in flight (its body half sent) still gets its answer and the process then exits cleanly; a second
//! signal exits at once (status 130) even though that request never finishes and the drain deadline is far.

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{publish, server_read_all, Service};

const BODY: &str = r#"{"gtins":["036000291452"]}"#;

/// Opens a raw connection and sends a batch request's head and the first half of its body, then waits until
/// the service has read all of it: from then on the request is in flight.
async fn half_sent_request(service: &Service) -> anyhow::Result<(TcpStream, &'static str)> {
    let mut conn = TcpStream::connect(service.addr).await?;
    let local = conn.local_addr()?;
    let (first, rest) = BODY.split_at(BODY.len() / 2);
    let head = format!(
        "POST /v1/gtins:batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{first}",
        BODY.len()
    );
    conn.write_all(head.as_bytes()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server_read_all(service.addr, local) {
        anyhow::ensure!(Instant::now() < deadline, "the service never read the request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((conn, rest))
}

fn started(drain: &str) -> (tempfile::TempDir, Service) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let code = gtin::gtin::Gtin::parse("036000291452").unwrap();
    let product = gtin::record::Product {
        gtin: code,
        sku: "100000001",
        description: "Demo Product",
        brand: "ACME",
        department: "GROC",
        price_cents: 199,
        updated: gtin::clock::Date::parse_yyyymmdd("20240131").unwrap(),
    };
    publish(&data, &[product]).unwrap();
    let service = Service::start_draining_for(&data, dir.path(), drain).unwrap();
    (dir, service)
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_then_exits_cleanly() {
    let (_dir, mut service) = started("60s");
    common::run(Duration::from_secs(60), async {
        let (mut conn, rest) = half_sent_request(&service).await?;
        service.signal_term()?;
        anyhow::ensure!(service.logged("SIGTERM: draining", Duration::from_secs(20)), "no drain logged");
        // The listener is closed once draining has begun; the request in flight is not.
        conn.write_all(rest.as_bytes()).await?;
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).await?;
        let reply = String::from_utf8_lossy(&reply);
        anyhow::ensure!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        anyhow::ensure!(reply.contains("100000001"), "{reply}");
        let status = service.wait_exit(Duration::from_secs(20))?;
        anyhow::ensure!(status.success(), "exit status {status}");
        Ok(())
    });
}

#[test]
fn a_second_signal_exits_at_once_without_waiting_for_the_drain() {
    let (_dir, mut service) = started("10m");
    common::run(Duration::from_secs(60), async {
        let (_conn, _rest) = half_sent_request(&service).await?;
        service.signal_term()?;
        anyhow::ensure!(service.logged("SIGTERM: draining", Duration::from_secs(20)), "no drain logged");
        // The request never completes and the drain deadline is ten minutes away: only the second signal ends it.
        service.signal_term()?;
        let status = service.wait_exit(Duration::from_secs(20))?;
        anyhow::ensure!(status.code() == Some(130), "exit status {status}");
        Ok(())
    });
}
