//! Workloads: which commands a run sends, how each request is encoded, and which reply
//! shape counts as a success.
//!
//! A request is kept as a tiny [`Req`] (operation plus key indices in a per-batch arena) so a
//! redirected request can be encoded again for another node without storing its bytes.

use crate::keys::{format_key, KeyBuf, KeyDist};
use bytes::BytesMut;
use rand::rngs::SmallRng;
use rand::Rng;
use slotgate_protocol::key_slot;
use slotgate_protocol::resp::{parse_i64, write_array_len, write_bulk};

/// The `-t` workload of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// `SET key value`.
    Set,
    /// `GET key`.
    Get,
    /// GET or SET per request, reads with probability `--read-ratio`.
    Mixed,
    /// `MGET k1..kK`.
    Mget,
    /// `MSET k1 v .. kK v`.
    Mset,
    /// `DEL k1..kK`.
    Del,
    /// `INCR counter:<n>`.
    Incr,
    /// `LPUSH list:<n> value`.
    Lpush,
    /// `LPOP list:<n>`.
    Lpop,
    /// `HSET hash:<n> field value`.
    Hset,
}

impl Workload {
    /// Lower-case name, as given to `-t`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Set => "set",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::Mget => "mget",
            Workload::Mset => "mset",
            Workload::Del => "del",
            Workload::Incr => "incr",
            Workload::Lpush => "lpush",
            Workload::Lpop => "lpop",
            Workload::Hset => "hset",
        }
    }

    /// True for workloads that send `-k` keys per call.
    pub fn is_multi_key(self) -> bool {
        matches!(self, Workload::Mget | Workload::Mset | Workload::Del)
    }
}

/// One command kind actually sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// SET
    Set,
    /// GET
    Get,
    /// MGET
    Mget,
    /// MSET
    Mset,
    /// DEL
    Del,
    /// INCR
    Incr,
    /// LPUSH
    Lpush,
    /// LPOP
    Lpop,
    /// HSET
    Hset,
}

impl Op {
    fn prefix(self) -> &'static [u8] {
        match self {
            Op::Set | Op::Get | Op::Mget | Op::Mset | Op::Del => b"key:",
            Op::Incr => b"counter:",
            Op::Lpush | Op::Lpop => b"list:",
            Op::Hset => b"hash:",
        }
    }
}

/// One request of a batch: its operation and its keys (a range of the batch's key arena).
#[derive(Debug, Clone, Copy)]
pub struct Req {
    /// The command.
    pub op: Op,
    /// Index of the first key in the arena.
    pub first: u32,
    /// Number of keys.
    pub nkeys: u32,
    /// Redirections (MOVED/ASK) followed so far.
    pub redirects: u8,
    /// Node to send to with a preceding ASKING (set by an ASK redirection).
    pub ask: Option<u32>,
}

/// Draws requests for a workload and encodes them.
pub struct RequestGen {
    workload: Workload,
    dist: KeyDist,
    read_ratio: f64,
    keys_per_call: u32,
    tag_multi_key: bool,
    value: Vec<u8>,
    rng: SmallRng,
}

/// What a reply means for the request it answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The expected reply type.
    Ok,
    /// An error reply; the message without the leading `-`.
    Error(&'a [u8]),
    /// Some other reply type.
    Unexpected,
}

impl RequestGen {
    /// A generator; `tag_multi_key` puts all keys of a multi-key call under one hash tag
    /// (needed against a cluster, where cross-slot calls are refused).
    pub fn new(
        workload: Workload,
        dist: KeyDist,
        read_ratio: f64,
        keys_per_call: u32,
        tag_multi_key: bool,
        value: Vec<u8>,
        rng: SmallRng,
    ) -> RequestGen {
        RequestGen {
            workload,
            dist,
            read_ratio: read_ratio.clamp(0.0, 1.0),
            keys_per_call: keys_per_call.max(1),
            tag_multi_key,
            value,
            rng,
        }
    }

