//! The keyspace: databases split into lock-striped shards of per-slot hash maps.
//!
//! Every key lives in the map of its hash slot (`key_slot`), so "all keys of slot S",
//! "count keys in slot S" and "delete slot S" are cheap (cluster mode and migration need them).
//! The 16384 slot maps of a database are spread over [`SHARDS`] mutex-protected shards
//! (shard = slot % SHARDS): commands on different shards run in parallel on all cores.
//!
//! Commands never lock shards themselves: the dispatcher locks every shard a command's keys
//! live in (in a fixed order, so no deadlock) and hands the command a [`Locked`] view. All
//! mutations go through [`Locked`], the one place that counts dirty writes, touches WATCHed keys
//! and wakes clients blocked on a key.

use crate::value::Value;
use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use slotgate_protocol::slot::{key_slot, SLOT_COUNT};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

/// Number of lock stripes per database.
pub const SHARDS: usize = 256;
const MAPS_PER_SHARD: usize = SLOT_COUNT / SHARDS;

/// A stored key: up to [`INLINE_KEY`] bytes live inside the map's bucket itself (most keys
/// are short), longer ones in an exact-size heap copy. A lookup then compares a short key
/// without following a pointer to another cache line, and a short key costs no allocation.
#[derive(Clone)]
pub enum Key {
    /// A short key, stored in place.
    Inline {
        /// Its length.
        len: u8,
        /// Its bytes (the first `len`).
        buf: [u8; INLINE_KEY],
    },
    /// A longer key.
    Heap(Box<[u8]>),
}

/// Longest key stored in place (the enum stays 24 bytes, as a `Box<[u8]>` plus padding).
pub const INLINE_KEY: usize = 22;
const _: () = assert!(std::mem::size_of::<Key>() == 24);

