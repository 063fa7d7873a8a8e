//! The replicated state machine: a key-value map.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use adapter_thread::StateMachine;
use raft_proto::Index;
use serde::{Deserialize, Serialize};

/// How many client sessions the replicated state keeps (the least recently active expires).
pub(crate) const MAX_SESSIONS: usize = 10_000;

/// What each replica runs: the key-value map behind client sessions.
pub(crate) type Machine = adapter_common::sessions::Sessions<KvStore>;

/// The replica's state machine, sharing its map with `store`.
pub(crate) fn machine(store: KvStore) -> Machine {
    adapter_common::sessions::Sessions::new(store, MAX_SESSIONS)
}

/// A command in the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KvCommand {
    /// Set `key` to `value`; answers the previous value.
    Put { key: String, value: Vec<u8> },
    /// Remove `key`; answers the previous value.
    Delete { key: String },
    /// Read `key`; answers its value. Served as the replica's read mode says: through the
    /// log, or from the replica's state after a ReadIndex or under a lease.
    Get { key: String },
}

/// The map, shared with the server so that it can dump what this replica holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct KvStore {
    map: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl KvStore {
    /// What this replica has applied, as it is now.
    pub(crate) fn dump(&self) -> Vec<(String, Vec<u8>)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The value of `key` in what this replica has applied so far.
    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-updated (every update is
        // one insert or remove), so a poisoned lock is still usable.
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl StateMachine for KvStore {
    fn apply(&mut self, _index: Index, command: &[u8]) -> Vec<u8> {
        let answer = match postcard::from_bytes::<KvCommand>(command) {
            Ok(KvCommand::Put { key, value }) => self.lock().insert(key, value),
            Ok(KvCommand::Delete { key }) => self.lock().remove(&key),
            Ok(KvCommand::Get { key }) => self.lock().get(&key).cloned(),
            // A command no replica can decode changes nothing, everywhere alike.
            Err(_) => None,
        };
        postcard::to_allocvec(&answer).unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(&*self.lock()).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) {
        match postcard::from_bytes::<BTreeMap<String, Vec<u8>>>(snapshot) {
            Ok(map) => *self.lock() = map,
            Err(e) => tracing::error!(error = %e, "cannot decode a snapshot; keeping the state"),
        }
    }
}