    /// Draws the next request, appending its keys to `arena`.
    #[inline]
    pub fn next(&mut self, arena: &mut Vec<u64>) -> Req {
        let op = match self.workload {
            Workload::Set => Op::Set,
            Workload::Get => Op::Get,
            Workload::Mixed => {
                if self.rng.gen_bool(self.read_ratio) {
                    Op::Get
                } else {
                    Op::Set
                }
            }
            Workload::Mget => Op::Mget,
            Workload::Mset => Op::Mset,
            Workload::Del => Op::Del,
            Workload::Incr => Op::Incr,
            Workload::Lpush => Op::Lpush,
            Workload::Lpop => Op::Lpop,
            Workload::Hset => Op::Hset,
        };
        let nkeys = if self.workload.is_multi_key() {
            self.keys_per_call
        } else {
            1
        };
        let first = arena.len() as u32;
        for _ in 0..nkeys {
            arena.push(self.dist.sample(&mut self.rng));
        }
        Req {
            op,
            first,
            nkeys,
            redirects: 0,
            ask: None,
        }
    }

    fn tag(&self, req: &Req, arena: &[u64]) -> Option<u64> {
        if self.tag_multi_key && matches!(req.op, Op::Mget | Op::Mset | Op::Del) {
            arena.get(req.first as usize).copied()
        } else {
            None
        }
    }

    fn key(&self, req: &Req, arena: &[u64], i: u32) -> KeyBuf {
        let idx = arena.get((req.first + i) as usize).copied().unwrap_or(0);
        format_key(req.op.prefix(), idx, self.tag(req, arena))
    }

    /// The cluster slot of the request's (first) key.
    #[inline]
    pub fn slot(&self, req: &Req, arena: &[u64]) -> u16 {
        key_slot(self.key(req, arena, 0).as_bytes())
    }

    /// Appends the request in RESP to `out`.
    #[inline]
    pub fn encode(&self, req: &Req, arena: &[u64], out: &mut BytesMut) {
        let v = &self.value[..];
        match req.op {
            Op::Set => {
                write_array_len(out, 3);
                write_bulk(out, b"SET");
                write_bulk(out, self.key(req, arena, 0).as_bytes());
                write_bulk(out, v);
            }
            Op::Get | Op::Incr | Op::Lpop => {
                write_array_len(out, 2);
                write_bulk(
                    out,
                    match req.op {
                        Op::Get => b"GET",
                        Op::Incr => b"INCR",
                        _ => b"LPOP",
                    },
                );
                write_bulk(out, self.key(req, arena, 0).as_bytes());
            }
            Op::Lpush => {
                write_array_len(out, 3);
                write_bulk(out, b"LPUSH");
                write_bulk(out, self.key(req, arena, 0).as_bytes());
                write_bulk(out, v);
            }
            Op::Hset => {
                write_array_len(out, 4);
                write_bulk(out, b"HSET");
                write_bulk(out, self.key(req, arena, 0).as_bytes());
                write_bulk(out, b"field");
                write_bulk(out, v);
            }
            Op::Mget | Op::Del => {
                write_array_len(out, 1 + req.nkeys as usize);
                write_bulk(out, if req.op == Op::Mget { b"MGET" } else { b"DEL" });
                for i in 0..req.nkeys {
                    write_bulk(out, self.key(req, arena, i).as_bytes());
                }
            }
            Op::Mset => {
                write_array_len(out, 1 + 2 * req.nkeys as usize);
                write_bulk(out, b"MSET");
                for i in 0..req.nkeys {
                    write_bulk(out, self.key(req, arena, i).as_bytes());
                    write_bulk(out, v);
                }
            }
        }
    }
}

/// Classifies `reply` (one complete RESP frame) as the answer to `req`.
#[inline]
pub fn check_reply<'a>(req: &Req, reply: &'a [u8]) -> Outcome<'a> {
    let Some(&t) = reply.first() else {
        return Outcome::Unexpected;
    };
    if t == b'-' || t == b'!' {
        return Outcome::Error(error_text(reply));
    }
    let ok = match req.op {
        Op::Set | Op::Mset => reply.starts_with(b"+OK\r\n"),
        Op::Get | Op::Lpop => t == b'$' || t == b'_',
        Op::Del | Op::Incr | Op::Lpush | Op::Hset => t == b':',
        Op::Mget => t == b'*' && header_value(reply).is_some_and(|n| n == i64::from(req.nkeys)),
    };
    if ok {
        Outcome::Ok
    } else {
        Outcome::Unexpected
    }
}

/// The number on the first line of a frame (`*3\r\n` → 3).
fn header_value(frame: &[u8]) -> Option<i64> {
    let eol = frame.iter().position(|&b| b == b'\r')?;
    parse_i64(frame.get(1..eol)?)
}

