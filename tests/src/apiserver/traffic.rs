//! What clients asked for: write counts per resource type and a bounded
//! request log, so tests can assert "a no-op reconcile writes nothing".

use std::collections::{BTreeMap, VecDeque};

use super::resource::Gvr;

/// How many requests in the log are kept; older ones are dropped.
pub const REQUEST_LOG_LIMIT: usize = 10_000;

/// Write requests received for one resource type (failed ones included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// POST requests.
    pub create: u64,
    /// PUT requests (main resource and `/status`).
    pub update: u64,
    /// PATCH requests of any kind, apply included.
    pub patch: u64,
    /// DELETE requests, single and collection.
    pub delete: u64,
}

impl WriteCounts {
    /// All write requests together.
    pub fn total(&self) -> u64 {
        self.create + self.update + self.patch + self.delete
    }
}

/// The write verbs counted in [`WriteCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteVerb {
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string (may be empty).
    pub query: String,
    /// HTTP status of the response (200 for watches, whatever they streamed).
    pub status: u16,
}

/// Counters and log, shared by every connection.
#[derive(Debug, Default)]
pub struct Traffic {
    writes: BTreeMap<Gvr, WriteCounts>,
    requests: VecDeque<RequestRecord>,
}

impl Traffic {
    /// Counts a write request for `gvr`.
    pub fn count_write(&mut self, gvr: &Gvr, verb: WriteVerb) {
        let counts = self.writes.entry(gvr.clone()).or_default();
        match verb {
            WriteVerb::Create => counts.create += 1,
            WriteVerb::Update => counts.update += 1,
            WriteVerb::Patch => counts.patch += 1,
            WriteVerb::Delete => counts.delete += 1,
        }
    }

    /// Appends to the request log.
    pub fn log(&mut self, record: RequestRecord) {
        if self.requests.len() >= REQUEST_LOG_LIMIT {
            self.requests.pop_front();
        }
        self.requests.push_back(record);
    }

    /// Write counts for one resource type.
    pub fn writes(&self, gvr: &Gvr) -> WriteCounts {
        self.writes.get(gvr).copied().unwrap_or_default()
    }

    /// Write requests of every type together.
    pub fn total_writes(&self) -> u64 {
        self.writes.values().map(WriteCounts::total).sum()
    }

    /// The logged requests, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests.iter().cloned().collect()
    }

    /// Forgets counts and log.
    pub fn reset(&mut self) {
        self.writes.clear();
        self.requests.clear();
    }
}
