//! The values stored in the keyspace: strings, lists, hashes, sets and sorted sets.
//!
//! Collections are boxed so a [`Value`] stays small (the keyspace holds millions of them).
//! Elements are `Box<[u8]>`: owned, exact-size copies, never slices of a network buffer.

use crate::ranked::Ranked;
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;

/// An owned element (list item, hash field/value, set or sorted-set member).
pub type Elem = Box<[u8]>;
/// The hasher of every map and set inside values (hashbrown's default: foldhash).
pub type Hasher = hashbrown::DefaultHashBuilder;
/// A hash value's fields, and other maps inside values. Insertion-ordered with O(1) access
/// by position, so HRANDFIELD/SRANDMEMBER/SPOP pick in O(1) as Redis does; small hashes
/// also keep Redis's listpack order (see [`remove_field`]).
pub type Map<K, V> = indexmap::IndexMap<K, V, Hasher>;
/// A set value's members (insertion-ordered, O(1) access by position).
pub type Set<K> = indexmap::IndexSet<K, Hasher>;
/// A sorted-set member: one allocation shared by the score map and the order, so each
/// member is stored (and freed) once.
pub type Member = std::sync::Arc<[u8]>;
/// The member → score map of a sorted set (no positional access needed).
pub type ScoreMap = hashbrown::HashMap<Member, f64>;

/// The sizes up to which Redis keeps a collection in its compact encoding (listpack, intset):
/// `hash-max-listpack-entries/value`, `zset-max-listpack-entries/value`,
/// `set-max-intset-entries`. They decide OBJECT ENCODING, whether HSCAN/SSCAN/ZSCAN return the
/// whole collection at once, and whether a hash keeps its field order on removal.
#[derive(Debug)]
pub struct CompactLimits {
    /// hash-max-listpack-entries
    pub hash_entries: AtomicUsize,
    /// hash-max-listpack-value
    pub hash_value: AtomicUsize,
    /// zset-max-listpack-entries
    pub zset_entries: AtomicUsize,
    /// zset-max-listpack-value
    pub zset_value: AtomicUsize,
    /// set-max-intset-entries
    pub intset_entries: AtomicUsize,
}

impl Default for CompactLimits {
    fn default() -> Self {
        // redis-server 7.0's defaults.
        CompactLimits {
            hash_entries: AtomicUsize::new(512),
            hash_value: AtomicUsize::new(64),
            zset_entries: AtomicUsize::new(128),
            zset_value: AtomicUsize::new(64),
            intset_entries: AtomicUsize::new(512),
        }
    }
}

impl CompactLimits {
    fn get(a: &AtomicUsize) -> usize {
        a.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True when Redis would hold this hash as a listpack.
    pub fn hash_compact(&self, h: &Map<Elem, Elem>) -> bool {
        let max = Self::get(&self.hash_value);
        h.len() <= Self::get(&self.hash_entries)
            && h.iter().all(|(k, v)| k.len() <= max && v.len() <= max)
    }

    /// True when Redis would hold this set as an intset.
    pub fn set_intset(&self, s: &Set<Elem>) -> bool {
        s.len() <= Self::get(&self.intset_entries)
            && s.iter()
                .all(|m| m.len() <= 20 && slotgate_protocol::resp::parse_i64(m).is_some())
    }

    /// True when Redis would hold this sorted set as a listpack.
    pub fn zset_compact(&self, z: &ZSet) -> bool {
        let max = Self::get(&self.zset_value);
        z.len() <= Self::get(&self.zset_entries) && z.iter().all(|(m, _)| m.len() <= max)
    }
}

/// Removes `field` from a hash: order-preserving while the hash has at most `ordered` fields
/// (Redis's listpack order; removal shifts, O(n) only while n is that small), O(1) swap
/// otherwise (Redis's hashtable order is arbitrary too).
pub fn remove_field(h: &mut Map<Elem, Elem>, field: &[u8], ordered: usize) -> Option<Elem> {
    if h.len() <= ordered {
        h.shift_remove(field)
    } else {
        h.swap_remove(field)
    }
}

/// A stored value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string (also integers, bitmaps and HyperLogLogs).
    Str(Vec<u8>),
    /// A list.
    List(Box<VecDeque<Elem>>),
    /// A hash.
    Hash(Box<Map<Elem, Elem>>),
    /// A set.
    Set(Box<Set<Elem>>),
    /// A sorted set.
    ZSet(Box<ZSet>),
}

