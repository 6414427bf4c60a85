//! Keyspace notifications (`notify-keyspace-events`): the event classes, their config string,
//! and delivery to pub/sub subscribers of `__keyspace@<db>__:<key>` (message: the event) and
//! `__keyevent@<db>__:<event>` (message: the key), local to this node as in Redis.
//!
//! Commands record events on their [`crate::db::Locked`] view while they run (so "new" and
//! lazily "expired" keys fall in execution order); the dispatcher publishes them once the
//! command is done. Background deletions (active expiry, eviction) publish directly.

use crate::server::Server;
use bytes::{BufMut, Bytes, BytesMut};

/// `K`: publish on `__keyspace@<db>__:<key>`.
pub const KEYSPACE: u32 = 1 << 0;
/// `E`: publish on `__keyevent@<db>__:<event>`.
pub const KEYEVENT: u32 = 1 << 1;
/// `g`: generic commands (DEL, EXPIRE, RENAME, ...).
pub const GENERIC: u32 = 1 << 2;
/// `$`: string commands.
pub const STRING: u32 = 1 << 3;
/// `l`: list commands.
pub const LIST: u32 = 1 << 4;
/// `s`: set commands.
pub const SET: u32 = 1 << 5;
/// `h`: hash commands.
pub const HASH: u32 = 1 << 6;
/// `z`: sorted set commands.
pub const ZSET: u32 = 1 << 7;
/// `x`: a key expired.
pub const EXPIRED: u32 = 1 << 8;
/// `e`: a key was evicted.
pub const EVICTED: u32 = 1 << 9;
/// `t`: stream commands.
pub const STREAM: u32 = 1 << 10;
/// `m`: key misses.
pub const KEY_MISS: u32 = 1 << 11;
/// `d`: module key types.
pub const MODULE: u32 = 1 << 12;
/// `n`: a key was created.
pub const NEW: u32 = 1 << 13;
/// `A`: every class but `m` and `n`, as Redis 7.0.
pub const ALL: u32 =
    GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

/// redis-server's complaint about a bad class character.
pub const ERR_CLASS: &str = "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.";

/// Parses a `notify-keyspace-events` value; None on an unknown character.
pub fn parse(s: &str) -> Option<u32> {
    let mut flags = 0;
    for c in s.chars() {
        flags |= match c {
            'A' => ALL,
            'g' => GENERIC,
            '$' => STRING,
            'l' => LIST,
            's' => SET,
            'h' => HASH,
            'z' => ZSET,
            'x' => EXPIRED,
            'e' => EVICTED,
            'K' => KEYSPACE,
            'E' => KEYEVENT,
            't' => STREAM,
            'm' => KEY_MISS,
            'd' => MODULE,
            'n' => NEW,
            _ => return None,
        };
    }
    Some(flags)
}

/// The canonical string CONFIG GET shows (Redis's `keyspaceEventsFlagsToString`).
pub fn to_config(flags: u32) -> String {
    let mut s = String::new();
    if flags & ALL == ALL {
        s.push('A');
    } else {
        for (bit, c) in [
            (GENERIC, 'g'),
            (STRING, '$'),
            (LIST, 'l'),
            (SET, 's'),
            (HASH, 'h'),
            (ZSET, 'z'),
            (EXPIRED, 'x'),
            (EVICTED, 'e'),
            (STREAM, 't'),
            (MODULE, 'd'),
            (NEW, 'n'),
        ] {
            if flags & bit != 0 {
                s.push(c);
            }
        }
    }
    for (bit, c) in [(KEYSPACE, 'K'), (KEYEVENT, 'E'), (KEY_MISS, 'm')] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// The classes that produce messages: none unless `K` or `E` is on.
pub fn effective(flags: u32) -> u32 {
    if flags & (KEYSPACE | KEYEVENT) == 0 {
        0
    } else {
        flags
    }
}

/// One keyspace event waiting to be published.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its class (one of the class bits).
    pub class: u32,
    /// Event name (`set`, `del`, `expired`, ...).
    pub name: &'static str,
    /// The key.
    pub key: Bytes,
    /// Its database.
    pub db: usize,
}

/// Publishes one event to this node's subscribers if its class is on in `flags`.
pub fn publish(server: &Server, flags: u32, class: u32, name: &str, key: &[u8], db: usize) {
    if effective(flags) & class == 0 {
        return;
    }
    let mut prefix = itoa::Buffer::new();
    let db = prefix.format(db);
    if flags & KEYSPACE != 0 {
        let mut ch = BytesMut::with_capacity(16 + db.len() + key.len());
        ch.put_slice(b"__keyspace@");
        ch.put_slice(db.as_bytes());
        ch.put_slice(b"__:");
        ch.put_slice(key);
        server
            .pubsub
            .publish(&ch.freeze(), &Bytes::copy_from_slice(name.as_bytes()));
    }
    if flags & KEYEVENT != 0 {
        let mut ch = BytesMut::with_capacity(16 + db.len() + name.len());
        ch.put_slice(b"__keyevent@");
        ch.put_slice(db.as_bytes());
        ch.put_slice(b"__:");
        ch.put_slice(name.as_bytes());
        server
            .pubsub
            .publish(&ch.freeze(), &Bytes::copy_from_slice(key));
    }
}

/// Publishes the events a command recorded (taken from its view), in order.
pub fn publish_all(server: &Server, flags: u32, events: &mut Option<Box<Vec<Event>>>) {
    if let Some(events) = events.take() {
        for ev in events.iter() {
            publish(server, flags, ev.class, ev.name, &ev.key, ev.db);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_strings_as_redis() {
        assert_eq!(parse("KEA").map(to_config).as_deref(), Some("AKE"));
        assert_eq!(parse("Klg").map(to_config).as_deref(), Some("glK"));
        assert_eq!(parse("Emnlx").map(to_config).as_deref(), Some("lxnEm"));
        assert_eq!(parse("").map(to_config).as_deref(), Some(""));
        assert_eq!(parse("Q"), None);
        assert_eq!(effective(parse("A").unwrap_or(0)), 0);
    }
}
