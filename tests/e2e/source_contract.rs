//! The one contract every config source passes (STYLE.md): run the source in process, apply its events in order
//! to a plain map, and after every store operation the map must equal what the store holds. The same cases run
//! against the routes directory and against a real etcd.

use crate::common;

use common::etcd::Etcd;
use common::Routes;
use ficus::model::Change;
use ficus::source::etcd::EtcdSettings;
use ficus::source::{etcd, file, SourceEvent};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

enum Store {
    Files(Routes),
    Etcd(Etcd),
}

impl Store {
    fn put(&self, key: &str, value: &str) {
        match self {
            Store::Files(r) => r.put(key, value),
            Store::Etcd(e) => e.put(&format!("/vulcand/{key}"), value),
        }
    }

    fn delete(&self, key: &str) {
        match self {
            Store::Files(r) => r.delete(key),
            Store::Etcd(e) => {
                e.ctl(&["del", &format!("/vulcand/{key}")]);
            }
        }
    }

    /// Something beside the config that the source must not deliver.
    fn put_foreign(&self) {
        match self {
            Store::Files(r) => std::fs::write(r.path().join("README.txt"), "not a route").expect("write"),
            Store::Etcd(e) => e.put("/vulcandx/backends/b/backend", r#"{"Type":"http"}"#),
        }
    }

    fn start(&self) -> mpsc::Receiver<SourceEvent> {
        let (tx, rx) = mpsc::channel(1024);
        match self {
            Store::Files(r) => {
                let dir = r.path().to_path_buf();
                tokio::spawn(async move {
                    let _ = file::watch(dir, tx).await;
                });
            }
            Store::Etcd(e) => {
                let mut s = EtcdSettings::new(vec![e.endpoint()]);
                s.request_timeout = Duration::from_secs(1);
                tokio::spawn(etcd::watch(s, tx));
            }
        }
        rx
    }
}

/// The store as the events describe it.
#[derive(Default)]
struct Follower {
    map: BTreeMap<String, Vec<u8>>,
    first_was_snapshot: Option<bool>,
    problems: Vec<String>,
}

fn follow(mut rx: mpsc::Receiver<SourceEvent>) -> Arc<Mutex<Follower>> {
    let f: Arc<Mutex<Follower>> = Arc::default();
    let f2 = f.clone();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let mut f = f2.lock().unwrap();
            match ev {
                SourceEvent::Snapshot { entries, .. } => {
                    f.first_was_snapshot.get_or_insert(true);
                    f.map = entries.into_iter().collect();
                }
                SourceEvent::Changes { changes, .. } => {
                    f.first_was_snapshot.get_or_insert(false);
                    for c in changes {
                        match c {
                            Change::Put { key, value } => f.map.insert(key, value),
                            Change::Delete { key } => f.map.remove(&key),
                        };
                    }
                }
                SourceEvent::Watching { .. } => {}
                SourceEvent::Problem { message } => f.problems.push(message),
            }
        }
    });
    f
}

async fn wait_equal(f: &Arc<Mutex<Follower>>, want: &BTreeMap<String, String>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        {
            let f = f.lock().unwrap();
            let got: BTreeMap<String, String> =
                f.map.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect();
            if &got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: want {want:#?}\ngot {got:#?}\nproblems {:?}", f.problems);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn contract(store: Store) {
    let mut want = BTreeMap::new();
    let put = |store: &Store, want: &mut BTreeMap<String, String>, k: &str, v: &str| {
        store.put(k, v);
        want.insert(k.to_string(), v.to_string());
    };
    // Present before the source starts: the first event is a full listing.
    put(&store, &mut want, "backends/b1/backend", r#"{"Type":"http"}"#);
    put(&store, &mut want, "backends/b1/servers/s1", r#"{"URL":"http://127.0.0.1:1"}"#);
    let f = follow(store.start());
    wait_equal(&f, &want, "initial listing").await;
    assert_eq!(f.lock().unwrap().first_was_snapshot, Some(true), "a source starts with a snapshot");

    put(&store, &mut want, "frontends/f1/frontend", r#"{"Type":"http","BackendId":"b1","Route":"Path(`/`)"}"#);
    wait_equal(&f, &want, "new key").await;
    put(&store, &mut want, "frontends/f1/frontend", r#"{"Type":"http","BackendId":"b1","Route":"Path(`/v2`)"}"#);
    wait_equal(&f, &want, "changed key").await;
    store.delete("backends/b1/servers/s1");
    want.remove("backends/b1/servers/s1");
    wait_equal(&f, &want, "deleted key").await;
    // Sources deliver values as stored; judging them is the model's job, so a bad value arrives as is.
    put(&store, &mut want, "backends/b2/backend", "{not json");
    wait_equal(&f, &want, "invalid value delivered verbatim").await;
    // Ids differing only by a suffix stay distinct keys (Vulcand's b1/b10 bug).
    put(&store, &mut want, "backends/b10/backend", r#"{"Type":"http"}"#);
    wait_equal(&f, &want, "b1 and b10").await;
    store.put_foreign();
    for i in 0..50 {
        put(&store, &mut want, &format!("frontends/burst{i}/frontend"), &format!(r#"{{"Route":"Path(`/{i}`)"}}"#));
    }
    wait_equal(&f, &want, "burst of 50, nothing foreign").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_passes_the_contract() {
    contract(Store::Files(Routes::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_source_passes_the_contract() {
    contract(Store::Etcd(Etcd::start())).await;
}