/// The kinds of value, as TYPE names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// "string"
    Str,
    /// "list"
    List,
    /// "hash"
    Hash,
    /// "set"
    Set,
    /// "zset"
    ZSet,
}

impl Kind {
    /// The name TYPE replies with.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Str => "string",
            Kind::List => "list",
            Kind::Hash => "hash",
            Kind::Set => "set",
            Kind::ZSet => "zset",
        }
    }

    /// Parses a TYPE name (as used by `SCAN ... TYPE t`), case-insensitively.
    pub fn from_name(name: &[u8]) -> Option<Kind> {
        Some(match name.to_ascii_lowercase().as_slice() {
            b"string" => Kind::Str,
            b"list" => Kind::List,
            b"hash" => Kind::Hash,
            b"set" => Kind::Set,
            b"zset" => Kind::ZSet,
            _ => return None,
        })
    }
}

impl Value {
    /// The value's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Str(_) => Kind::Str,
            Value::List(_) => Kind::List,
            Value::Hash(_) => Kind::Hash,
            Value::Set(_) => Kind::Set,
            Value::ZSet(_) => Kind::ZSet,
        }
    }

    /// A new empty list value.
    pub fn new_list() -> Value {
        Value::List(Box::default())
    }

    /// A new empty hash value.
    pub fn new_hash() -> Value {
        Value::Hash(Box::default())
    }

    /// A new empty set value.
    pub fn new_set() -> Value {
        Value::Set(Box::default())
    }

    /// A new empty sorted set value.
    pub fn new_zset() -> Value {
        Value::ZSet(Box::default())
    }

    /// True when a collection has no elements (such keys are deleted, as Redis does).
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::List(l) => l.is_empty(),
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
        }
    }

    /// The encoding OBJECT ENCODING reports (by `limits`, computed from the content).
    pub fn encoding(&self, limits: &CompactLimits) -> &'static str {
        match self {
            Value::Str(s) => {
                if s.len() <= 20 && slotgate_protocol::resp::parse_i64(s).is_some() {
                    "int"
                } else if s.len() <= 44 {
                    "embstr"
                } else {
                    "raw"
                }
            }
            // Redis 7.0 reports every list as a quicklist (listpack lists came in 7.2).
            Value::List(_) => "quicklist",
            Value::Hash(h) => {
                if limits.hash_compact(h) {
                    "listpack"
                } else {
                    "hashtable"
                }
            }
            Value::Set(s) => {
                if limits.set_intset(s) {
                    "intset"
                } else {
                    "hashtable"
                }
            }
            Value::ZSet(z) => {
                if limits.zset_compact(z) {
                    "listpack"
                } else {
                    "skiplist"
                }
            }
        }
    }

    /// About how many allocations freeing this value costs (decides lazy freeing).
    pub fn free_effort(&self) -> usize {
        match self {
            Value::Str(_) => 1,
            Value::List(l) => l.len(),
            Value::Hash(h) => h.len(),
            Value::Set(s) => s.len(),
            Value::ZSet(z) => z.len(),
        }
    }

    /// A rough count of the bytes this value occupies (for MEMORY USAGE and INFO).
    pub fn approx_size(&self) -> usize {
        match self {
            Value::Str(s) => s.capacity() + 16,
            Value::List(l) => l.iter().map(|e| e.len() + 16).sum::<usize>() + 32,
            Value::Hash(h) => h.iter().map(|(k, v)| k.len() + v.len() + 40).sum::<usize>() + 48,
            Value::Set(s) => s.iter().map(|m| m.len() + 24).sum::<usize>() + 48,
            Value::ZSet(z) => z.iter().map(|(m, _)| m.len() + 88).sum::<usize>() + 96,
        }
    }
}

