//! How a rollout reads an instance: `GET /dashboard/data.json?q=<backend>` on its admin listener (paged until
//! the backend's row is found), the instance's applied etcd revision and the backend's cumulative `totals`.

use crate::telemetry::live::Totals;
use serde_json::Value;
use std::time::Duration;

/// A small HTTP/1.1 client for the instances' admin listeners.
pub(super) struct AdminClient {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<bytes::Bytes>,
    >,
    token: Option<String>,
}

impl AdminClient {
    pub(super) fn new(token: Option<String>) -> Self {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        AdminClient { client, token }
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        use http_body_util::BodyExt;
        let mut req = http::Request::get(url);
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(http_body_util::Empty::new()).map_err(|e| format!("{url}: {e}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(5), async {
            let resp = self.client.request(req).await.map_err(|e| format!("{url}: {e}"))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
            Ok::<_, String>((status, body))
        })
        .await
        .map_err(|_| format!("{url}: no answer in 5s"))??;
        if !resp.0.is_success() {
            return Err(format!("{url}: answered {}", resp.0));
        }
        serde_json::from_slice(&resp.1).map_err(|e| format!("{url}: not JSON: {e}"))
    }

    /// The instance's applied etcd revision and the backend's cumulative counters (zero when it has none yet).
    pub(super) async fn backend_totals(&self, admin: &str, backend: &str) -> Result<(u64, Totals), String> {
        let base = admin.trim_end_matches('/');
        if !base.starts_with("http://") {
            return Err(format!("{admin}: the admin listener is reached over http://"));
        }
        let mut page = 1u64;
        loop {
            let url = format!("{base}/dashboard/data.json?q={}&bpage={page}&page=1", encode(backend));
            let v = self.get_json(&url).await?;
            let revision = v["config"]["revision"].as_u64().unwrap_or(0);
            let items = v["backends"]["items"].as_array().cloned().unwrap_or_default();
            if let Some(row) = items.iter().find(|r| r["id"].as_str() == Some(backend)) {
                let totals = match row.get("totals") {
                    Some(t) if !t.is_null() => {
                        serde_json::from_value(t.clone()).map_err(|e| format!("{url}: totals: {e}"))?
                    }
                    _ => Totals::default(),
                };
                return Ok((revision, totals));
            }
            let pages = v["backends"]["pages"].as_u64().unwrap_or(1);
            if page >= pages {
                return Ok((revision, Totals::default()));
            }
            page += 1;
        }
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
