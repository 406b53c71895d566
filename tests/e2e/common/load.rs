//! Steady request load against a running gateway, counting every failure: the fault tests assert that config
//! source trouble never costs a request.

use super::mixed::get_ok;
use super::{h2c_client, http1_client};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct Load {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicUsize>,
    pub failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `clients` loops, half HTTP/1.1 keep-alive and half h2c, each GETting `url` back to back. A GET an HTTP/2
    /// GOAWAY left unprocessed is sent again once, as clients do (see [`get_ok`]).
    pub fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let tasks = (0..clients)
            .map(|i| {
                let (stop, ok, failures, url) = (stop.clone(), ok.clone(), failures.clone(), url.clone());
                tokio::spawn(async move {
                    let c = if i % 2 == 0 { http1_client() } else { h2c_client() };
                    while !stop.load(Ordering::Relaxed) {
                        // A transport error is a failure too, recorded rather than a panic in this task.
                        match get_ok(&c, &url).await {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.lock().unwrap().push(e),
                        }
                        // Keep the load steady but light: the machine is shared with the etcd under test.
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Load { stop, ok, failures, tasks }
    }

    /// Stops the clients and asserts that nothing failed and enough ran. Returns the number of successes.
    pub async fn finish(self, min_ok: usize) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let failures = self.failures.lock().unwrap().clone();
        let ok = self.ok.load(Ordering::Relaxed);
        assert!(
            failures.is_empty(),
            "{} of {} requests failed: {:?}",
            failures.len(),
            ok + failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(ok >= min_ok, "only {ok} requests ran");
        ok
    }
}
