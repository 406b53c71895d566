//! A real browser for the tests: Debian's `chromium`, headless, driven over the DevTools protocol on a
//! websocket (no WebDriver in between). It runs in a process group of its own, which is killed with the
//! handle, so no renderer outlives a test; every call to it is bounded in time.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The longest one DevTools call may take.
const CALL_LIMIT: Duration = Duration::from_secs(20);

pub struct Browser {
    child: Child,
    socket: Socket,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromium's zygote and renderers are children of the browser process.
        // SAFETY: kill(2) with a negative pid signals the process group the browser was started in.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser binary: `chromium` from Debian (scripts/install-deps installs it).
fn chromium() -> String {
    std::env::var("FICUS_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".to_string())
}

impl Browser {
    /// Starts a headless browser with a window of `width` × `height` CSS pixels and one blank page.
    pub async fn start(width: u32, height: u32) -> Browser {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}` ({e}); scripts/install-deps installs it", chromium()));
        // The browser names its DevTools endpoint on stderr: `DevTools listening on ws://127.0.0.1:PORT/...`.
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let browser_url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                // SAFETY: as in Drop.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                panic!("chromium did not open its DevTools endpoint within 30 s");
            }
        };
        let port = browser_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .and_then(|hp| hp.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
            .expect("port in the DevTools url");
        let page_url = page_socket_url(port).await;
        let (socket, _) = tokio::time::timeout(CALL_LIMIT, tokio_tungstenite::connect_async(page_url.as_str()))
            .await
            .expect("DevTools connect in time")
            .expect("DevTools websocket");
        Browser { child, socket, next_id: 0, _profile: profile }
    }

    /// One DevTools command and its result (events that arrive meanwhile are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        let fut = async {
            self.socket.send(Message::text(msg)).await.expect("send to DevTools");
            while let Some(msg) = self.socket.next().await {
                let Ok(Message::Text(text)) = msg else { continue };
                let v: Value = serde_json::from_str(text.as_str()).expect("DevTools sends JSON");
                if v["id"].as_u64() == Some(id) {
                    if let Some(e) = v.get("error") {
                        panic!("{method} failed: {e}");
                    }
                    return v["result"].clone();
                }
            }
            panic!("DevTools closed during {method}");
        };
        tokio::time::timeout(CALL_LIMIT, fut).await.unwrap_or_else(|_| panic!("{method} took over {CALL_LIMIT:?}"))
    }

    /// The value of a JavaScript expression (JSON-able).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true})).await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("`{expression}` threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Loads `url` and waits until the document is complete.
    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_until("the page loads", "document.readyState === 'complete'", Duration::from_secs(30)).await;
    }

    /// Waits until `expression` is true in the page, polling every 50 ms; fails naming `what` after `limit`.
    /// Returns how long it took.
    pub async fn wait_until(&mut self, what: &str, expression: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.eval(expression).await == Value::Bool(true) {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what} (`{expression}`)");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets the viewport to `width` × `height` CSS pixels (a phone: 390 wide).
    pub async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    /// A PNG of the page (the whole page, not only the viewport).
    pub async fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true})).await;
        base64_decode(r["data"].as_str().expect("screenshot data")).expect("screenshot is base64")
    }
}

/// The DevTools websocket of the browser's first page, from its `/json/list`.
async fn page_socket_url(port: u16) -> String {
    let client = super::http1_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = super::get(&client, &format!("http://127.0.0.1:{port}/json/list")).await;
        if code == 200 {
            let targets: Value = serde_json::from_slice(&body).expect("target list is JSON");
            if let Some(url) = targets
                .as_array()
                .and_then(|a| a.iter().find(|t| t["type"] == "page"))
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                return url.to_string();
            }
        }
        assert!(Instant::now() < deadline, "chromium listed no page within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = input.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        let mut n = 0u32;
        for &c in &chunk[..chunk.len() - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * (4 - (chunk.len() - pad)) as u32;
        let full = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&full[..(chunk.len() - pad) * 3 / 4]);
    }
    Some(out)
}
