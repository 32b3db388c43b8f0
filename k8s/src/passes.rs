//! The watch-triggered pass runner of the controller's loops (broker sync, service
//! exports, DNS): watchers are only
//! triggers (every pass lists afresh and plans from what it found), a burst of events
//! settles into one pass, and a resync runs one anyway.
//!
//! Some objects change far more often than anything a pass reads from them (a Lease
//! renewed every few seconds, a Gateway's status about once a second): [`Changes`]
//! remembers a fingerprint of what a pass reads from each object and lets an event
//! through only when that changes.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::warn;

/// Per-object fingerprints of the objects one watcher has seen.
pub struct Changes<K> {
    fingerprint: fn(&K) -> Value,
    seen: BTreeMap<String, Value>,
    /// Objects of a relist in progress (between `Init` and `InitDone`).
    relist: Option<BTreeMap<String, Value>>,
}

impl<K: Resource> Changes<K> {
    /// Tracks objects by `fingerprint`: the parts of an object a pass reads.
    pub fn new(fingerprint: fn(&K) -> Value) -> Self {
        Changes {
            fingerprint,
            seen: BTreeMap::new(),
            relist: None,
        }
    }

    /// Whether `event` changes anything a pass reads (and should trigger one).
    pub fn relevant(&mut self, event: &Event<K>) -> bool {
        match event {
            Event::Apply(obj) => {
                let print = (self.fingerprint)(obj);
                self.seen.insert(key(obj), print.clone()) != Some(print)
            }
            Event::Delete(obj) => {
                self.seen.remove(&key(obj));
                true
            }
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => {
                let print = (self.fingerprint)(obj);
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key(obj), print);
                false
            }
            // A relist (first start, or after a lost watch) replaces what was seen;
            // objects gone meanwhile are noticed here.
            Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let changed = fresh != self.seen;
                self.seen = fresh;
                changed
            }
        }
    }
}

fn key<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// One watched kind of object, for logs: what it is and what access it needs.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    /// What is watched, e.g. "ClusterEndpoints at the broker".
    pub what: &'static str,
    /// The access the watch needs, for the warning when it fails.
    pub needs: &'static str,
}

/// A watch stream as triggers: `None` for a change worth a pass, `Some` for an error.
pub type Triggers = BoxStream<'static, (Watched, Option<watcher::Error>)>;

/// Every event of `api` is a trigger (ClusterEndpoints: few, and rarely changed).
pub fn every_event<K>(api: Api<K>, config: watcher::Config, watched: Watched) -> Triggers
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config)
        .default_backoff()
        .map(move |e| (watched, e.err()))
        .boxed()
}

/// Only events that change `fingerprint` of an object are triggers.
pub fn changes_of<K>(
    api: Api<K>,
    config: watcher::Config,
    watched: Watched,
    fingerprint: fn(&K) -> Value,
) -> Triggers
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut changes = Changes::new(fingerprint);
    watcher(api, config)
        .default_backoff()
        .filter_map(move |event| {
            let trigger = match event {
                Ok(event) => changes.relevant(&event).then_some((watched, None)),
                Err(error) => Some((watched, Some(error))),
            };
            std::future::ready(trigger)
        })
        .boxed()
}

/// Runs `pass` once at start, then after every burst of `triggers` (once `debounce`
/// passes without an event, or ten debounce periods into a burst that keeps going)
/// and at least every `resync`, until `shutdown` resolves. `pass` gets the number of
/// the pass (1 for the first) and logs its own outcome. Returns the number of passes.
///
/// The watchers are only triggers: every pass lists afresh. A watch error is logged
/// (with the access the watch needs) and the watcher retries with backoff. A pass in
/// flight when `shutdown` resolves is abandoned: after a lost lease another replica
/// writes, so this one must stop at once; every write is idempotent and the next
/// leader lists afresh.
pub async fn run_passes<F, Fut>(
    triggers: Vec<Triggers>,
    resync: Duration,
    debounce: Duration,
    shutdown: impl Future<Output = ()>,
    mut pass: F,
) -> u64
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut events = stream::select_all(triggers);
    let mut tick = tokio::time::interval(resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut passes = 0u64;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {}
            event = events.next() => {
                if let Some((watched, Some(error))) = event {
                    warn!(
                        watched = watched.what,
                        needs = watched.needs,
                        %error,
                        "watching failed; retrying with backoff"
                    );
                    continue;
                }
                // Let a burst of events settle into one pass, but never wait
                // longer than ten quiet periods while changes keep coming.
                let settled = async {
                    let quiet = async {
                        while tokio::time::timeout(debounce, events.next())
                            .await
                            .is_ok_and(|e| e.is_some())
                        {}
                    };
                    let _ = tokio::time::timeout(debounce * 10, quiet).await;
                };
                tokio::select! {
                    () = &mut shutdown => break,
                    () = settled => {}
                }
            }
        }
        passes += 1;
        tokio::select! {
            () = &mut shutdown => break,
            () = pass(passes) => {}
        }
    }
    passes
}
