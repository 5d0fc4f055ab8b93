//! The in-memory index of every sandbox: a compact entry per sandbox, and the ordered sets that answer
//! the lifecycle's questions without visiting every sandbox — a page of a filtered listing (by state, by
//! owner and state, by metadata pair, each ordered by the listing's key), how many sandboxes are in a
//! state (the limits), and which running sandboxes are due for their timeout (the reaper).
//!
//! Pure data: nothing here touches the disk; [`super::catalog`] keeps it in step with the journal.
//! A paused sandbox costs disk, not memory, so entries are small: the strings many sandboxes share
//! (template, module digest, owner) are kept once, metadata and environment as boxed slices.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use super::mode::PauseMode;
use super::network::NetworkPolicy;
use super::query::{self, Key, ListQuery};
use super::record::{LifecyclePolicy, SandboxInfo, SandboxRecord, SandboxState, from_ms};
use super::volumes::VolumeMount;

/// The order of a listing, made total by the id: (creation time, sequence, id).
type OrderKey = (u64, u64, Arc<str>);

/// Every state, in the order of [`ByState`]'s sets.
const STATES: [SandboxState; 5] = [
    SandboxState::Running,
    SandboxState::Pausing,
    SandboxState::Paused,
    SandboxState::Resuming,
    SandboxState::Lost,
];

fn state_slot(state: SandboxState) -> usize {
    match state {
        SandboxState::Running => 0,
        SandboxState::Pausing => 1,
        SandboxState::Paused => 2,
        SandboxState::Resuming => 3,
        SandboxState::Lost => 4,
    }
}

/// A string-to-string map as a slice sorted by key (it comes from a `BTreeMap`).
type Pairs = Box<[(Box<str>, Box<str>)]>;

/// What the index keeps of one sandbox: its whole record, compactly.
#[derive(Debug)]
pub(crate) struct Entry {
    id: Arc<str>,
    template: Arc<str>,
    template_sha256: Arc<str>,
    owner: Option<Arc<str>>,
    metadata: Pairs,
    envs: Pairs,
    created_at_ms: u64,
    started_at_ms: u64,
    end_at_ms: u64,
    timeout_ms: u64,
    sequence: u64,
    state: SandboxState,
    lifecycle: LifecyclePolicy,
    /// Rare (most sandboxes mount nothing and keep the default network), so boxed: an empty slice and
    /// a `None` cost a word each.
    mounts: Box<[VolumeMount]>,
    pause_mode: PauseMode,
    network: Option<Box<NetworkPolicy>>,
}

fn pairs(map: &std::collections::BTreeMap<String, String>) -> Pairs {
    map.iter()
        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
        .collect()
}

fn map(pairs: &Pairs) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Entry {
    fn key(&self) -> OrderKey {
        (self.created_at_ms, self.sequence, self.id.clone())
    }

    /// The sandbox's record.
    pub(crate) fn record(&self) -> SandboxRecord {
        SandboxRecord {
            id: self.id.to_string(),
            template: self.template.to_string(),
            template_sha256: self.template_sha256.to_string(),
            metadata: map(&self.metadata),
            envs: map(&self.envs),
            created_at_ms: self.created_at_ms,
            started_at_ms: self.started_at_ms,
            end_at_ms: self.end_at_ms,
            timeout_ms: self.timeout_ms,
            state: self.state,
            lifecycle: self.lifecycle,
            sequence: self.sequence,
            owner: self.owner.as_ref().map(|o| o.to_string()),
            mounts: self.mounts.to_vec(),
            pause_mode: self.pause_mode,
            network: self.network.as_deref().cloned(),
        }
    }

    /// The sandbox's public view (what [`SandboxRecord::info`] gives, without building the record).
    fn info(&self) -> SandboxInfo {
        SandboxInfo {
            id: self.id.to_string(),
            template: self.template.to_string(),
            metadata: map(&self.metadata),
            envs: map(&self.envs),
            created_at: from_ms(self.created_at_ms),
            started_at: from_ms(self.started_at_ms),
            end_at: from_ms(self.end_at_ms),
            state: self.state,
            lifecycle: self.lifecycle,
            owner: self.owner.as_ref().map(|o| o.to_string()),
            mounts: self.mounts.to_vec(),
            pause_mode: (self.state == SandboxState::Paused).then_some(self.pause_mode),
            network: self.network.as_deref().cloned(),
        }
    }

    fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.metadata[i].1.as_ref())
    }

    /// Whether this entry passes every filter of `query` (the semantics of [`query`]'s doc).
    fn matches(&self, query: &ListQuery) -> bool {
        query::state_matches(query, self.state)
            && query
                .owner
                .as_deref()
                .is_none_or(|owner| self.owner.as_deref() == Some(owner))
            && query
                .metadata
                .iter()
                .all(|(k, v)| self.metadata_value(k) == Some(v.as_str()))
    }
}