/// The message of an error frame (`-ERR x\r\n` → `ERR x`; a RESP3 `!` blob error's payload).
pub fn error_text(frame: &[u8]) -> &[u8] {
    let Some(eol) = frame.iter().position(|&b| b == b'\r') else {
        return frame.get(1..).unwrap_or(&[]);
    };
    if frame.first() == Some(&b'!') {
        let start = eol + 2;
        let end = frame.len().saturating_sub(2);
        return frame.get(start..end).unwrap_or(&[]);
    }
    frame.get(1..eol).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::DistKind;
    use rand::SeedableRng;
    use slotgate_protocol::{decode_frame, Frame};

    fn gen(w: Workload, k: u32, tag: bool) -> RequestGen {
        RequestGen::new(
            w,
            KeyDist::new(DistKind::Uniform, 1000),
            0.5,
            k,
            tag,
            b"vv".to_vec(),
            SmallRng::seed_from_u64(3),
        )
    }

    fn encoded(g: &mut RequestGen) -> (Req, Vec<u64>, Vec<Vec<u8>>) {
        let mut arena = Vec::new();
        let r = g.next(&mut arena);
        let mut out = BytesMut::new();
        g.encode(&r, &arena, &mut out);
        let Ok(Some(Frame::Array(items))) = decode_frame(&mut out) else {
            panic!("not an array");
        };
        assert!(out.is_empty());
        let args = items
            .iter()
            .map(|f| f.as_bytes().map(|b| b.to_vec()).unwrap_or_default())
            .collect();
        (r, arena, args)
    }

    #[test]
    fn encodes_set_and_mset() {
        let (_, arena, args) = encoded(&mut gen(Workload::Set, 1, false));
        assert_eq!(args[0], b"SET");
        assert_eq!(args[1], format!("key:{:012}", arena[0]).as_bytes());
        assert_eq!(args[2], b"vv");
        let (r, arena, args) = encoded(&mut gen(Workload::Mset, 4, false));
        assert_eq!(r.nkeys, 4);
        assert_eq!(args.len(), 9);
        assert_eq!(args[3], format!("key:{:012}", arena[1]).as_bytes());
    }

    #[test]
    fn tagged_multi_key_calls_share_a_slot() {
        let mut g = gen(Workload::Mget, 8, true);
        for _ in 0..50 {
            let (_, _, args) = encoded(&mut g);
            let slot = key_slot(&args[1]);
            assert!(args[2..].iter().all(|k| key_slot(k) == slot));
        }
        // Untagged calls spread over slots.
        let (_, _, args) = encoded(&mut gen(Workload::Del, 8, false));
        let slots: std::collections::HashSet<_> = args[1..].iter().map(|k| key_slot(k)).collect();
        assert!(slots.len() > 1);
    }

    #[test]
    fn reply_checks() {
        let mut arena = Vec::new();
        let set = gen(Workload::Set, 1, false).next(&mut arena);
        assert_eq!(check_reply(&set, b"+OK\r\n"), Outcome::Ok);
        assert_eq!(check_reply(&set, b":1\r\n"), Outcome::Unexpected);
        assert_eq!(
            check_reply(&set, b"-MOVED 1 127.0.0.1:7000\r\n"),
            Outcome::Error(b"MOVED 1 127.0.0.1:7000")
        );
        let get = gen(Workload::Get, 1, false).next(&mut arena);
        assert_eq!(check_reply(&get, b"$-1\r\n"), Outcome::Ok);
        assert_eq!(check_reply(&get, b"$1\r\nx\r\n"), Outcome::Ok);
        assert_eq!(check_reply(&get, b"!3\r\nERR\r\n"), Outcome::Error(b"ERR"));
        let mget = gen(Workload::Mget, 2, false).next(&mut arena);
        assert_eq!(check_reply(&mget, b"*2\r\n$-1\r\n$-1\r\n"), Outcome::Ok);
        assert_eq!(check_reply(&mget, b"*1\r\n$-1\r\n"), Outcome::Unexpected);
        let incr = gen(Workload::Incr, 1, false).next(&mut arena);
        assert_eq!(check_reply(&incr, b":5\r\n"), Outcome::Ok);
        assert_eq!(check_reply(&incr, b""), Outcome::Unexpected);
    }
}
