//! Which instance should own which partition: the instances up (each says so in the members
//! bucket, `i.<hash of its name>`, renewed every quarter of the lease, deleted when it stops) and
//! rendezvous hashing over them — partition K's preferred owner is the instance whose name hashed
//! with K is highest, so an instance joining or leaving moves only the partitions it gains or
//! loses. The preference only decides who *tries* first; the lease and the fence (see
//! [`crate::bus::ownership`]) keep one owner whatever the preferences say.
//!
//! - A standby tries a vacant lease at once if it is the preferred owner of the partition among
//!   the instances up (the last holder left out when its lease expired rather than was given up:
//!   it is likely dead); otherwise only once the lease has been vacant for [`GRACE`].
//! - An owner hands a partition over (a planned handover) once another instance has been its
//!   preferred owner for a whole lease: hysteresis, so a flapping member moves nothing.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::bus::BusError;

/// How long a lease stays vacant before an instance that is not its partition's preferred owner
/// tries it.
pub const GRACE: Duration = Duration::from_secs(2);

/// The preferred owner of `partition` among `instances`: the highest FNV-1a of name and partition.
pub fn rendezvous<'a>(instances: impl IntoIterator<Item = &'a str>, partition: u32) -> Option<&'a str> {
    instances.into_iter().max_by_key(|name| (score(name, partition), *name))
}

/// `instances` in order of preference for `partition`: its preferred owner first.
pub fn ranked<'a>(instances: impl IntoIterator<Item = &'a str>, partition: u32) -> Vec<&'a str> {
    let mut ranked: Vec<&str> = instances.into_iter().collect();
    ranked.sort_by_key(|name| std::cmp::Reverse((score(name, partition), *name)));
    ranked
}