/// One ordered set per state.
#[derive(Debug, Default)]
struct ByState([BTreeSet<OrderKey>; 5]);

impl ByState {
    fn set(&self, state: SandboxState) -> &BTreeSet<OrderKey> {
        &self.0[state_slot(state)]
    }

    fn set_mut(&mut self, state: SandboxState) -> &mut BTreeSet<OrderKey> {
        &mut self.0[state_slot(state)]
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(BTreeSet::is_empty)
    }
}

/// The index. Every method is proportional to what it returns (times a logarithm), never to the number
/// of sandboxes — except [`Index::entries`], which the snapshot needs whole.
#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: HashMap<Arc<str>, Arc<Entry>>,
    by_state: ByState,
    by_owner: HashMap<Arc<str>, ByState>,
    unowned: ByState,
    /// metadata key → value → the sandboxes with that pair.
    by_metadata: HashMap<Box<str>, HashMap<Box<str>, BTreeSet<OrderKey>>>,
    /// Running sandboxes by end time, for the reaper.
    running_by_end: BTreeSet<(u64, Arc<str>)>,
    /// Running sandboxes with an idle timeout: their last activity is known only to the manager, so
    /// the reaper looks at each of them every round.
    idle_watch: BTreeSet<Arc<str>>,
    /// volume id → the sandboxes mounting it, so that destroying a volume asks one set.
    by_volume: HashMap<Box<str>, BTreeSet<Arc<str>>>,
    /// The strings many entries share, kept once. They are few (templates, owners) and never removed.
    shared: HashSet<Arc<str>>,
    next_sequence: u64,
}

/// A page of a listing.
#[derive(Debug)]
pub(crate) struct IndexPage {
    /// The matching sandboxes, in the listing's order.
    pub(crate) items: Vec<SandboxInfo>,
    /// The key of the last item when more match after it.
    pub(crate) next: Option<Key>,
}

impl Index {
    /// How many sandboxes it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// One more than the largest sequence number seen, so new sandboxes sort after every existing one.
    pub(crate) fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    fn share(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.shared.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = s.into();
        self.shared.insert(shared.clone());
        shared
    }

    /// Adds a sandbox's record, or replaces its previous one.
    pub(crate) fn insert(&mut self, record: &SandboxRecord) {
        let id: Arc<str> = match self.entries.get_key_value(record.id.as_str()) {
            Some((id, _)) => id.clone(),
            None => record.id.as_str().into(),
        };
        self.remove(&id);
        let entry = Arc::new(Entry {
            id: id.clone(),
            template: self.share(&record.template),
            template_sha256: self.share(&record.template_sha256),
            owner: record.owner.as_deref().map(|o| self.share(o)),
            metadata: pairs(&record.metadata),
            envs: pairs(&record.envs),
            created_at_ms: record.created_at_ms,
            started_at_ms: record.started_at_ms,
            end_at_ms: record.end_at_ms,
            timeout_ms: record.timeout_ms,
            sequence: record.sequence,
            state: record.state,
            lifecycle: record.lifecycle,
            mounts: record.mounts.clone().into_boxed_slice(),
            pause_mode: record.pause_mode,
            network: record.network.clone().map(Box::new),
        });
        let key = entry.key();
        self.by_state.set_mut(entry.state).insert(key.clone());
        match &entry.owner {
            Some(owner) => self
                .by_owner
                .entry(owner.clone())
                .or_default()
                .set_mut(entry.state)
                .insert(key.clone()),
            None => self.unowned.set_mut(entry.state).insert(key.clone()),
        };
        for (k, v) in entry.metadata.iter() {
            self.by_metadata
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(key.clone());
        }
        if entry.state == SandboxState::Running {
            self.running_by_end.insert((entry.end_at_ms, id.clone()));
            if entry.lifecycle.idle_timeout.is_some() {
                self.idle_watch.insert(id.clone());
            }
        }
        for mount in entry.mounts.iter() {
            self.by_volume
                .entry(mount.volume_id.as_str().into())
                .or_default()
                .insert(id.clone());
        }
        self.next_sequence = self.next_sequence.max(entry.sequence.saturating_add(1));
        self.entries.insert(id, entry);
    }

