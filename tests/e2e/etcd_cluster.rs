//! A three-member etcd cluster behind the gateway, as production runs it: `--etcd` names every member. Members
//! are killed one at a time (quorum kept) while requests run and keys are written through the members still up;
//! every write arrives, and no request fails. A killed member comes back and rejoins before the next one dies.

use crate::common;

use common::backend::TestBackend;
use common::etcd::EtcdCluster;
use common::load::Load;
use common::*;
use std::time::Duration;

const P: &str = "/vulcand";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_die_one_at_a_time_and_every_write_arrives() {
    let mut cluster = EtcdCluster::start(3);
    let b = TestBackend::start("b").await;
    let first = &cluster.members[0];
    first.put(&format!("{P}/backends/b/backend"), r#"{"Type":"http"}"#);
    first.put(&format!("{P}/backends/b/servers/s1"), &format!(r#"{{"URL":"http://{}"}}"#, b.addr));
    first
        .put(&format!("{P}/frontends/steady/frontend"), r#"{"Type":"http","BackendId":"b","Route":"Path(`/steady`)"}"#);
    let ficus = Ficus::start_etcd(&cluster.endpoints(), P).await;
    wait_paths(&ficus, &["/steady"], &[], Duration::from_secs(10)).await;
    let load = Load::start(ficus.url("/steady"), 4);

    let mut written = Vec::new();
    for round in 0..3 {
        cluster.members[round].kill();
        // Written through a member that is up, whichever member the gateway was watching.
        let id = format!("round{round}");
        cluster.put(
            round + 1,
            &format!("{P}/frontends/{id}/frontend"),
            &format!(r#"{{"Type":"http","BackendId":"b","Route":"Path(`/{id}`)"}}"#),
        );
        written.push(format!("/{id}"));
        let paths: Vec<&str> = written.iter().map(String::as_str).collect();
        wait_paths(&ficus, &paths, &[], Duration::from_secs(20)).await;
        cluster.members[round].restart();
    }
    // A delete made while the last member to die was down arrives too.
    cluster.members[2].kill();
    cluster.ctl(0, &["del", &format!("{P}/frontends/round0/frontend")]);
    wait_paths(&ficus, &["/round1", "/round2"], &["/round0"], Duration::from_secs(20)).await;
    cluster.members[2].restart();
    load.finish(100).await;
    // The member the gateway watched died at some point: it noticed, and moved to another.
    let s = ficus.status().await;
    assert!(s["source"]["errors_total"].as_u64() >= Some(1), "{s}");
    assert_eq!(s["source"]["state"], "watching", "{s}");
}
