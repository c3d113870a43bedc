//! The partition of a workspace, as vigil and producers compute it (`Subjects::partition`), is the
//! one a real nats-server's subject transform `{{partition(P,2)}}` stores its inputs under: for
//! 10 000 workspace ids of every shape the contract allows (1–128 of `[A-Za-z0-9_-]`), and for a
//! partition count that is not a power of two as well as the default 16.

mod support;

use std::collections::BTreeMap;

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use support::bus::nats;
use support::nats::NatsServer;
use support::rng::Rng;
use vigil::client::Subjects;
use vigil::core::event::WorkspaceId;

const IDS: usize = 10_000;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// 10 000 distinct workspace ids: short and long, every character the contract allows.
fn ids() -> Vec<String> {
    let mut rng = Rng(12);
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < IDS {
        let len = 1 + rng.below(if ids.len() % 10 == 0 { 128 } else { 24 });
        let id: String = (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())] as char).collect();
        ids.insert(id);
    }
    ids.into_iter().collect()
}

/// Publishes `p.in.heartbeat.<id>` for every id to a stream that maps it to
/// `p.in.<partition>.heartbeat.<id>`; returns the partition the server stored each id under.
async fn stored_partitions(js: &jetstream::Context, partitions: u32, ids: &[String]) -> BTreeMap<String, u32> {
    let name = format!("P{partitions}");
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![format!("p{partitions}.in.*.*")],
        subject_transform: Some(stream::SubjectTransform {
            source: format!("p{partitions}.in.*.*"),
            destination: format!(
                "p{partitions}.in.{{{{partition({partitions},2)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}"
            ),
        }),
        ..Default::default()
    };
    let stream = js.create_stream(config).await.unwrap();
    for window in ids.chunks(1000) {
        let mut acks = Vec::new();
        for id in window {
            acks.push(js.publish(format!("p{partitions}.in.heartbeat.{id}"), "x".into()).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
    let consumer = stream.create_consumer(jetstream::consumer::pull::OrderedConfig::default()).await.unwrap();
    let mut messages = consumer.messages().await.unwrap().take(ids.len());
    let mut stored = BTreeMap::new();
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        let tokens: Vec<&str> = m.subject.as_str().split('.').collect();
        assert_eq!(tokens.len(), 5, "{}", m.subject);
        stored.insert(tokens[4].to_string(), tokens[2].parse::<u32>().unwrap());
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigils_partition_of_a_workspace_is_the_servers_for_ten_thousand_ids() {
    let server = NatsServer::start();
    let js = jetstream::new(nats(&server.url()).await);
    let ids = ids();
    for partitions in [16, 7] {
        // Given the server's partitions of 10 000 ids,
        let stored = stored_partitions(&js, partitions, &ids).await;
        assert_eq!(stored.len(), IDS);
        // then vigil computes every one of them alike.
        let differ: Vec<String> = ids
            .iter()
            .filter(|id| Subjects::partition(&WorkspaceId::parse(id).unwrap(), partitions) != stored[*id])
            .map(|id| {
                format!(
                    "{id}: vigil {}, server {}",
                    Subjects::partition(&WorkspaceId::parse(id).unwrap(), partitions),
                    stored[id]
                )
            })
            .collect();
        assert!(
            differ.is_empty(),
            "{} of {IDS} differ with {partitions} partitions: {:?}",
            differ.len(),
            &differ[..differ.len().min(5)]
        );
        // (and the ids spread over every partition.)
        let used: std::collections::BTreeSet<u32> = stored.values().copied().collect();
        assert_eq!(used.len(), partitions as usize);
    }
}