    /// Removes a sandbox; `false` if it was not there.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let Some(entry) = self.entries.remove(id) else {
            return false;
        };
        let key = entry.key();
        self.by_state.set_mut(entry.state).remove(&key);
        match &entry.owner {
            Some(owner) => {
                if let Some(sets) = self.by_owner.get_mut(owner) {
                    sets.set_mut(entry.state).remove(&key);
                    if sets.is_empty() {
                        self.by_owner.remove(owner);
                    }
                }
            }
            None => {
                self.unowned.set_mut(entry.state).remove(&key);
            }
        }
        for (k, v) in entry.metadata.iter() {
            if let Some(values) = self.by_metadata.get_mut(k) {
                if let Some(set) = values.get_mut(v) {
                    set.remove(&key);
                    if set.is_empty() {
                        values.remove(v);
                    }
                }
                if values.is_empty() {
                    self.by_metadata.remove(k);
                }
            }
        }
        if entry.state == SandboxState::Running {
            self.running_by_end
                .remove(&(entry.end_at_ms, entry.id.clone()));
            self.idle_watch.remove(&entry.id);
        }
        for mount in entry.mounts.iter() {
            if let Some(users) = self.by_volume.get_mut(mount.volume_id.as_str()) {
                users.remove(&entry.id);
                if users.is_empty() {
                    self.by_volume.remove(mount.volume_id.as_str());
                }
            }
        }
        true
    }

    /// A sandbox (running or paused) that mounts volume `volume_id`, if any.
    pub(crate) fn mounting(&self, volume_id: &str) -> Option<String> {
        self.by_volume
            .get(volume_id)
            .and_then(|users| users.first())
            .map(|id| id.to_string())
    }

    /// Whether sandbox `id` is there.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// The record of sandbox `id`.
    pub(crate) fn get(&self, id: &str) -> Option<SandboxRecord> {
        self.entries.get(id).map(|e| e.record())
    }

    /// The entry of sandbox `id`, shared (to put it back if a change must be undone).
    pub(crate) fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.entries.get(id).cloned()
    }

    /// The public view of sandbox `id`.
    pub(crate) fn info(&self, id: &str) -> Option<SandboxInfo> {
        self.entries.get(id).map(|e| e.info())
    }

    /// How many sandboxes are in `state`.
    pub(crate) fn count(&self, state: SandboxState) -> usize {
        self.by_state.set(state).len()
    }

    /// Every entry, for a snapshot: shared, so taking them is cheap while the journal is held.
    pub(crate) fn entries(&self) -> Vec<Arc<Entry>> {
        self.entries.values().cloned().collect()
    }

    /// Sorts entries in the listing's order: a snapshot written so loads into the ordered sets by
    /// appending at their ends, several times faster than in a hash map's order.
    pub(crate) fn sort(entries: &mut [Arc<Entry>]) {
        entries.sort_unstable_by(|a, b| {
            (a.created_at_ms, a.sequence, &a.id).cmp(&(b.created_at_ms, b.sequence, &b.id))
        });
    }

    /// The ids of the sandboxes in any of `states`, in the listing's order.
    pub(crate) fn ids_in(&self, states: &[SandboxState]) -> Vec<String> {
        Merge::new(states.iter().map(|&s| self.by_state.set(s).range(..)))
            .map(|(_, _, id)| id.to_string())
            .collect()
    }

    /// The ids of the sandboxes without an owner.
    pub(crate) fn unowned(&self) -> Vec<String> {
        Merge::new(STATES.iter().map(|&s| self.unowned.set(s).range(..)))
            .map(|(_, _, id)| id.to_string())
            .collect()
    }

    /// The running sandboxes whose end time is at or before `now_ms`, then those with an idle timeout
    /// (each once): what the reaper must look at, and nothing else.
    pub(crate) fn due(&self, now_ms: u64) -> Vec<String> {
        let end = match now_ms.checked_add(1) {
            Some(next) => Bound::Excluded((next, Arc::<str>::from(""))),
            None => Bound::Unbounded,
        };
        let mut due: Vec<String> = self
            .running_by_end
            .range((Bound::Unbounded, end))
            .map(|(_, id)| id.to_string())
            .collect();
        let seen: HashSet<&str> = due.iter().map(String::as_str).collect();
        let idle: Vec<String> = self
            .idle_watch
            .iter()
            .filter(|id| !seen.contains(id.as_ref()))
            .map(|id| id.to_string())
            .collect();
        due.extend(idle);
        due
    }

    /// One page of the sandboxes matching `query`, after `after`, at most `limit` of them. It walks the
    /// smallest ordered set that every match must be in — the query's states (of its owner, when it
    /// has one) or one of its metadata pairs — from the cursor on, checking each candidate against
    /// every filter, and stops at the first `limit + 1` matches.
    pub(crate) fn list(&self, query: &ListQuery, after: Option<Key>, limit: usize) -> IndexPage {
        let empty = IndexPage {
            items: Vec::new(),
            next: None,
        };
        let start = match after {
            None => Bound::Unbounded,
            Some((created, sequence)) => match sequence.checked_add(1) {
                // The first key after every key equal to the cursor, whatever its id.
                Some(next) => Bound::Included((created, next, Arc::<str>::from(""))),
                None => match created.checked_add(1) {
                    Some(next) => Bound::Included((next, 0, Arc::<str>::from(""))),
                    None => return empty,
                },
            },
        };
        let by_state = match query.owner.as_deref() {
            Some(owner) => match self.by_owner.get(owner) {
                Some(sets) => sets,
                None => return empty,
            },
            None => &self.by_state,
        };
        let states = query::listed_states(query);
        let mut best: Vec<&BTreeSet<OrderKey>> = states.iter().map(|&s| by_state.set(s)).collect();
        let mut best_len: usize = best.iter().map(|s| s.len()).sum();
        for (k, v) in &query.metadata {
            let Some(set) = self
                .by_metadata
                .get(k.as_str())
                .and_then(|values| values.get(v.as_str()))
            else {
                return empty;
            };
            if set.len() < best_len {
                best_len = set.len();
                best = vec![set];
            }
        }
        let candidates = Merge::new(
            best.into_iter()
                .map(|set| set.range((start.clone(), Bound::Unbounded))),
        );
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        for (_, _, id) in candidates {
            let Some(entry) = self.entries.get(id) else {
                continue;
            };
            if !entry.matches(query) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            last = Some((entry.created_at_ms, entry.sequence));
            items.push(entry.info());
        }
        IndexPage {
            items,
            next: if more { last } else { None },
        }
    }
}

