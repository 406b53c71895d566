//! SIGTERM: the listener closes, in-flight requests finish, idle keep-alive connections are closed at once,
//! an export still running at the end of the grace period is cut (no `#END` trailer), and a second signal
//! exits at once (status 130) without waiting for the drain.

mod common;

use std::time::{Duration, Instant};

use common::{client, server_read_all, within, Server};
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn an_in_flight_request_finishes_then_the_process_exits() -> anyhow::Result<()> {
    let mut server = Server::start(&["--products", "1000", "--latency-ms", "1500"])?;
    let addr = server.addr;
    within(Duration::from_secs(60), async {
        // A raw connection, so the test can see the moment the server has read the request: only then is it
        // in flight (before, a closing listener would rightly drop it).
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        let local = conn.local_addr()?;
        conn.write_all(b"GET /stores/1/gtins/123456789012 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server_read_all(addr, local) {
            assert!(Instant::now() < deadline, "the server never read the request");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.terminate()?;
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).await?;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("\"upc\":\"123456789012\""), "{reply}");
        let status = server.wait_exit(Duration::from_secs(10))?;
        assert!(status.success(), "{status}");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after exit");
        assert!(server.logged("drained", Duration::from_secs(2)), "{}", server.stderr());
        assert!(server.stderr().contains("shutting down"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_up_the_exit() -> anyhow::Result<()> {
    let mut server = Server::start(&["--products", "1000", "--grace-ms", "120000"])?;
    within(Duration::from_secs(60), async {
        let client = client();
        // The pooled client keeps this connection open after the response.
        let response = client.get(server.url("/health").parse()?).await?;
        response.into_body().collect().await?;
        server.terminate()?;
        // An exit well before the 120 s grace period: the idle connection was not waited for.
        let status = server.wait_exit(Duration::from_secs(30))?;
        assert!(status.success(), "{status}");
        drop(client);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_export_still_running_at_the_deadline_is_cut() -> anyhow::Result<()> {
    let mut server = Server::start(&["--products", "5000000", "--grace-ms", "500"])?;
    within(Duration::from_secs(60), async {
        let response = client().get(server.url("/export").parse()?).await?;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let first = body.frame().await.transpose()?;
        assert!(first.is_some());
        // Stop reading: the server is held by backpressure mid-export when the signal arrives.
        server.terminate()?;
        let status = server.wait_exit(Duration::from_secs(10))?;
        assert!(status.success(), "{status}");

        let mut text = Vec::new();
        let ended_with_error = loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        text.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) => break true,
                None => break false,
            }
        };
        assert!(ended_with_error, "a cut export must not look complete");
        let text = String::from_utf8_lossy(&text);
        assert!(!text.contains("#END rows="), "a cut export has no trailer");
        assert!(server.logged("export cut short", Duration::from_secs(2)));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_second_signal_exits_at_once_without_waiting_for_the_drain() -> anyhow::Result<()> {
    // The request takes ten minutes and so does the grace period: only the second signal can end the process.
    let mut server = Server::start(&["--products", "1000", "--latency-ms", "600000", "--grace-ms", "600000"])?;
    let addr = server.addr;
    within(Duration::from_secs(60), async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        let local = conn.local_addr()?;
        conn.write_all(b"GET /stores/1/gtins/123456789012 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server_read_all(addr, local) {
            assert!(Instant::now() < deadline, "the server never read the request");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.terminate()?;
        assert!(server.logged("SIGTERM: draining", Duration::from_secs(20)), "{}", server.stderr());
        server.terminate()?;
        let status = server.wait_exit(Duration::from_secs(20))?;
        assert_eq!(status.code(), Some(130), "{status}");
        assert!(server.stderr().contains("second signal"), "{}", server.stderr());
        Ok(())
    })
    .await
}