/// FNV-1a of the name and the partition, mixed (SplitMix64's finaliser): FNV alone spreads
/// names that differ in one character poorly.
fn score(name: &str, partition: u32) -> u64 {
    let bytes: Vec<u8> = name.bytes().chain([0]).chain(partition.to_le_bytes()).collect();
    let mut z = vigil_core::hash::fnv1a64(&bytes);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A members entry's value.
#[derive(Debug, Serialize, Deserialize)]
struct Member {
    instance: String,
    /// Drawn by each process when it joins: an entry under this instance's name with another token
    /// is another process started under the same name (absent from entries written before it).
    #[serde(default)]
    token: Option<String>,
}

/// This instance's presence in the members bucket, and what it sees of the others'.
#[derive(Clone)]
pub struct Membership {
    kv: kv::Store,
    instance: String,
    up: watch::Receiver<Vec<String>>,
    task: Arc<Task>,
}

struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Membership {
    /// Says this instance is up every quarter of `ttl` (the bucket's `max_age`), and reads who else
    /// is, until dropped.
    pub fn join(kv: kv::Store, instance: &str, ttl: Duration) -> Membership {
        let (tx, up) = watch::channel(vec![instance.to_string()]);
        let (kv2, name) = (kv.clone(), instance.to_string());
        let token = process_token();
        let task = tokio::spawn(async move {
            let member = Member { instance: name.clone(), token: Some(token.clone()) };
            let value = Bytes::from(serde_json::to_vec(&member).expect("encodes"));
            let mut warned = false;
            loop {
                if !warned && let Some(other) = other_under_this_name(&kv2, &name, &token).await {
                    tracing::warn!(
                        instance = name,
                        other,
                        "another process is up under this instance's name: each instance needs a name of its own \
                         (--instance); until then they share one place in the partitions' order"
                    );
                    warned = true;
                }
                if let Err(e) = kv2.put(key(&name), value.clone()).await {
                    tracing::warn!(error = %e, "cannot say this instance is up in the members bucket");
                }
                if let Ok(seen) = read(&kv2).await {
                    tx.send_if_modified(|old| {
                        let changed = *old != seen;
                        *old = seen;
                        changed
                    });
                }
                tokio::time::sleep(ttl / 4).await;
            }
        });
        Membership { kv, instance: instance.to_string(), up, task: Arc::new(Task(task)) }
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The instances up as last read (this one among them), sorted.
    pub fn up(&self) -> Vec<String> {
        let mut up = self.up.borrow().clone();
        if !up.contains(&self.instance) {
            up.push(self.instance.clone());
            up.sort();
        }
        up
    }

    /// The instances up now, read afresh (this one among them).
    pub async fn up_now(&self) -> Vec<String> {
        let mut up = read(&self.kv).await.unwrap_or_else(|_| self.up());
        if !up.contains(&self.instance) {
            up.push(self.instance.clone());
            up.sort();
        }
        up
    }

    /// Says this instance is going: before its leases are given up, so the successors it prefers
    /// see it gone and take over at once.
    pub async fn leave(&self) {
        self.task.0.abort();
        if let Err(e) = self.kv.delete(key(&self.instance)).await {
            tracing::warn!(error = %e, "cannot leave the members bucket; the entry expires by itself");
        }
    }

    /// Whether this instance should try a vacant lease of `partition` now, `vacant_for` after it
    /// was first seen vacant; `gone` is the last holder, if its lease expired.
    pub async fn may_take(&self, partition: u32, vacant_for: Duration, gone: Option<&str>) -> bool {
        if vacant_for >= GRACE {
            return true;
        }
        let up = self.up_now().await;
        let candidates = up.iter().map(String::as_str).filter(|name| Some(*name) != gone);
        rendezvous(candidates, partition) == Some(self.instance.as_str())
    }

    /// The instances that should follow `partition` (its preferred owner and the next `standbys`
    /// in rendezvous order), among those up as last read.
    pub fn followers(&self, partition: u32, standbys: u32) -> Vec<String> {
        let up = self.up();
        let mut ranked = ranked(up.iter().map(String::as_str), partition);
        ranked.truncate(1 + standbys as usize);
        ranked.into_iter().map(str::to_string).collect()
    }

    /// Whether this instance should follow `partition` while another owns it.
    pub fn follows(&self, partition: u32, standbys: u32) -> bool {
        self.followers(partition, standbys).contains(&self.instance)
    }

    /// The instance other than this one that should own `partition`, if there is one.
    pub fn preferred_other(&self, partition: u32) -> Option<String> {
        let up = self.up();
        rendezvous(up.iter().map(String::as_str), partition).filter(|p| *p != self.instance).map(str::to_string)
    }
}

/// A random token for this process's members entry (the process id, should the system's random
/// source fail: a clash is then only less likely to be told).
fn process_token() -> String {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        Err(_) => format!("pid{}", std::process::id()),
    }
}

/// The token of another process's live entry under `instance`'s name, if there is one.
async fn other_under_this_name(kv: &kv::Store, instance: &str, token: &str) -> Option<String> {
    let value = kv.get(key(instance)).await.ok()??;
    let member = serde_json::from_slice::<Member>(&value).ok()?;
    member.token.filter(|t| t != token)
}

fn key(instance: &str) -> String {
    format!("i.{:016x}", vigil_core::hash::fnv1a64(instance.as_bytes()))
}

/// The instances whose members entries have not expired, sorted by name.
async fn read(kv: &kv::Store) -> Result<Vec<String>, BusError> {
    use futures::TryStreamExt;
    let doing = "reading the members bucket";
    let keys: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| BusError::nats(doing, e))?
        .try_collect()
        .await
        .map_err(|e| BusError::nats(doing, e))?;
    let mut up = Vec::new();
    for key in keys {
        if let Ok(Some(value)) = kv.get(key.as_str()).await
            && let Ok(member) = serde_json::from_slice::<Member>(&value)
        {
            up.push(member.instance);
        }
    }
    up.sort();
    up.dedup();
    Ok(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_only_the_partitions_an_instance_gains_or_loses() {
        let owners = |names: &[&str]| -> Vec<String> {
            (0..64).map(|k| rendezvous(names.iter().copied(), k).unwrap().to_string()).collect()
        };
        let two = owners(&["a", "b"]);
        let three = owners(&["a", "b", "c"]);
        // Every instance gets some of 64 partitions,
        for name in ["a", "b", "c"] {
            assert!(three.iter().filter(|o| *o == name).count() >= 10, "{name}: {three:?}");
        }
        // and a joining instance takes partitions only: none moves between the others.
        for (before, after) in two.iter().zip(&three) {
            assert!(after == before || after == "c", "{before} -> {after}");
        }
        assert_eq!(rendezvous(std::iter::empty(), 3), None);
    }

    #[test]
    fn the_ranking_starts_with_the_preferred_owner_and_moves_little_when_an_instance_joins() {
        let names = ["a", "b", "c", "d"];
        for k in 0..64 {
            let order = ranked(names, k);
            assert_eq!(order.len(), 4);
            assert_eq!(Some(order[0]), rendezvous(names, k));
            // One more instance only slots in: the others keep their order.
            let more: Vec<&str> = ranked(["a", "b", "c", "d", "e"], k).into_iter().filter(|n| *n != "e").collect();
            assert_eq!(more, order, "partition {k}");
        }
    }
}