/// The union of a few ordered iterators (one per state, at most five), in order.
struct Merge<'a, I: Iterator<Item = &'a OrderKey>> {
    heads: Vec<std::iter::Peekable<I>>,
}

impl<'a, I: Iterator<Item = &'a OrderKey>> Merge<'a, I> {
    fn new(iterators: impl IntoIterator<Item = I>) -> Self {
        Self {
            heads: iterators.into_iter().map(Iterator::peekable).collect(),
        }
    }
}

impl<'a, I: Iterator<Item = &'a OrderKey>> Iterator for Merge<'a, I> {
    type Item = &'a OrderKey;

    fn next(&mut self) -> Option<Self::Item> {
        let mut smallest: Option<(usize, &'a OrderKey)> = None;
        for (i, head) in self.heads.iter_mut().enumerate() {
            if let Some(&key) = head.peek()
                && smallest.is_none_or(|(_, best)| key < best)
            {
                smallest = Some((i, key));
            }
        }
        let (i, _) = smallest?;
        self.heads[i].next()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    /// A small deterministic generator (splitmix64).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }
    }

    fn record(rng: &mut Rng, n: u64) -> SandboxRecord {
        let mut metadata = BTreeMap::new();
        if rng.below(3) > 0 {
            metadata.insert("user".to_owned(), format!("u{}", rng.below(4)));
        }
        if rng.below(2) == 0 {
            metadata.insert("team".to_owned(), format!("t{}", rng.below(2)));
        }
        SandboxRecord {
            id: format!("{n:025}"),
            template: "base".into(),
            template_sha256: "ab".repeat(32),
            metadata,
            envs: BTreeMap::from([("E".to_owned(), n.to_string())]),
            // Few distinct times, so ties on the time are ordered by the sequence.
            created_at_ms: rng.below(20),
            started_at_ms: n,
            end_at_ms: rng.below(100),
            timeout_ms: 5,
            state: STATES[rng.below(5) as usize],
            lifecycle: LifecyclePolicy {
                idle_timeout: (rng.below(8) == 0).then_some(Duration::from_secs(1)),
                ..LifecyclePolicy::default()
            },
            sequence: n,
            owner: match rng.below(3) {
                0 => None,
                n => Some(format!("owner{n}")),
            },
            mounts: Vec::new(),
            pause_mode: if rng.below(2) == 0 {
                PauseMode::Full
            } else {
                PauseMode::Filesystem
            },
            network: None,
        }
    }

    /// What `Manager::list` did before the index: filter everything, sort, cut.
    fn naive(
        all: &BTreeMap<String, SandboxRecord>,
        query: &ListQuery,
        after: Option<Key>,
        limit: usize,
    ) -> (Vec<String>, Option<Key>) {
        let mut matching: Vec<&SandboxRecord> = all
            .values()
            .filter(|r| {
                after.is_none_or(|a| query::key(r) > a)
                    && query::state_matches(query, r.state)
                    && query
                        .owner
                        .as_ref()
                        .is_none_or(|o| r.owner.as_ref() == Some(o))
                    && query
                        .metadata
                        .iter()
                        .all(|(k, v)| r.metadata.get(k) == Some(v))
            })
            .collect();
        matching.sort_by_key(|r| query::key(r));
        let more = matching.len() > limit;
        matching.truncate(limit);
        let next = if more {
            matching.last().map(|r| query::key(r))
        } else {
            None
        };
        (matching.into_iter().map(|r| r.id.clone()).collect(), next)
    }

    fn queries(rng: &mut Rng) -> ListQuery {
        let mut query = ListQuery::default();
        for state in STATES {
            if rng.below(3) == 0 {
                query.states.push(state);
            }
        }
        if rng.below(2) == 0 {
            query
                .metadata
                .insert("user".into(), format!("u{}", rng.below(5)));
        }
        if rng.below(4) == 0 {
            query
                .metadata
                .insert("team".into(), format!("t{}", rng.below(2)));
        }
        if rng.below(2) == 0 {
            query.owner = Some(format!("owner{}", rng.below(3)));
        }
        query
    }

    #[test]
    fn listing_pages_agree_with_a_full_scan_while_sandboxes_change() {
        let mut rng = Rng(7);
        let mut index = Index::default();
        let mut all = BTreeMap::new();
        for n in 0..600 {
            let r = record(&mut rng, n);
            index.insert(&r);
            all.insert(r.id.clone(), r);
        }
        let mut next_id = 600;
        for _ in 0..300 {
            let query = queries(&mut rng);
            let limit = 1 + rng.below(40) as usize;
            let mut after = None;
            loop {
                let page = index.list(&query, after, limit);
                let ids: Vec<String> = page.items.iter().map(|i| i.id.clone()).collect();
                assert_eq!(
                    (ids, page.next),
                    naive(&all, &query, after, limit),
                    "{query:?} after {after:?}"
                );
                // Changes between pages: replace, remove and add sandboxes.
                for _ in 0..3 {
                    let victim = format!("{:025}", rng.below(next_id));
                    match rng.below(3) {
                        0 => {
                            assert_eq!(index.remove(&victim), all.remove(&victim).is_some());
                        }
                        1 => {
                            if let Some(old) = all.get_mut(&victim) {
                                old.state = STATES[rng.below(5) as usize];
                                old.metadata.insert("user".into(), "u1".into());
                                index.insert(old);
                            }
                        }
                        _ => {
                            let r = record(&mut rng, next_id);
                            next_id += 1;
                            index.insert(&r);
                            all.insert(r.id.clone(), r);
                        }
                    }
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        assert_eq!(index.len(), all.len());
        for state in STATES {
            assert_eq!(
                index.count(state),
                all.values().filter(|r| r.state == state).count()
            );
        }
        for (id, r) in &all {
            assert_eq!(index.get(id).as_ref(), Some(r));
            assert_eq!(index.info(id), Some(r.info()));
        }
    }

    #[test]
    fn ties_on_the_cursor_key_are_all_skipped_as_before() {
        let mut index = Index::default();
        let mut rng = Rng(1);
        for n in 0..3 {
            let mut r = record(&mut rng, n);
            (r.created_at_ms, r.sequence, r.state, r.owner) = (5, 9, SandboxState::Paused, None);
            r.metadata.clear();
            index.insert(&r);
        }
        let query = ListQuery::default();
        assert_eq!(index.list(&query, None, 10).items.len(), 3);
        assert!(index.list(&query, Some((5, 9)), 10).items.is_empty());
        assert_eq!(index.list(&query, Some((5, 8)), 10).items.len(), 3);
        assert!(
            index
                .list(&query, Some((u64::MAX, u64::MAX)), 10)
                .items
                .is_empty()
        );
    }

    #[test]
    fn due_finds_running_sandboxes_past_their_end_and_those_with_an_idle_timeout() {
        let mut rng = Rng(3);
        let mut index = Index::default();
        let mut all = Vec::new();
        for n in 0..500 {
            let r = record(&mut rng, n);
            index.insert(&r);
            all.push(r);
        }
        // A running sandbox whose end moves later is no longer due; one that pauses is never due.
        let mut moved = all
            .iter()
            .find(|r| r.state == SandboxState::Running && r.lifecycle.idle_timeout.is_none())
            .expect("running")
            .clone();
        moved.end_at_ms = 1_000;
        index.insert(&moved);
        let mut paused = all
            .iter()
            .rev()
            .find(|r| r.state == SandboxState::Running)
            .expect("running")
            .clone();
        paused.state = SandboxState::Paused;
        index.insert(&paused);
        for r in all.iter_mut() {
            if r.id == moved.id {
                *r = moved.clone();
            }
            if r.id == paused.id {
                *r = paused.clone();
            }
        }
        let mut due = index.due(50);
        due.sort();
        let mut expected: Vec<String> = all
            .iter()
            .filter(|r| {
                r.state == SandboxState::Running
                    && (r.end_at_ms <= 50 || r.lifecycle.idle_timeout.is_some())
            })
            .map(|r| r.id.clone())
            .collect();
        expected.sort();
        assert_eq!(due, expected);
        assert!(!due.contains(&moved.id));
        assert!(index.due(u64::MAX).len() >= due.len());
    }

    #[test]
    fn ids_and_owners() {
        let mut rng = Rng(5);
        let mut index = Index::default();
        let mut all = Vec::new();
        for n in 0..200 {
            let r = record(&mut rng, n);
            index.insert(&r);
            all.push(r);
        }
        all.sort_by_key(query::key);
        let lost: Vec<String> = all
            .iter()
            .filter(|r| r.state == SandboxState::Lost)
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(index.ids_in(&[SandboxState::Lost]), lost);
        let unowned: Vec<String> = all
            .iter()
            .filter(|r| r.owner.is_none())
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(index.unowned(), unowned);
        assert_eq!(index.next_sequence(), 200);
        for r in &all {
            assert!(index.remove(&r.id));
            assert!(!index.contains(&r.id));
        }
        assert!(!index.remove("nope"));
        // Emptied, it keeps no set behind.
        assert!(index.by_owner.is_empty() && index.by_metadata.is_empty());
        assert!(index.running_by_end.is_empty() && index.idle_watch.is_empty());
    }
}