impl std::ops::Deref for Key {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Key::Inline { len, buf } => &buf[..*len as usize],
            Key::Heap(b) => b,
        }
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::hash::Hash for Key {
    /// Hashes exactly as the `[u8]` it holds (so maps can be searched by `&[u8]`).
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl PartialEq for Key {
    #[inline]
    fn eq(&self, other: &Key) -> bool {
        **self == **other
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl From<&[u8]> for Key {
    #[inline]
    fn from(k: &[u8]) -> Key {
        if k.len() <= INLINE_KEY {
            let mut buf = [0u8; INLINE_KEY];
            buf[..k.len()].copy_from_slice(k);
            Key::Inline {
                len: k.len() as u8,
                buf,
            }
        } else {
            Key::Heap(k.into())
        }
    }
}

/// The map of one hash slot.
pub type KeyMap = hashbrown::HashMap<Key, Entry>;

/// A value plus its expiry and access record.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The value.
    pub value: Value,
    /// Absolute expiry in unix milliseconds; 0 means no expiry.
    pub expire_at: u64,
    /// The last access, as Redis's `robj.lru`: the LRU clock ([`lru_clock`]), or under an LFU
    /// `maxmemory-policy` the access time in minutes (16 bits) over a logarithmic access
    /// counter (8 bits). Stamped by [`Locked`] when the key is created or looked up.
    pub lru: u32,
}

impl Entry {
    /// An entry without expiry.
    pub fn new(value: Value) -> Entry {
        Entry {
            value,
            expire_at: 0,
            lru: 0,
        }
    }

    /// An entry with an expiry (unix ms, 0 for none).
    pub fn with_expiry(value: Value, expire_at: u64) -> Entry {
        Entry {
            value,
            expire_at,
            lru: 0,
        }
    }

    fn expired(&self, now: u64) -> bool {
        self.expire_at != 0 && self.expire_at <= now
    }
}

/// The LRU clock's range: 24 bits of seconds, as Redis's `LRU_CLOCK_MAX`.
pub const LRU_CLOCK_MAX: u32 = (1 << 24) - 1;
/// The access counter of a new key under an LFU policy (Redis's `LFU_INIT_VAL`).
pub const LFU_INIT_VAL: u32 = 5;

/// The LRU clock at `now_ms`: seconds, wrapping at [`LRU_CLOCK_MAX`].
pub fn lru_clock(now_ms: u64) -> u32 {
    ((now_ms / 1000) as u32) & LRU_CLOCK_MAX
}

/// Seconds since the access stamped `lru` (LRU clock), at `now_ms`.
pub fn idle_seconds(lru: u32, now_ms: u64) -> u64 {
    let clock = lru_clock(now_ms);
    let lru = lru & LRU_CLOCK_MAX;
    u64::from(if clock >= lru {
        clock - lru
    } else {
        clock + (LRU_CLOCK_MAX - lru)
    })
}

fn lfu_minutes(now_ms: u64) -> u32 {
    ((now_ms / 60_000) & 0xffff) as u32
}

/// An LFU record's counter after its decay (one step per `decay_time` minutes since its last
/// access), as Redis's `LFUDecrAndReturn`.
pub fn lfu_counter(lru: u32, now_ms: u64, decay_time: u32) -> u32 {
    let (ldt, counter) = (lru >> 8, lru & 255);
    let now = lfu_minutes(now_ms);
    let elapsed = if now >= ldt {
        now - ldt
    } else {
        65535 - ldt + now
    };
    let periods = elapsed.checked_div(decay_time).unwrap_or(0);
    counter.saturating_sub(periods)
}

/// How accesses are recorded, from `maxmemory-policy`, `lfu-log-factor` and `lfu-decay-time`.
#[derive(Default)]
pub struct AccessPolicy {
    /// An LFU policy is selected: count accesses instead of stamping times.
    pub lfu: AtomicBool,
    /// `lfu-log-factor`.
    pub lfu_log_factor: AtomicU32,
    /// `lfu-decay-time` (minutes).
    pub lfu_decay_time: AtomicU32,
}

impl AccessPolicy {
    /// The record of an access at `now_ms` to an entry whose record was `old` (`None`: new).
    fn stamp(&self, old: Option<u32>, now_ms: u64) -> u32 {
        if !self.lfu.load(Ordering::Relaxed) {
            return lru_clock(now_ms);
        }
        let counter = match old {
            None => LFU_INIT_VAL,
            Some(old) => {
                let c = lfu_counter(old, now_ms, self.lfu_decay_time.load(Ordering::Relaxed));
                // Redis's LFULogIncr: the higher the counter, the less likely an increment.
                let base = f64::from(c.saturating_sub(LFU_INIT_VAL));
                let factor = f64::from(self.lfu_log_factor.load(Ordering::Relaxed));
                if c < 255 && rand::random::<f64>() < 1.0 / (base * factor + 1.0) {
                    c + 1
                } else {
                    c
                }
            }
        };
        (lfu_minutes(now_ms) << 8) | counter
    }
}

/// A client blocked on one or more keys (BLPOP and friends).
#[derive(Debug, Default)]
pub struct Waiter {
    /// Signalled when a key the client waits on may have become ready.
    pub notify: tokio::sync::Notify,
}

/// A WATCH flag: set when a watched key is modified.
pub type WatchFlag = Arc<AtomicBool>;

/// One lock stripe: the slot maps of SLOT_COUNT / SHARDS slots plus bookkeeping.
#[derive(Default)]
pub struct Shard {
    maps: Vec<KeyMap>,
    /// Number of keys with an expiry in this shard.
    pub expires: usize,
    /// Read lookups that found their key here (INFO keyspace_hits sums them): counted on
    /// the shard the command holds anyway, so the hot path touches no shared counter.
    pub hits: u64,
    /// Read lookups that did not (keyspace_misses).
    pub misses: u64,
    watched: hashbrown::HashMap<Key, Vec<WatchFlag>>,
    blocked: hashbrown::HashMap<Key, VecDeque<Arc<Waiter>>>,
}

/// Gives back a slot map's memory after keys left it. Most of the 16384 maps hold a handful
/// of keys whose number swings with every write and eviction; a table that kept its largest
/// size would cost several buckets per key (Redis's one big dict does not see such swings).
/// So an empty map frees its table, and a map down to a quarter of its capacity halves it
/// (rehashing a few keys; it grows again only at seven eighths).
fn shrink_after_removal(m: &mut KeyMap) {
    if m.is_empty() {
        if m.capacity() > 0 {
            *m = KeyMap::default();
        }
    } else if m.len() * 4 < m.capacity() {
        m.shrink_to(m.len() * 2);
    }
}

fn map_index(slot: u16) -> usize {
    slot as usize / SHARDS
}

/// The shard a slot belongs to.
pub fn shard_of_slot(slot: u16) -> usize {
    slot as usize % SHARDS
}

impl Shard {
    fn new() -> Shard {
        // The slot maps are made on the first write: a database never written (15 of the 16
        // in most deployments) costs a few bytes per shard, not 2 KB.
        Shard::default()
    }

    /// The map of map index `idx`, created with its siblings on first use.
    fn map_mut(&mut self, idx: usize) -> &mut KeyMap {
        if self.maps.is_empty() {
            self.maps.resize_with(MAPS_PER_SHARD, KeyMap::default);
        }
        &mut self.maps[idx]
    }

    /// Number of keys in this shard (including not-yet-collected expired ones).
    pub fn len(&self) -> usize {
        self.maps.iter().map(|m| m.len()).sum()
    }

    /// True when the shard holds no key.
    pub fn is_empty(&self) -> bool {
        self.maps.iter().all(|m| m.is_empty())
    }

    /// The slot maps of this shard with their slot numbers.
    pub fn slot_maps(&self, shard_idx: usize) -> impl Iterator<Item = (u16, &KeyMap)> {
        self.maps
            .iter()
            .enumerate()
            .map(move |(i, m)| ((i * SHARDS + shard_idx) as u16, m))
    }

    /// The entry of `key` (which must belong to this shard), expired or not.
    pub fn entry(&self, key: &[u8]) -> Option<&Entry> {
        self.maps.get(map_index(key_slot(key)))?.get(key)
    }

    /// Visits up to `n` entries for eviction's sampling: from map `start` (modulo the maps),
    /// `skip` entries into it (modulo its length), on through the following maps.
    /// `volatile`: only entries with an expiry.
    pub fn sample(
        &self,
        start: usize,
        skip: usize,
        volatile: bool,
        n: usize,
        mut visit: impl FnMut(&Key, &Entry),
    ) {
        let maps = self.maps.len();
        let mut seen = 0;
        for i in 0..maps {
            let m = &self.maps[(start.wrapping_add(i)) % maps];
            if m.is_empty() {
                continue;
            }
            let skip = if i == 0 { skip % m.len() } else { 0 };
            for (k, e) in m.iter().skip(skip) {
                if volatile && e.expire_at == 0 {
                    continue;
                }
                visit(k, e);
                seen += 1;
                if seen >= n {
                    return;
                }
            }
        }
    }

    /// The map of `slot` (which must belong to this shard); None while the shard was never
    /// written.
    pub fn slot_map(&self, slot: u16) -> Option<&KeyMap> {
        self.maps.get(map_index(slot))
    }

    fn touch(&mut self, key: &[u8]) {
        if !self.watched.is_empty() {
            if let Some(flags) = self.watched.get(key) {
                for f in flags {
                    f.store(true, Ordering::Release);
                }
            }
        }
        if !self.blocked.is_empty() {
            if let Some(q) = self.blocked.get(key) {
                if let Some(w) = q.front() {
                    w.notify.notify_one();
                }
            }
        }
    }

    /// Deletes the expired keys of this shard; returns how many were removed.
    pub fn purge_expired(&mut self, now: u64) -> usize {
        let mut removed = Vec::new();
        self.purge_expired_into(now, &mut removed);
        removed.len()
    }

    /// Deletes the expired keys of this shard, appending them to `removed` (a master feeding
    /// replicas propagates their DELs).
    pub fn purge_expired_into(&mut self, now: u64, removed: &mut Vec<Key>) {
        if self.expires == 0 {
            return;
        }
        let before = removed.len();
        for m in &mut self.maps {
            m.retain(|k, e| {
                if e.expired(now) {
                    removed.push(k.clone());
                    false
                } else {
                    true
                }
            });
            shrink_after_removal(m);
        }
        let n = removed.len() - before;
        self.expires -= n.min(self.expires);
        for k in &removed[before..] {
            self.touch(k);
        }
    }

    /// Removes every key (FLUSHDB); touches watched keys.
    pub fn clear(&mut self) -> usize {
        self.clear_detached().0
    }

    /// Removes every key as [`Shard::clear`], handing back the old per-slot maps (to be
    /// freed elsewhere) with the number of keys they hold.
    pub fn clear_detached(&mut self) -> (usize, Vec<KeyMap>) {
        let n = self.len();
        if !self.watched.is_empty() {
            // Only keys that exist are touched, as Redis does.
            for (k, flags) in &self.watched {
                let slot = key_slot(k);
                if self
                    .maps
                    .get(map_index(slot))
                    .is_some_and(|m| m.contains_key(&k[..]))
                {
                    for f in flags {
                        f.store(true, Ordering::Release);
                    }
                }
            }
        }
        let old = self.maps.iter_mut().map(std::mem::take).collect();
        self.expires = 0;
        (n, old)
    }
}

/// One logical database (SELECT n).
pub struct Db {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Db {
    fn default() -> Self {
        Db::new()
    }
}

impl Db {
    /// An empty database.
    pub fn new() -> Db {
        Db {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
        }
    }

    /// Locks one shard.
    pub fn lock_shard(&self, idx: usize) -> MutexGuard<'_, Shard> {
        self.shards[idx].lock()
    }

    /// Number of keys (DBSIZE), locking shard by shard.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// True when the database holds no key.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.lock().is_empty())
    }

    /// Number of keys with an expiry.
    pub fn expires(&self) -> usize {
        self.shards.iter().map(|s| s.lock().expires).sum()
    }
}

/// All databases of a server; database 0 is created at once, the others on first use.
pub struct Keyspace {
    dbs: Box<[OnceLock<Db>]>,
    /// How key accesses are recorded (LRU clock or LFU counter).
    pub access: AccessPolicy,
}

impl Keyspace {
    /// A keyspace with `n` databases.
    pub fn new(n: usize) -> Keyspace {
        let dbs: Box<[OnceLock<Db>]> = (0..n.max(1)).map(|_| OnceLock::new()).collect();
        let _ = dbs[0].get_or_init(Db::new);
        Keyspace {
            dbs,
            access: AccessPolicy::default(),
        }
    }

    /// Number of databases.
    pub fn count(&self) -> usize {
        self.dbs.len()
    }

    /// Database `i` (created on first use). Panics never: `i` is checked by SELECT.
    pub fn db(&self, i: usize) -> &Db {
        self.dbs[i.min(self.dbs.len() - 1)].get_or_init(Db::new)
    }

    /// Wakes every client blocked on a key (BLPOP and friends) so each re-runs its command:
    /// after this node lost slots or became a replica they get MOVED/READONLY instead of
    /// waiting forever; the others block again.
    pub fn wake_all_blocked(&self) {
        for d in 0..self.count() {
            let Some(db) = self.existing(d) else {
                continue;
            };
            for i in 0..SHARDS {
                let shard = db.lock_shard(i);
                for q in shard.blocked.values() {
                    for w in q {
                        w.notify.notify_one();
                    }
                }
            }
        }
    }

    /// Database `i` only if it was ever used.
    pub fn existing(&self, i: usize) -> Option<&Db> {
        self.dbs.get(i).and_then(|d| d.get())
    }

    /// keyspace_hits and keyspace_misses: the shards' counters summed.
    pub fn lookup_stats(&self) -> (u64, u64) {
        let (mut hits, mut misses) = (0u64, 0u64);
        for d in 0..self.count() {
            let Some(db) = self.existing(d) else { continue };
            for i in 0..SHARDS {
                let s = db.lock_shard(i);
                hits = hits.wrapping_add(s.hits);
                misses = misses.wrapping_add(s.misses);
            }
        }
        (hits, misses)
    }

    /// Zeroes keyspace_hits and keyspace_misses (CONFIG RESETSTAT).
    pub fn reset_lookup_stats(&self) {
        for d in 0..self.count() {
            let Some(db) = self.existing(d) else { continue };
            for i in 0..SHARDS {
                let mut s = db.lock_shard(i);
                s.hits = 0;
                s.misses = 0;
            }
        }
    }
}

/// Lock identity: database index and shard index, ordered to avoid deadlocks.
type LockId = (u16, u16);

/// The shards a command holds, and the keyspace operations it may perform on them.
pub struct Locked<'a> {
    ks: &'a Keyspace,
    db: usize,
    guards: SmallVec<[(LockId, MutexGuard<'a, Shard>); 2]>,
    /// Unix milliseconds at lock time (expiry decisions within a command use one clock).
    pub now: u64,
    /// Number of keyspace changes made through this view.
    pub dirty: u64,
    /// True on replicas: expired keys are hidden but not deleted.
    pub no_delete_expired: bool,
    /// True for the replication link on a replica: expiry is the master's business, keys
    /// exist until it sends their DEL.
    pub ignore_expired: bool,
    /// When set (a master feeding replicas), keys deleted by lazy expiry are collected in
    /// [`Locked::expired_keys`] so their DELs can be propagated.
    pub track_expired: bool,
    /// Keys lazily expired by this view (only when `track_expired`).
    pub expired_keys: Vec<Key>,
    /// Keyspace notification classes on ([`crate::notify`]); 0 records nothing.
    pub notify: u32,
    /// Keyspace events recorded by the command, in order, published when it is done.
    /// (Boxed: most commands record none, and an absent box costs nothing to drop.)
    pub events: Option<Box<Vec<crate::notify::Event>>>,
    /// Count keyspace hits and misses of lookups (set for read-only commands, as Redis
    /// counts its read lookups) in the shards' counters.
    pub read_stats: bool,
    /// With `read_stats`, only these key arguments (address, length) are counted when any
    /// are given: the keys a write command reads (GETDEL's key, SUNIONSTORE's sources...).
    pub stat_only: Option<Box<KeyIds<8>>>,
    /// The key arguments (address, length) counted already: a command looking at one key
    /// twice counts once.
    counted: KeyIds<4>,
    /// Slots of the request's own key arguments (address, length, slot), computed once by
    /// the dispatcher: commands touch the same key several times and CRC16 showed in profiles.
    /// Only immutable request bytes are recorded, so an address can never mean another key.
    known_slots: SmallVec<[(usize, usize, u16); 4]>,
    /// The key argument (address, length) whose access was recorded last: a command that
    /// checks a key's type and then writes it is one access, as in Redis.
    recorded: Option<(usize, usize)>,
}

/// A few key arguments of one command, as (address, length), kept inline (no drop, no heap).
#[derive(Clone, Copy)]
pub struct KeyIds<const N: usize> {
    n: u8,
    /// Set when more than N were added (the set is then incomplete).
    overflow: bool,
    ids: [(usize, usize); N],
}

impl<const N: usize> Default for KeyIds<N> {
    fn default() -> Self {
        KeyIds {
            n: 0,
            overflow: false,
            ids: [(0, 0); N],
        }
    }
}

impl<const N: usize> KeyIds<N> {
    /// Adds `id`; false when it was there already.
    #[inline]
    fn insert(&mut self, id: (usize, usize)) -> bool {
        let n = self.n as usize;
        if self.ids[..n].contains(&id) {
            return false;
        }
        if n < N {
            self.ids[n] = id;
            self.n += 1;
        } else {
            self.overflow = true;
        }
        true
    }

    #[inline]
    fn contains(&self, id: &(usize, usize)) -> bool {
        self.ids[..self.n as usize].contains(id)
    }
}

/// Error: the key's value has another type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongType;

impl<'a> Locked<'a> {
    /// A view holding no lock yet, on database `db`.
    pub fn new(ks: &'a Keyspace, db: usize, now: u64) -> Locked<'a> {
        Locked {
            ks,
            db,
            guards: SmallVec::new(),
            now,
            dirty: 0,
            no_delete_expired: false,
            ignore_expired: false,
            track_expired: false,
            expired_keys: Vec::new(),
            notify: 0,
            events: None,
            read_stats: false,
            stat_only: None,
            counted: KeyIds::default(),
            known_slots: SmallVec::new(),
            recorded: None,
        }
    }

    /// The database this view operates on.
    pub fn db_index(&self) -> usize {
        self.db
    }

    /// Records keyspace event `name` of `class` on `key` in this view's database (when that
    /// class is on).
    #[inline]
    pub fn notify(&mut self, class: u32, name: &'static str, key: &[u8]) {
        if self.notify & class != 0 {
            self.record_event(class, name, key, self.db);
        }
    }

    /// Records keyspace event `name` of `class` on `key` in database `db`.
    #[inline]
    pub fn notify_db(&mut self, class: u32, name: &'static str, key: &[u8], db: usize) {
        if self.notify & class != 0 {
            self.record_event(class, name, key, db);
        }
    }

    #[cold]
    #[inline(never)]
    fn record_event(&mut self, class: u32, name: &'static str, key: &[u8], db: usize) {
        self.events
            .get_or_insert_with(Box::default)
            .push(crate::notify::Event {
                class,
                name,
                key: Bytes::copy_from_slice(key),
                db,
            });
    }

    /// Switches the current database (inside MULTI after SELECT); held locks are kept.
    pub fn set_db(&mut self, db: usize) {
        self.db = db;
    }

    /// Locks the shards of `keys` in the current database, in deadlock-free order.
    pub fn lock_keys<K: AsRef<[u8]>>(&mut self, keys: impl IntoIterator<Item = K>) {
        let db = self.db as u16;
        let mut ids: SmallVec<[LockId; 4]> = keys
            .into_iter()
            .map(|k| (db, shard_of_slot(key_slot(k.as_ref())) as u16))
            .collect();
        self.lock_ids(&mut ids);
    }

    /// Locks the shards of the request's key arguments (`keys` must be slices of the request,
    /// which stay alive and unchanged while the command runs) and remembers their slots.
    pub fn lock_request_keys<'k>(&mut self, keys: impl IntoIterator<Item = &'k [u8]>) {
        let db = self.db as u16;
        let mut ids: SmallVec<[LockId; 4]> = SmallVec::new();
        for k in keys {
            let slot = key_slot(k);
            self.known_slots.push((k.as_ptr() as usize, k.len(), slot));
            ids.push((db, shard_of_slot(slot) as u16));
        }
        self.lock_ids(&mut ids);
    }

    /// Locks every shard of the current database (db-wide commands, EXEC).
    pub fn lock_all(&mut self) {
        let db = self.db as u16;
        let mut ids: SmallVec<[LockId; 4]> = (0..SHARDS as u16).map(|s| (db, s)).collect();
        self.lock_ids(&mut ids);
    }

    /// Locks every shard of every database that exists (FLUSHALL).
    pub fn lock_everything(&mut self) {
        let mut ids: SmallVec<[LockId; 4]> = SmallVec::new();
        for d in 0..self.ks.count() {
            if self.ks.existing(d).is_some() {
                ids.extend((0..SHARDS as u16).map(|s| (d as u16, s)));
            }
        }
        self.lock_ids(&mut ids);
    }

    fn lock_ids(&mut self, ids: &mut SmallVec<[LockId; 4]>) {
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|id| !self.guards.iter().any(|(g, _)| g == id));
        if ids.is_empty() {
            return;
        }
        // Adding locks after some are held could invert the order; if any new id sorts below
        // a held one, drop everything and re-acquire the union in order.
        let max_held = self.guards.iter().map(|(g, _)| *g).max();
        if let Some(max_held) = max_held {
            if ids.iter().any(|id| *id < max_held) {
                let mut all: SmallVec<[LockId; 4]> = self.guards.iter().map(|(g, _)| *g).collect();
                all.extend(ids.iter().copied());
                all.sort_unstable();
                self.guards.clear();
                for id in all {
                    let g = self.ks.db(id.0 as usize).lock_shard(id.1 as usize);
                    self.guards.push((id, g));
                }
                return;
            }
        }
        for id in ids.iter() {
            let g = self.ks.db(id.0 as usize).lock_shard(id.1 as usize);
            self.guards.push((*id, g));
        }
    }

    /// Releases every lock (a blocked client waits without holding any).
    pub fn unlock(&mut self) {
        self.guards.clear();
    }

    fn ensure_locked(&mut self, id: LockId) -> usize {
        if let Some(pos) = self.guards.iter().position(|(g, _)| *g == id) {
            return pos;
        }
        // The dispatcher locks all keys up front; a command touching an undeclared key
        // (e.g. SORT ... BY/GET patterns, MOVE) gets its shard locked here.
        let mut ids: SmallVec<[LockId; 4]> = SmallVec::new();
        ids.push(id);
        self.lock_ids(&mut ids);
        self.guards
            .iter()
            .position(|(g, _)| *g == id)
            .unwrap_or(self.guards.len() - 1)
    }

    /// Shard `idx` of the current database, locked now if it is not held yet: SCAN locks
    /// only the shards of the slots it visits instead of the whole database.
    pub fn shard(&mut self, idx: usize) -> &Shard {
        let pos = self.ensure_locked((self.db as u16, idx as u16));
        &self.guards[pos].1
    }

    fn shard_for(&mut self, key: &[u8]) -> (&mut Shard, u16) {
        let (ptr, len) = (key.as_ptr() as usize, key.len());
        let slot = match self.known_slots.iter().find(|k| k.0 == ptr && k.1 == len) {
            Some(k) => k.2,
            None => key_slot(key),
        };
        let id = (self.db as u16, shard_of_slot(slot) as u16);
        let pos = self.ensure_locked(id);
        (&mut self.guards[pos].1, slot)
    }

    /// Finds the key's shard and map (one slot computation) and applies lazy expiry, with a
    /// fast path for shards holding no key with a TTL. Returns (shard, map index, expired).
    fn locate(&mut self, key: &[u8]) -> (&mut Shard, usize, bool) {
        let (ptr, len) = (key.as_ptr() as usize, key.len());
        let slot = match self.known_slots.iter().find(|k| k.0 == ptr && k.1 == len) {
            Some(k) => k.2,
            None => key_slot(key),
        };
        let pos = self.ensure_locked((self.db as u16, shard_of_slot(slot) as u16));
        let idx = map_index(slot);
        let mut expired = false;
        if self.guards[pos].1.expires > 0 && !self.ignore_expired {
            let now = self.now;
            let shard = &mut *self.guards[pos].1;
            expired =
                matches!(shard.maps.get(idx).and_then(|m| m.get(key)), Some(e) if e.expired(now));
            if expired && !self.no_delete_expired {
                let m = shard.map_mut(idx);
                let dead = m.remove_entry(key);
                shrink_after_removal(m);
                shard.expires -= 1;
                shard.touch(key);
                if self.notify & crate::notify::EXPIRED != 0 {
                    self.events
                        .get_or_insert_with(Box::default)
                        .push(crate::notify::Event {
                            class: crate::notify::EXPIRED,
                            name: "expired",
                            key: Bytes::copy_from_slice(key),
                            db: self.db,
                        });
                }
                if self.track_expired {
                    if let Some((k, _)) = dead {
                        self.expired_keys.push(k);
                    }
                }
            }
        }
        (&mut self.guards[pos].1, idx, expired)
    }

    /// Whether to record an access to `key` now (not twice in a row for one argument), and
    /// notes it.
    fn first_access(&mut self, key: &[u8]) -> bool {
        let id = Some((key.as_ptr() as usize, key.len()));
        if self.recorded == id {
            return false;
        }
        self.recorded = id;
        true
    }

    /// Reads a key (lazily expiring it) and records the access (LRU/LFU).
    pub fn get(&mut self, key: &[u8]) -> Option<&Entry> {
        let count = self.read_stats && self.first_count(key);
        let (ks, now) = (self.ks, self.now);
        let record = self.first_access(key);
        let (shard, idx, expired) = self.locate(key);
        let found = if expired {
            None
        } else {
            shard.maps.get_mut(idx).and_then(|m| m.get_mut(key))
        };
        let Some(e) = found else {
            shard.misses += count as u64;
            return None;
        };
        shard.hits += count as u64;
        if record {
            e.lru = ks.access.stamp(Some(e.lru), now);
        }
        Some(e)
    }

    /// Reads a key (lazily expiring it) without recording an access, as Redis's
    /// `LOOKUP_NOTOUCH` (TYPE, EXISTS, TTL, OBJECT).
    pub fn peek(&mut self, key: &[u8]) -> Option<&Entry> {
        let count = self.read_stats && self.first_count(key);
        let (shard, idx, expired) = self.locate(key);
        let found = if expired {
            None
        } else {
            shard.maps.get(idx).and_then(|m| m.get(key))
        };
        if found.is_some() {
            shard.hits += count as u64;
        } else {
            shard.misses += count as u64;
        }
        found
    }

    /// Whether a read lookup of `key` is counted (once per key argument); records the
    /// `keymiss` event of a missing key when that class is on.
    #[inline]
    fn first_count(&mut self, key: &[u8]) -> bool {
        let id = (key.as_ptr() as usize, key.len());
        if !self.counted.insert(id) {
            return false;
        }
        // (Past its capacity the list is incomplete: then every lookup counts.)
        if let Some(only) = &self.stat_only {
            if !only.overflow && !only.contains(&id) {
                return false;
            }
        }
        if self.notify & crate::notify::KEY_MISS != 0 {
            self.notify_key_miss(key);
        }
        true
    }

    #[cold]
    #[inline(never)]
    fn notify_key_miss(&mut self, key: &[u8]) {
        self.read_stats = false;
        let found = self.exists(key);
        self.read_stats = true;
        if !found {
            self.notify(crate::notify::KEY_MISS, "keymiss", key);
        }
    }

    /// True when the key exists (not an access).
    pub fn exists(&mut self, key: &[u8]) -> bool {
        self.peek(key).is_some()
    }

    /// Reads a key for modification: counts a dirty write, touches WATCHers, wakes waiters.
    /// Check the type with [`Locked::get`] first if the command may fail without modifying.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.dirty += 1;
        let (ks, now) = (self.ks, self.now);
        let record = self.first_access(key);
        let (shard, idx, expired) = self.locate(key);
        if expired {
            return None;
        }
        if (!shard.watched.is_empty() || !shard.blocked.is_empty())
            && shard.maps.get(idx).is_some_and(|m| m.contains_key(key))
        {
            shard.touch(key);
        }
        let e = shard.maps.get_mut(idx)?.get_mut(key)?;
        if record {
            e.lru = ks.access.stamp(Some(e.lru), now);
        }
        Some(e)
    }

    /// Stores `value` under `key`, replacing any old value; the expiry is cleared unless
    /// `keep_ttl`. Returns the previous entry.
    pub fn set(&mut self, key: &[u8], value: Value, keep_ttl: bool) -> Option<Entry> {
        self.notify_if_new(key);
        self.dirty += 1;
        let (ks, now) = (self.ks, self.now);
        let (shard, idx, _) = self.locate(key);
        shard.touch(key);
        let m = shard.map_mut(idx);
        // A new value is a new object in Redis: its record starts over.
        let lru = ks.access.stamp(None, now);
        if let Some(e) = m.get_mut(key) {
            let old_expire = e.expire_at;
            let new_expire = if keep_ttl { old_expire } else { 0 };
            let old = std::mem::replace(
                e,
                Entry {
                    value,
                    expire_at: new_expire,
                    lru,
                },
            );
            if old_expire != 0 && new_expire == 0 {
                shard.expires = shard.expires.saturating_sub(1);
            }
            Some(old)
        } else {
            m.insert(
                key.into(),
                Entry {
                    value,
                    expire_at: 0,
                    lru,
                },
            );
            None
        }
    }

    /// Sets a key's access record as RESTORE's IDLETIME and FREQ do (Redis's
    /// `objectSetLRUOrLFU`): `freq` under an LFU policy, `idle_secs` otherwise.
    pub fn set_access(&mut self, key: &[u8], idle_secs: Option<u64>, freq: Option<u32>) {
        let (ks, now) = (self.ks, self.now);
        let (shard, idx, _) = self.locate(key);
        let Some(e) = shard.maps.get_mut(idx).and_then(|m| m.get_mut(key)) else {
            return;
        };
        if ks.access.lfu.load(Ordering::Relaxed) {
            if let Some(f) = freq {
                e.lru = (lfu_minutes(now) << 8) | f.min(255);
            }
        } else if let Some(idle) = idle_secs {
            let idle = i64::try_from(idle).unwrap_or(i64::MAX);
            let mut at = i64::from(lru_clock(now)).saturating_sub(idle);
            if at < 0 {
                at += i64::from(LRU_CLOCK_MAX);
            }
            e.lru = (at.rem_euclid(1 << 24)) as u32;
        }
    }

    /// Stores a full entry (value and expiry), replacing any old one.
    pub fn set_entry(&mut self, key: &[u8], entry: Entry) -> Option<Entry> {
        let expire_at = entry.expire_at;
        let old = self.set(key, entry.value, false);
        if expire_at != 0 {
            self.set_expire(key, expire_at);
        }
        old
    }

    /// Returns the entry for `key`, creating it with `make()` if absent. Counts as a write.
    pub fn get_or_insert_with(&mut self, key: &[u8], make: impl FnOnce() -> Value) -> &mut Entry {
        self.notify_if_new(key);
        self.dirty += 1;
        let (ks, now) = (self.ks, self.now);
        let record = self.first_access(key);
        let (shard, idx, _) = self.locate(key);
        shard.touch(key);
        // entry_ref builds an owned key only when the key is new.
        let mut new = false;
        let e = shard.map_mut(idx).entry_ref(key).or_insert_with(|| {
            new = true;
            Entry::new(make())
        });
        if new || record {
            e.lru = ks.access.stamp((!new).then_some(e.lru), now);
        }
        e
    }

    /// Sets which lookups count as keyspace hits/misses for the next command: all of them
    /// (`all`, a read-only command), or those of the key arguments `only` (a write command
    /// that reads some keys), or none.
    #[inline]
    pub fn count_reads(&mut self, all: bool, only: &[Bytes]) {
        self.counted.n = 0;
        self.stat_only = None;
        if !only.is_empty() {
            let mut ids = KeyIds::default();
            for k in only {
                ids.insert((k.as_ptr() as usize, k.len()));
            }
            self.stat_only = Some(Box::new(ids));
        }
        self.read_stats = all || self.stat_only.is_some();
    }

    /// Records the `new` event (Redis's dbAdd) when `key` is about to be created.
    #[inline]
    fn notify_if_new(&mut self, key: &[u8]) {
        if self.notify & crate::notify::NEW != 0 {
            self.notify_new_slow(key);
        }
    }

    #[cold]
    #[inline(never)]
    fn notify_new_slow(&mut self, key: &[u8]) {
        if !self.exists(key) {
            self.notify(crate::notify::NEW, "new", key);
        }
    }

    /// Deletes a key; returns its entry if it existed (and was not expired).
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let (shard, idx, expired) = self.locate(key);
        if expired {
            return None;
        }
        let m = shard.maps.get_mut(idx)?;
        let old = m.remove(key)?;
        shrink_after_removal(m);
        if old.expire_at != 0 {
            shard.expires = shard.expires.saturating_sub(1);
        }
        shard.touch(key);
        self.dirty += 1;
        Some(old)
    }

    /// Deletes `key` if it holds an empty collection (after a pop/remove).
    /// Records the generic `del` event when it does (Redis deletes emptied collections so).
    pub fn remove_if_empty(&mut self, key: &[u8]) -> bool {
        let empty = matches!(self.get(key), Some(e) if e.value.is_empty_collection());
        if empty && self.remove(key).is_some() {
            self.notify(crate::notify::GENERIC, "del", key);
            return true;
        }
        false
    }

    /// Sets the absolute expiry of an existing key (0 removes it). Returns false if missing.
    pub fn set_expire(&mut self, key: &[u8], at: u64) -> bool {
        let (shard, idx, expired) = self.locate(key);
        if expired {
            return false;
        }
        let Some(e) = shard.maps.get_mut(idx).and_then(|m| m.get_mut(key)) else {
            return false;
        };
        let was = e.expire_at;
        e.expire_at = at;
        if was == 0 && at != 0 {
            shard.expires += 1;
        } else if was != 0 && at == 0 {
            shard.expires = shard.expires.saturating_sub(1);
        }
        shard.touch(key);
        self.dirty += 1;
        true
    }

    /// Registers a WATCH on `key`.
    pub fn watch(&mut self, key: &[u8], flag: WatchFlag) {
        let (shard, _) = self.shard_for(key);
        shard.watched.entry(key.into()).or_default().push(flag);
    }

    /// Removes a WATCH registration.
    pub fn unwatch(&mut self, key: &[u8], flag: &WatchFlag) {
        let (shard, _) = self.shard_for(key);
        if let Some(v) = shard.watched.get_mut(key) {
            v.retain(|f| !Arc::ptr_eq(f, flag));
            if v.is_empty() {
                shard.watched.remove(key);
            }
        }
    }

    /// Queues `waiter` on `key` (FIFO) unless it is already queued there.
    pub fn block_on(&mut self, key: &[u8], waiter: &Arc<Waiter>) {
        let (shard, _) = self.shard_for(key);
        let q = shard.blocked.entry(key.into()).or_default();
        if !q.iter().any(|w| Arc::ptr_eq(w, waiter)) {
            q.push_back(waiter.clone());
        }
    }

    /// Removes `waiter` from `key`'s queue; if the key still holds data, wakes the next waiter.
    pub fn unblock(&mut self, key: &[u8], waiter: &Arc<Waiter>) {
        let ready = self
            .get(key)
            .map(|e| !e.value.is_empty_collection())
            .unwrap_or(false);
        let (shard, _) = self.shard_for(key);
        if let Some(q) = shard.blocked.get_mut(key) {
            q.retain(|w| !Arc::ptr_eq(w, waiter));
            if q.is_empty() {
                shard.blocked.remove(key);
            } else if ready {
                if let Some(w) = q.front() {
                    w.notify.notify_one();
                }
            }
        }
    }

    /// True when `waiter` is the first in line on `key` (or nobody else waits there).
    pub fn first_in_line(&mut self, key: &[u8], waiter: &Arc<Waiter>) -> bool {
        let (shard, _) = self.shard_for(key);
        match shard.blocked.get(key).and_then(|q| q.front()) {
            Some(w) => Arc::ptr_eq(w, waiter),
            None => true,
        }
    }

    /// The held shards of the current database with their indexes (db-wide commands).
    pub fn shards_mut(&mut self) -> impl Iterator<Item = (usize, &mut Shard)> + use<'_, 'a> {
        let db = self.db as u16;
        self.guards
            .iter_mut()
            .filter(move |((d, _), _)| *d == db)
            .map(|((_, s), g)| (*s as usize, &mut **g))
    }

    /// All held shards of every database (FLUSHALL).
    pub fn all_shards_mut(
        &mut self,
    ) -> impl Iterator<Item = (usize, usize, &mut Shard)> + use<'_, 'a> {
        self.guards
            .iter_mut()
            .map(|((d, s), g)| (*d as usize, *s as usize, &mut **g))
    }

    /// Number of live keys in `slot` of the current database.
    pub fn count_in_slot(&mut self, slot: u16) -> usize {
        let db = self.db as u16;
        let id = (db, shard_of_slot(slot) as u16);
        let mut ids: SmallVec<[LockId; 4]> = SmallVec::new();
        ids.push(id);
        self.lock_ids(&mut ids);
        let now = self.now;
        self.guards
            .iter()
            .find(|(g, _)| *g == id)
            .map(|(_, s)| {
                s.maps
                    .get(map_index(slot))
                    .into_iter()
                    .flat_map(|m| m.values())
                    .filter(|e| !e.expired(now))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Up to `n` live keys of `slot` in the current database.
    pub fn keys_in_slot(&mut self, slot: u16, n: usize) -> Vec<Key> {
        let db = self.db as u16;
        let id = (db, shard_of_slot(slot) as u16);
        let mut ids: SmallVec<[LockId; 4]> = SmallVec::new();
        ids.push(id);
        self.lock_ids(&mut ids);
        let now = self.now;
        self.guards
            .iter()
            .find(|(g, _)| *g == id)
            .map(|(_, s)| {
                s.maps
                    .get(map_index(slot))
                    .into_iter()
                    .flat_map(|m| m.iter())
                    .filter(|(_, e)| !e.expired(now))
                    .take(n)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Current unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_inline_or_on_the_heap_behave_as_their_bytes() {
        let mut m: KeyMap = KeyMap::default();
        for n in [0, 1, INLINE_KEY - 1, INLINE_KEY, INLINE_KEY + 1, 300] {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
            let k = Key::from(&bytes[..]);
            assert_eq!(matches!(k, Key::Inline { .. }), n <= INLINE_KEY, "len {n}");
            assert_eq!(&*k, &bytes[..]);
            assert_eq!(k.clone(), k);
            m.insert(k, Entry::new(Value::Str(bytes.clone())));
            // Found by a borrowed slice: the hash is the slice's.
            assert!(m.contains_key(&bytes[..]), "len {n}");
        }
        assert_eq!(m.len(), 6);
        assert!(!m.contains_key(&b"absent"[..]));
    }

    #[test]
    fn set_get_expire_and_slots() {
        let ks = Keyspace::new(16);
        let mut l = Locked::new(&ks, 0, 1000);
        l.lock_keys([b"foo".as_ref(), b"bar".as_ref()]);
        l.set(b"foo", Value::Str(b"1".to_vec()), false);
        l.set(b"bar", Value::Str(b"2".to_vec()), false);
        assert!(l.set_expire(b"foo", 1500));
        assert_eq!(l.count_in_slot(12182), 1);
        assert_eq!(l.keys_in_slot(12182, 10), vec![Key::from(&b"foo"[..])]);
        drop(l);
        let mut l = Locked::new(&ks, 0, 2000);
        l.lock_keys([b"foo"]);
        assert!(l.get(b"foo").is_none());
        assert!(l.get(b"bar").is_some());
        drop(l);
        assert_eq!(ks.db(0).len(), 1);
        assert_eq!(ks.db(0).expires(), 0);
    }

    #[test]
    fn watch_flags_fire_on_write() {
        let ks = Keyspace::new(1);
        let flag: WatchFlag = Arc::default();
        let mut l = Locked::new(&ks, 0, 0);
        l.watch(b"k", flag.clone());
        l.set(b"other", Value::Str(vec![]), false);
        assert!(!flag.load(Ordering::Acquire));
        l.set(b"k", Value::Str(vec![]), false);
        assert!(flag.load(Ordering::Acquire));
    }

    #[test]
    fn out_of_order_locking_reacquires() {
        let ks = Keyspace::new(1);
        let mut l = Locked::new(&ks, 0, 0);
        l.lock_keys([b"foo"]);
        l.lock_keys([&b"key3"[..], &b"hello"[..]]);
        l.set(b"key3", Value::Str(vec![1]), false);
        assert!(l.get(b"key3").is_some());
    }
}