/// A score with the total order Redis uses for sorted sets (no NaN is ever stored).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A sorted set: member → score, plus the (score, member) order with positions
/// ([`Ranked`]: rank, select and range bounds in O(log n), as Redis's skiplist).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZSet {
    scores: ScoreMap,
    order: Ranked<(Score, Member)>,
}

/// Orders an entry of the order against (score, member) without building a key.
fn cmp_entry(e: &(Score, Member), score: f64, member: &[u8]) -> Ordering {
    e.0.cmp(&Score(score)).then_with(|| e.1[..].cmp(member))
}

impl ZSet {
    /// Number of members.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The score of `member`.
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Sets `member`'s score; returns true when the member is new.
    pub fn insert(&mut self, member: &[u8], score: f64) -> bool {
        // -0.0 and 0.0 compare equal in Redis; normalise so the order stays consistent.
        let score = if score == 0.0 { 0.0 } else { score };
        match self.scores.get_mut(member) {
            Some(old) => {
                if *old != score {
                    let old_score = *old;
                    *old = score;
                    let key: Member = self
                        .order
                        .remove_by(|e| cmp_entry(e, old_score, member))
                        .map(|(_, k)| k)
                        .unwrap_or_else(|| member.into());
                    self.order.insert((Score(score), key));
                }
                false
            }
            None => {
                let key: Member = member.into();
                self.scores.insert(key.clone(), score);
                self.order.insert((Score(score), key));
                true
            }
        }
    }

    /// Removes `member`; returns true when it was present.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(old) => {
                self.order.remove_by(|e| cmp_entry(e, old, member));
                true
            }
            None => false,
        }
    }

    /// Members in ascending (score, member) order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + '_ {
        self.range(0, self.len())
    }

    /// Members at ranks `lo..hi` (clamped), ascending; `.rev()` walks them descending.
    pub fn range(
        &self,
        lo: usize,
        hi: usize,
    ) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + '_ {
        self.order.range(lo, hi).map(|(s, m)| (&m[..], s.0))
    }

    /// The member and score at rank `i`.
    pub fn get(&self, i: usize) -> Option<(&[u8], f64)> {
        self.order.get(i).map(|(s, m)| (&m[..], s.0))
    }

    /// Ranks `lo..hi` of the members whose scores lie in the given inclusive/exclusive
    /// bounds (empty when none do).
    pub fn score_span(&self, min: f64, min_excl: bool, max: f64, max_excl: bool) -> (usize, usize) {
        let lo = self
            .order
            .partition_point(|(s, _)| if min_excl { s.0 <= min } else { s.0 < min });
        let hi = self
            .order
            .partition_point(|(s, _)| if max_excl { s.0 < max } else { s.0 <= max });
        (lo, hi.max(lo))
    }

    /// Ranks `lo..hi` of a lexicographic range, found as Redis finds it (by bisection, which
    /// assumes every member has the same score): from the first member `gte_min` accepts to
    /// the last one `lte_max` accepts.
    pub fn lex_span(
        &self,
        gte_min: impl Fn(&[u8]) -> bool,
        lte_max: impl Fn(&[u8]) -> bool,
    ) -> (usize, usize) {
        let lo = self.order.partition_point(|(_, m)| !gte_min(m));
        let hi = self.order.partition_point(|(_, m)| lte_max(m));
        (lo, hi.max(lo))
    }

    /// Members with scores in the given inclusive/exclusive bounds, ascending.
    pub fn range_by_score(
        &self,
        min: f64,
        min_excl: bool,
        max: f64,
        max_excl: bool,
    ) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + '_ {
        let (lo, hi) = self.score_span(min, min_excl, max, max_excl);
        self.range(lo, hi)
    }

    /// 0-based rank of `member` in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        Some(
            self.order
                .partition_point(|e| cmp_entry(e, score, member) == Ordering::Less),
        )
    }
}
