//! Redis's serialization formats: the DUMP payload (RDB value encoding + RDB version + CRC64).
//!
//! A DUMP payload is `type byte | value encoding | RDB version (u16 LE) | CRC64 (u64 LE)`, the
//! CRC covering everything before it. Values are written in the plain RDB encodings every Redis
//! since 2.x reads (string, list, set, hash, zset-2); reading accepts those plus everything
//! Redis 7.0 itself emits or still loads: integer/LZF strings, intsets, ziplists, listpacks and
//! quicklists (v1 and v2). The value codec ([`write_object`], [`read_object`], [`Reader`]) is
//! independent of the DUMP framing; the RDB file format (full resync snapshots) reuses it
//! ([`write_file_header`] ... [`read_file`]).
//!
//! Everything read is bounds-checked: a malformed payload yields an [`RdbError`], never a panic,
//! and lengths taken from the input never drive allocations larger than the input justifies.

use crate::value::{Elem, Map, Set, Value, ZSet};
use std::borrow::Cow;
use std::collections::VecDeque;

/// The RDB version this server writes (Redis 7.0 writes 10); newer payloads are refused.
pub const RDB_VERSION: u16 = 10;

/// RDB value-type bytes (`RDB_TYPE_*` in Redis's rdb.h).
pub mod types {
    /// A string.
    pub const STRING: u8 = 0;
    /// A list as a sequence of strings.
    pub const LIST: u8 = 1;
    /// A set as a sequence of strings.
    pub const SET: u8 = 2;
    /// A sorted set with scores as length-prefixed text.
    pub const ZSET: u8 = 3;
    /// A hash as field/value string pairs.
    pub const HASH: u8 = 4;
    /// A sorted set with binary (8-byte little-endian) scores.
    pub const ZSET_2: u8 = 5;
    /// Module value (v1).
    pub const MODULE: u8 = 6;
    /// Module value (v2).
    pub const MODULE_2: u8 = 7;
    /// A hash as a zipmap blob (pre-2.6).
    pub const HASH_ZIPMAP: u8 = 9;
    /// A list as one ziplist blob.
    pub const LIST_ZIPLIST: u8 = 10;
    /// A set of integers as an intset blob.
    pub const SET_INTSET: u8 = 11;
    /// A sorted set as a ziplist of member/score pairs.
    pub const ZSET_ZIPLIST: u8 = 12;
    /// A hash as a ziplist of field/value pairs.
    pub const HASH_ZIPLIST: u8 = 13;
    /// A list as a quicklist of ziplist nodes.
    pub const LIST_QUICKLIST: u8 = 14;
    /// A stream (v1).
    pub const STREAM_LISTPACKS: u8 = 15;
    /// A hash as a listpack of field/value pairs.
    pub const HASH_LISTPACK: u8 = 16;
    /// A sorted set as a listpack of member/score pairs.
    pub const ZSET_LISTPACK: u8 = 17;
    /// A list as a quicklist of listpack (or plain) nodes.
    pub const LIST_QUICKLIST_2: u8 = 18;
    /// A stream (v2).
    pub const STREAM_LISTPACKS_2: u8 = 19;
}

/// Why a payload or value encoding could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RdbError {
    /// Too short for the footer, an RDB version newer than ours, or a CRC mismatch.
    #[error("DUMP payload version or checksum are wrong")]
    Checksum,
    /// The input ended inside a value.
    #[error("unexpected end of RDB data")]
    Truncated,
    /// The encoding is malformed.
    #[error("corrupt RDB value: {0}")]
    Corrupt(&'static str),
    /// A value type slotgate cannot hold (streams, modules, zipmaps, unknown bytes).
    #[error("unsupported RDB value type {0}")]
    Unsupported(u8),
}

impl RdbError {
    /// The error RESTORE replies with (exactly Redis's texts).
    pub fn restore_reply(&self) -> &'static str {
        match self {
            RdbError::Checksum => "ERR DUMP payload version or checksum are wrong",
            _ => "ERR Bad data format",
        }
    }
}

type Result<T> = std::result::Result<T, RdbError>;

// ---------------------------------------------------------------------------------------------
// CRC64 (Jones polynomial, reflected; as Redis's crc64.c)
// ---------------------------------------------------------------------------------------------

/// The Jones polynomial 0xad93d23594c935a9, bit-reflected.
const CRC64_POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5;

const fn crc64_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ CRC64_POLY_REFLECTED
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC64_TABLE: [u64; 256] = crc64_table();

/// Continues a CRC64 (Redis's `crc64(crc, data, len)`; start with 0). The check value of
/// `"123456789"` is `0xe9c6d914c4b8d9ca`.
pub fn crc64(crc: u64, data: &[u8]) -> u64 {
    let mut crc = crc;
    for &b in data {
        crc = CRC64_TABLE[((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

// ---------------------------------------------------------------------------------------------
// DUMP / RESTORE framing
// ---------------------------------------------------------------------------------------------

/// Serializes a value as a DUMP payload.
pub fn dump_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.approx_size().min(1 << 20) + 16);
    out.push(object_type(v));
    write_object(&mut out, v);
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a DUMP payload's footer (length, RDB version, CRC64) as Redis's `verifyDumpPayload`
/// does; returns the payload's RDB version.
pub fn verify_payload(payload: &[u8]) -> Result<u16> {
    if payload.len() < 10 {
        return Err(RdbError::Checksum);
    }
    let footer = &payload[payload.len() - 10..];
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    if version > RDB_VERSION {
        return Err(RdbError::Checksum);
    }
    let mut crc = [0u8; 8];
    crc.copy_from_slice(&footer[2..]);
    if crc64(0, &payload[..payload.len() - 8]) != u64::from_le_bytes(crc) {
        return Err(RdbError::Checksum);
    }
    Ok(version)
}

/// Decodes a DUMP payload (footer verified first). As in Redis, the value is read from the
/// whole payload: bytes after it are ignored, and a value running into the footer's bytes is
/// read, not refused.
pub fn restore_value(payload: &[u8]) -> Result<Value> {
    verify_payload(payload)?;
    let mut r = Reader::new(payload);
    let t = r.u8()?;
    read_object(t, &mut r)
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// The RDB type byte [`write_object`] uses for `v`.
pub fn object_type(v: &Value) -> u8 {
    match v {
        Value::Str(_) => types::STRING,
        Value::List(_) => types::LIST,
        Value::Set(_) => types::SET,
        Value::ZSet(_) => types::ZSET_2,
        Value::Hash(_) => types::HASH,
    }
}

/// Appends the RDB encoding of `v` (without its type byte; see [`object_type`]).
pub fn write_object(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => write_string(out, s),
        Value::List(l) => {
            write_len(out, l.len() as u64);
            for e in l.iter() {
                write_string(out, e);
            }
        }
        Value::Set(s) => {
            write_len(out, s.len() as u64);
            for m in s.iter() {
                write_string(out, m);
            }
        }
        Value::Hash(h) => {
            write_len(out, h.len() as u64);
            for (k, v) in h.iter() {
                write_string(out, k);
                write_string(out, v);
            }
        }
        Value::ZSet(z) => {
            write_len(out, z.len() as u64);
            // Highest score first, like Redis (its loader then inserts at the list head).
            for (m, score) in z.iter().rev() {
                write_string(out, m);
                out.extend_from_slice(&score.to_le_bytes());
            }
        }
    }
}

/// Appends an RDB length (6-bit, 14-bit, 32-bit or 64-bit form).
pub fn write_len(out: &mut Vec<u8>, len: u64) {
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.push(0x40 | (len >> 8) as u8);
        out.push(len as u8);
    } else if len <= u32::MAX as u64 {
        out.push(0x80);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// Appends an RDB string: integer-encoded when it is the canonical form of an integer that
/// fits 32 bits (as Redis does), otherwise length-prefixed raw bytes.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() <= 11 {
        if let Some(n) = slotgate_protocol::resp::parse_i64(s) {
            if let Ok(n) = i8::try_from(n) {
                out.extend_from_slice(&[0xc0, n as u8]);
                return;
            }
            if let Ok(n) = i16::try_from(n) {
                out.push(0xc1);
                out.extend_from_slice(&n.to_le_bytes());
                return;
            }
            if let Ok(n) = i32::try_from(n) {
                out.push(0xc2);
                out.extend_from_slice(&n.to_le_bytes());
                return;
            }
        }
    }
    write_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// A bounds-checked cursor over RDB bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(RdbError::Truncated);
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    /// One byte (type bytes, opcodes).
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    /// A little-endian u32.
    pub fn u32_le(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian u64 (millisecond expiry times, binary doubles' bits).
    pub fn u64_le(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// An RDB length; the flag is true when it is instead a special string encoding number
    /// (`RDB_ENC_INT8/16/32/LZF`).
    pub fn len_or_encoding(&mut self) -> Result<(u64, bool)> {
        let b = self.u8()?;
        match b >> 6 {
            0 => Ok((u64::from(b & 0x3f), false)),
            1 => Ok(((u64::from(b & 0x3f) << 8) | u64::from(self.u8()?), false)),
            3 => Ok((u64::from(b & 0x3f), true)),
            _ => match b {
                0x80 => Ok((u64::from(u32::from_be_bytes(self.array()?)), false)),
                0x81 => Ok((u64::from_be_bytes(self.array()?), false)),
                _ => Err(RdbError::Corrupt("unknown length encoding")),
            },
        }
    }

    /// A plain RDB length.
    pub fn length(&mut self) -> Result<u64> {
        match self.len_or_encoding()? {
            (n, false) => Ok(n),
            (_, true) => Err(RdbError::Corrupt(
                "encoded value where a length was expected",
            )),
        }
    }

    /// An element count: each element takes at least one byte, so a count above the bytes left
    /// is refused (this bounds every allocation sized from the input).
    pub fn count(&mut self) -> Result<usize> {
        let n = self.length()?;
        if n > self.remaining() as u64 {
            return Err(RdbError::Truncated);
        }
        Ok(n as usize)
    }

    /// An RDB string: raw, integer-encoded or LZF-compressed.
    pub fn string(&mut self) -> Result<Cow<'a, [u8]>> {
        match self.len_or_encoding()? {
            (n, false) => {
                let n = usize::try_from(n).map_err(|_| RdbError::Truncated)?;
                Ok(Cow::Borrowed(self.bytes(n)?))
            }
            (0, true) => Ok(Cow::Owned(int_bytes(i64::from(self.u8()? as i8)))),
            (1, true) => Ok(Cow::Owned(int_bytes(i64::from(i16::from_le_bytes(
                self.array()?,
            ))))),
            (2, true) => Ok(Cow::Owned(int_bytes(i64::from(i32::from_le_bytes(
                self.array()?,
            ))))),
            (3, true) => {
                let clen = self.length()?;
                let len = self.length()?;
                if clen > self.remaining() as u64 {
                    return Err(RdbError::Truncated);
                }
                let compressed = self.bytes(clen as usize)?;
                Ok(Cow::Owned(lzf_decompress(compressed, len)?))
            }
            (_, true) => Err(RdbError::Corrupt("unknown string encoding")),
        }
    }

    /// An RDB string as an owned element.
    pub fn elem(&mut self) -> Result<Elem> {
        Ok(match self.string()? {
            Cow::Borrowed(b) => b.into(),
            Cow::Owned(v) => v.into_boxed_slice(),
        })
    }

    /// A score in the old text form (`RDB_TYPE_ZSET`): length byte (253 NaN, 254 +inf,
    /// 255 -inf) then ASCII parsed like `sscanf("%lg")`.
    pub fn double_text(&mut self) -> Result<f64> {
        match self.u8()? {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            n => {
                let s = self.bytes(n as usize)?;
                strtod_prefix(s).ok_or(RdbError::Corrupt("invalid double"))
            }
        }
    }

    /// A score in binary form (`RDB_TYPE_ZSET_2`): 8 bytes little-endian.
    pub fn double_binary(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64_le()?))
    }
}

/// Reads the encoding of a value of RDB type `rdb_type` (its type byte already consumed).
/// Empty collections, duplicate members and NaN scores are refused.
pub fn read_object(rdb_type: u8, r: &mut Reader<'_>) -> Result<Value> {
    let v = match rdb_type {
        types::STRING => Value::Str(r.string()?.into_owned()),
        types::LIST => {
            let n = r.count()?;
            let mut l = VecDeque::with_capacity(n);
            for _ in 0..n {
                l.push_back(r.elem()?);
            }
            Value::List(Box::new(l))
        }
        types::SET => {
            let n = r.count()?;
            let mut s = Set::with_capacity_and_hasher(n, Default::default());
            for _ in 0..n {
                if !s.insert(r.elem()?) {
                    return Err(RdbError::Corrupt("duplicate set member"));
                }
            }
            Value::Set(Box::new(s))
        }
        types::HASH => {
            let n = r.count()?;
            let mut h = Map::with_capacity_and_hasher(n, Default::default());
            for _ in 0..n {
                let f = r.elem()?;
                let v = r.elem()?;
                if h.insert(f, v).is_some() {
                    return Err(RdbError::Corrupt("duplicate hash field"));
                }
            }
            Value::Hash(Box::new(h))
        }
        types::ZSET | types::ZSET_2 => {
            let n = r.count()?;
            let mut z = ZSet::default();
            for _ in 0..n {
                let m = r.string()?;
                let score = if rdb_type == types::ZSET {
                    r.double_text()?
                } else {
                    r.double_binary()?
                };
                zset_add(&mut z, &m, score)?;
            }
            Value::ZSet(Box::new(z))
        }
        types::SET_INTSET => {
            let blob = r.string()?;
            Value::Set(Box::new(intset_members(&blob)?))
        }
        types::LIST_ZIPLIST => {
            let blob = r.string()?;
            let items = ziplist_items(&blob)?;
            Value::List(Box::new(items.iter().map(Item::elem).collect()))
        }
        types::HASH_ZIPLIST | types::HASH_LISTPACK => {
            let blob = r.string()?;
            let items = if rdb_type == types::HASH_ZIPLIST {
                ziplist_items(&blob)?
            } else {
                listpack_items(&blob)?
            };
            Value::Hash(Box::new(hash_from_pairs(&items)?))
        }
        types::ZSET_ZIPLIST | types::ZSET_LISTPACK => {
            let blob = r.string()?;
            let items = if rdb_type == types::ZSET_ZIPLIST {
                ziplist_items(&blob)?
            } else {
                listpack_items(&blob)?
            };
            Value::ZSet(Box::new(zset_from_pairs(&items)?))
        }
        types::LIST_QUICKLIST | types::LIST_QUICKLIST_2 => {
            let nodes = r.count()?;
            let mut l = VecDeque::new();
            for _ in 0..nodes {
                let container = if rdb_type == types::LIST_QUICKLIST_2 {
                    r.length()?
                } else {
                    QUICKLIST_PACKED
                };
                let blob = r.string()?;
                match container {
                    QUICKLIST_PLAIN => l.push_back(blob.into_owned().into_boxed_slice()),
                    QUICKLIST_PACKED => {
                        let items = if rdb_type == types::LIST_QUICKLIST {
                            ziplist_items(&blob)?
                        } else {
                            listpack_items(&blob)?
                        };
                        l.extend(items.iter().map(Item::elem));
                    }
                    _ => return Err(RdbError::Corrupt("unknown quicklist container")),
                }
            }
            Value::List(Box::new(l))
        }
        other => return Err(RdbError::Unsupported(other)),
    };
    if v.is_empty_collection() {
        return Err(RdbError::Corrupt("empty collection"));
    }
    Ok(v)
}

const QUICKLIST_PLAIN: u64 = 1;
const QUICKLIST_PACKED: u64 = 2;

fn zset_add(z: &mut ZSet, member: &[u8], score: f64) -> Result<()> {
    if score.is_nan() {
        return Err(RdbError::Corrupt("NaN score"));
    }
    if !z.insert(member, score) {
        return Err(RdbError::Corrupt("duplicate sorted set member"));
    }
    Ok(())
}

fn hash_from_pairs(items: &[Item<'_>]) -> Result<Map<Elem, Elem>> {
    if !items.len().is_multiple_of(2) {
        return Err(RdbError::Corrupt("odd number of hash entries"));
    }
    let mut h = Map::with_capacity_and_hasher(items.len() / 2, Default::default());
    for pair in items.chunks_exact(2) {
        if h.insert(pair[0].elem(), pair[1].elem()).is_some() {
            return Err(RdbError::Corrupt("duplicate hash field"));
        }
    }
    Ok(h)
}

fn zset_from_pairs(items: &[Item<'_>]) -> Result<ZSet> {
    if !items.len().is_multiple_of(2) {
        return Err(RdbError::Corrupt("odd number of sorted set entries"));
    }
    let mut z = ZSet::default();
    for pair in items.chunks_exact(2) {
        let score = match pair[1] {
            Item::Int(n) => n as f64,
            Item::Str(s) => strtod_prefix(s).ok_or(RdbError::Corrupt("invalid score"))?,
        };
        let member = match pair[0] {
            Item::Str(s) => Cow::Borrowed(s),
            Item::Int(n) => Cow::Owned(int_bytes(n)),
        };
        zset_add(&mut z, &member, score)?;
    }
    Ok(z)
}

/// Members of an intset blob: `encoding u32 | length u32 | sorted little-endian integers`.
fn intset_members(blob: &[u8]) -> Result<Set<Elem>> {
    let mut r = Reader::new(blob);
    let width = r.u32_le()? as usize;
    let n = r.u32_le()? as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err(RdbError::Corrupt("bad intset encoding"));
    }
    if n.checked_mul(width) != Some(r.remaining()) {
        return Err(RdbError::Corrupt("intset length mismatch"));
    }
    let mut s = Set::with_capacity_and_hasher(n, Default::default());
    for chunk in r.bytes(n * width)?.chunks_exact(width) {
        let v = match width {
            2 => i64::from(i16::from_le_bytes([chunk[0], chunk[1]])),
            4 => i64::from(i32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])),
            _ => {
                let mut a = [0u8; 8];
                a.copy_from_slice(chunk);
                i64::from_le_bytes(a)
            }
        };
        if !s.insert(int_bytes(v).into_boxed_slice()) {
            return Err(RdbError::Corrupt("duplicate intset member"));
        }
    }
    Ok(s)
}

/// An entry of a ziplist or listpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// A string entry.
    Str(&'a [u8]),
    /// An integer entry.
    Int(i64),
}

impl Item<'_> {
    /// The entry as an owned element (integers in decimal, as Redis presents them).
    pub fn elem(&self) -> Elem {
        match self {
            Item::Str(s) => (*s).into(),
            Item::Int(n) => int_bytes(*n).into_boxed_slice(),
        }
    }
}

/// The entries of a ziplist blob:
/// `zlbytes u32 | zltail u32 | zllen u16 | entries | 0xff`, each entry
/// `prevlen (1 or 5 bytes) | encoding | data`.
pub fn ziplist_items(zl: &[u8]) -> Result<Vec<Item<'_>>> {
    const HEADER: usize = 10;
    if zl.len() < HEADER + 1 {
        return Err(RdbError::Corrupt("ziplist too short"));
    }
    let mut h = Reader::new(zl);
    let zlbytes = h.u32_le()? as usize;
    let zltail = h.u32_le()? as usize;
    let zllen = u16::from_le_bytes(h.array()?);
    if zlbytes != zl.len() || zltail >= zl.len() || zl[zl.len() - 1] != 0xff {
        return Err(RdbError::Corrupt("bad ziplist header"));
    }
    let mut r = Reader::new(&zl[..zl.len() - 1]);
    r.bytes(HEADER)?;
    let mut items = Vec::new();
    while r.remaining() > 0 {
        let prev = r.u8()?;
        match prev {
            0..=253 => {}
            254 => {
                r.bytes(4)?;
            }
            _ => return Err(RdbError::Corrupt("ziplist end marker inside entries")),
        }
        let enc = r.u8()?;
        let item = match enc >> 6 {
            0 => Item::Str(r.bytes((enc & 0x3f) as usize)?),
            1 => {
                let n = ((usize::from(enc & 0x3f)) << 8) | usize::from(r.u8()?);
                Item::Str(r.bytes(n)?)
            }
            2 => {
                let n = u32::from_be_bytes(r.array()?) as usize;
                Item::Str(r.bytes(n)?)
            }
            _ => match enc {
                0xc0 => Item::Int(i64::from(i16::from_le_bytes(r.array()?))),
                0xd0 => Item::Int(i64::from(i32::from_le_bytes(r.array()?))),
                0xe0 => Item::Int(i64::from_le_bytes(r.array()?)),
                0xf0 => {
                    let b: [u8; 3] = r.array()?;
                    Item::Int(i64::from(i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8))
                }
                0xfe => Item::Int(i64::from(r.u8()? as i8)),
                0xf1..=0xfd => Item::Int(i64::from(enc & 0x0f) - 1),
                _ => return Err(RdbError::Corrupt("bad ziplist entry encoding")),
            },
        };
        items.push(item);
    }
    if zllen != u16::MAX && usize::from(zllen) != items.len() {
        return Err(RdbError::Corrupt("ziplist length mismatch"));
    }
    Ok(items)
}

/// The entries of a listpack blob:
/// `total bytes u32 | count u16 | entries | 0xff`, each entry `encoding | data | backlen`.
pub fn listpack_items(lp: &[u8]) -> Result<Vec<Item<'_>>> {
    const HEADER: usize = 6;
    if lp.len() < HEADER + 1 {
        return Err(RdbError::Corrupt("listpack too short"));
    }
    let mut h = Reader::new(lp);
    let total = h.u32_le()? as usize;
    let count = u16::from_le_bytes(h.array()?);
    if total != lp.len() || lp[lp.len() - 1] != 0xff {
        return Err(RdbError::Corrupt("bad listpack header"));
    }
    let mut r = Reader::new(&lp[..lp.len() - 1]);
    r.bytes(HEADER)?;
    let mut items = Vec::new();
    while r.remaining() > 0 {
        let start = r.position();
        let enc = r.u8()?;
        let item = if enc & 0x80 == 0 {
            Item::Int(i64::from(enc & 0x7f))
        } else if enc & 0xc0 == 0x80 {
            Item::Str(r.bytes((enc & 0x3f) as usize)?)
        } else if enc & 0xe0 == 0xc0 {
            let u = (u16::from(enc & 0x1f) << 8) | u16::from(r.u8()?);
            // 13-bit two's complement.
            Item::Int(i64::from(((u << 3) as i16) >> 3))
        } else if enc & 0xf0 == 0xe0 {
            let n = (usize::from(enc & 0x0f) << 8) | usize::from(r.u8()?);
            Item::Str(r.bytes(n)?)
        } else {
            match enc {
                0xf0 => {
                    let n = u32::from_le_bytes(r.array()?) as usize;
                    Item::Str(r.bytes(n)?)
                }
                0xf1 => Item::Int(i64::from(i16::from_le_bytes(r.array()?))),
                0xf2 => {
                    let b: [u8; 3] = r.array()?;
                    Item::Int(i64::from(i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8))
                }
                0xf3 => Item::Int(i64::from(i32::from_le_bytes(r.array()?))),
                0xf4 => Item::Int(i64::from_le_bytes(r.array()?)),
                _ => return Err(RdbError::Corrupt("bad listpack entry encoding")),
            }
        };
        r.bytes(backlen_size((r.position() - start) as u64))?;
        items.push(item);
    }
    if count != u16::MAX && usize::from(count) != items.len() {
        return Err(RdbError::Corrupt("listpack length mismatch"));
    }
    Ok(items)
}

/// Size of a listpack entry's back-length field for an entry of `l` bytes
/// (as `lpEncodeBacklen`).
fn backlen_size(l: u64) -> usize {
    if l <= 127 {
        1
    } else if l < 16383 {
        2
    } else if l < 2_097_151 {
        3
    } else if l < 268_435_455 {
        4
    } else {
        5
    }
}

/// Decompresses an LZF block (liblzf's format, as Redis's `lzf_decompress`) that must expand
/// to exactly `out_len` bytes.
pub fn lzf_decompress(input: &[u8], out_len: u64) -> Result<Vec<u8>> {
    // One 3-byte back-reference expands to at most 264 bytes (88x): anything claiming much more
    // is corrupt and must not drive the allocation below.
    if out_len > (input.len() as u64).saturating_mul(128) {
        return Err(RdbError::Corrupt("impossible LZF expansion"));
    }
    let out_len = out_len as usize;
    let mut out = Vec::with_capacity(out_len);
    let mut ip = 0;
    while ip < input.len() {
        let ctrl = usize::from(input[ip]);
        ip += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            if out.len() + n > out_len || ip + n > input.len() {
                return Err(RdbError::Corrupt("invalid LZF literal run"));
            }
            out.extend_from_slice(&input[ip..ip + n]);
            ip += n;
        } else {
            let mut n = ctrl >> 5;
            if n == 7 {
                n += usize::from(*input.get(ip).ok_or(RdbError::Truncated)?);
                ip += 1;
            }
            let low = usize::from(*input.get(ip).ok_or(RdbError::Truncated)?);
            ip += 1;
            let back = ((ctrl & 0x1f) << 8) + low + 1;
            n += 2;
            if back > out.len() || out.len() + n > out_len {
                return Err(RdbError::Corrupt("invalid LZF back reference"));
            }
            let from = out.len() - back;
            // The source may overlap what is being written: copy byte by byte.
            for i in 0..n {
                let b = out[from + i];
                out.push(b);
            }
        }
    }
    if out.len() != out_len {
        return Err(RdbError::Corrupt("LZF length mismatch"));
    }
    Ok(out)
}

/// Decimal text of an integer.
fn int_bytes(n: i64) -> Vec<u8> {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut u = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    let mut v = Vec::with_capacity(buf.len() - i + 1);
    if n < 0 {
        v.push(b'-');
    }
    v.extend_from_slice(&buf[i..]);
    v
}

/// Parses the longest floating-point prefix of `s` after leading whitespace, like C's
/// `strtod`/`sscanf("%lg")` (which Redis uses for text scores). None when no prefix parses.
fn strtod_prefix(s: &[u8]) -> Option<f64> {
    let s = match s.iter().position(|c| !c.is_ascii_whitespace()) {
        Some(i) => &s[i..],
        None => return None,
    };
    let end = s
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))
        .unwrap_or(s.len());
    let s = &s[..end];
    // Fast path: the whole token is a number (always the case for what Redis writes).
    (1..=s.len()).rev().find_map(|n| {
        std::str::from_utf8(&s[..n])
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
    })
}

// ---------------------------------------------------------------------------------------------
// RDB files (full resync snapshots, SAVE)
// ---------------------------------------------------------------------------------------------

/// RDB file opcodes (`RDB_OPCODE_*`).
pub mod opcodes {
    /// Function library (Redis 7.0).
    pub const FUNCTION2: u8 = 245;
    /// Function library (7.0 release candidates).
    pub const FUNCTION: u8 = 246;
    /// Module auxiliary data.
    pub const MODULE_AUX: u8 = 247;
    /// LRU idle time of the next key.
    pub const IDLE: u8 = 248;
    /// LFU frequency of the next key.
    pub const FREQ: u8 = 249;
    /// Auxiliary field (name, value).
    pub const AUX: u8 = 250;
    /// Hash table size hints.
    pub const RESIZEDB: u8 = 251;
    /// Expiry of the next key in milliseconds.
    pub const EXPIRETIME_MS: u8 = 252;
    /// Expiry of the next key in seconds.
    pub const EXPIRETIME: u8 = 253;
    /// Database selector.
    pub const SELECTDB: u8 = 254;
    /// End of file (a CRC64 follows).
    pub const EOF: u8 = 255;
}

/// Writes the RDB header and the auxiliary fields Redis 7 writes.
pub fn write_file_header(out: &mut Vec<u8>, aux: &[(&str, String)]) {
    out.extend_from_slice(format!("REDIS{RDB_VERSION:04}").as_bytes());
    for (k, v) in aux {
        out.push(opcodes::AUX);
        write_string(out, k.as_bytes());
        write_string(out, v.as_bytes());
    }
}

/// Writes a database selector with its size hints.
pub fn write_file_db(out: &mut Vec<u8>, db: usize, keys: usize, expires: usize) {
    out.push(opcodes::SELECTDB);
    write_len(out, db as u64);
    out.push(opcodes::RESIZEDB);
    write_len(out, keys as u64);
    write_len(out, expires as u64);
}

/// Writes one key: optional expiry (unix ms, 0 = none), type byte, key, value.
pub fn write_file_key(out: &mut Vec<u8>, key: &[u8], v: &Value, expire_at: u64) {
    if expire_at != 0 {
        out.push(opcodes::EXPIRETIME_MS);
        out.extend_from_slice(&expire_at.to_le_bytes());
    }
    out.push(object_type(v));
    write_string(out, key);
    write_object(out, v);
}

/// Ends the file: EOF opcode and the CRC64 of everything before the checksum.
pub fn write_file_end(out: &mut Vec<u8>) {
    out.push(opcodes::EOF);
    let crc = crc64(0, out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// One key read from an RDB file.
pub struct FileKey<'a> {
    /// Database number.
    pub db: usize,
    /// The key.
    pub key: Cow<'a, [u8]>,
    /// The value.
    pub value: Value,
    /// Absolute expiry in unix ms, 0 for none.
    pub expire_at: u64,
}

/// Reads a whole RDB file (version ≤ ours; what Redis 7.0 writes, minus streams and modules),
/// calling `each` for every key. Auxiliary fields are passed to `aux`. The trailing CRC64 is
/// verified unless it is zero (checksums disabled). Never panics on malformed input.
pub fn read_file(
    data: &[u8],
    mut aux: impl FnMut(&[u8], &[u8]),
    mut each: impl FnMut(FileKey<'_>),
) -> Result<()> {
    if data.len() < 9 || &data[..5] != b"REDIS" {
        return Err(RdbError::Corrupt("not an RDB file"));
    }
    let version: u16 = std::str::from_utf8(&data[5..9])
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or(RdbError::Corrupt("bad RDB version"))?;
    if version == 0 || version > RDB_VERSION + 1 {
        return Err(RdbError::Unsupported(version.min(255) as u8));
    }
    let mut r = Reader::new(data);
    r.bytes(9)?;
    let mut db = 0usize;
    let mut expire_at = 0u64;
    loop {
        let op = r.u8()?;
        match op {
            opcodes::EOF => {
                if version >= 5 && r.remaining() >= 8 {
                    let end = r.position();
                    let stored = r.u64_le()?;
                    if stored != 0 && stored != crc64(0, &data[..end]) {
                        return Err(RdbError::Checksum);
                    }
                }
                return Ok(());
            }
            opcodes::AUX => {
                let k = r.string()?;
                let v = r.string()?;
                aux(&k, &v);
            }
            opcodes::RESIZEDB => {
                r.length()?;
                r.length()?;
            }
            opcodes::SELECTDB => db = r.length()? as usize,
            opcodes::EXPIRETIME_MS => expire_at = r.u64_le()?,
            opcodes::EXPIRETIME => expire_at = r.u32_le()? as u64 * 1000,
            opcodes::IDLE => {
                r.length()?;
            }
            opcodes::FREQ => {
                r.u8()?;
            }
            opcodes::FUNCTION2 => {
                r.string()?;
            }
            opcodes::FUNCTION | opcodes::MODULE_AUX => return Err(RdbError::Unsupported(op)),
            t => {
                let key = r.string()?;
                let value = read_object(t, &mut r)?;
                each(FileKey {
                    db,
                    key,
                    value,
                    expire_at,
                });
                expire_at = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads DUMPed by a real redis-server 7.0.15.
    const REDIS_LIST: &[u8] = b"\x12\x01\x02\x1c\x1c\x00\x00\x00\x07\x00\x81a\x02\x81b\x02\x01\x01\x02\x01\xc1,\x02\xf2p\x11\x01\x04\xdf\xfb\x02\xff\n\x00\x05\xa3/\x89\xef\xae\xffn";
    const REDIS_INTSET: &[u8] = b"\x0b\x0e\x02\x00\x00\x00\x03\x00\x00\x00\x01\x00\x02\x00\x03\x00\n\x00\xa5\x02\\\xe2mnM\x1b";
    const REDIS_HASH: &[u8] = b"\x10\x12\x12\x00\x00\x00\x04\x00\x81f\x02\x81v\x02\x81a\x02\x01\x01\xff\n\x00d2<\xf1X\x10Fx";
    const REDIS_ZSET: &[u8] = b"\x11\x14\x14\x00\x00\x00\x04\x00\x81a\x02\x831.5\x04\x81b\x02\x02\x01\xff\n\x00\xfa\x02\xb4%\xaf\x18\x87c";
    const REDIS_INT: &[u8] = b"\x00\xc190\n\x00\x9d\x94\xea'\x93\xfc\x08\xb9";
    const REDIS_LZF: &[u8] =
        b"\x00\xc3\x14/\x0chello world h\xe0\x17\x0b\x01ld\n\x00\x12\xca\xcc+[\xafU\xba";
    const REDIS_STREAM: &[u8] = b"\x13\x01\x10\x00\x00\x01\xa2\x00\xa9\x05W\x00\x00\x00\x00\x00\x00\x00\x00\x1c\x1c\x00\x00\x00\n\x00\x01\x01\x00\x01\x01\x01\x81a\x02\x00\x01\x02\x01\x00\x01\x00\x01\x01\x01\x04\x01\xff\x01\x81\x00\x00\x01\xa2\x00\xa9\x05W\x00\x81\x00\x00\x01\xa2\x00\xa9\x05W\x00\x00\x00\x01\x00\n\x00\xda\xefN\xe3!\x93\xcf,";

    fn list(items: &[&[u8]]) -> Value {
        Value::List(Box::new(items.iter().map(|e| Elem::from(*e)).collect()))
    }

    fn set(items: &[&[u8]]) -> Value {
        Value::Set(Box::new(items.iter().map(|e| Elem::from(*e)).collect()))
    }

    fn hash(pairs: &[(&[u8], &[u8])]) -> Value {
        Value::Hash(Box::new(
            pairs
                .iter()
                .map(|(k, v)| (Elem::from(*k), Elem::from(*v)))
                .collect(),
        ))
    }

    fn zset(pairs: &[(&[u8], f64)]) -> Value {
        let mut z = ZSet::default();
        for (m, s) in pairs {
            z.insert(m, *s);
        }
        Value::ZSet(Box::new(z))
    }

    /// Wraps a value encoding into a DUMP payload.
    fn frame(body: &[u8], version: u16) -> Vec<u8> {
        let mut p = body.to_vec();
        p.extend_from_slice(&version.to_le_bytes());
        let crc = crc64(0, &p);
        p.extend_from_slice(&crc.to_le_bytes());
        p
    }

    /// Builds a ziplist (the format Redis < 7 wrote) from entries.
    fn ziplist(items: &[Item<'_>]) -> Vec<u8> {
        let mut entries = Vec::new();
        let mut prev = 0usize;
        let mut tail = 10;
        for it in items {
            let start = entries.len();
            tail = 10 + start;
            if prev < 254 {
                entries.push(prev as u8);
            } else {
                entries.push(254);
                entries.extend_from_slice(&(prev as u32).to_le_bytes());
            }
            match *it {
                Item::Str(s) => {
                    if s.len() < 64 {
                        entries.push(s.len() as u8);
                    } else if s.len() < 16384 {
                        entries.push(0x40 | (s.len() >> 8) as u8);
                        entries.push(s.len() as u8);
                    } else {
                        entries.push(0x80);
                        entries.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    }
                    entries.extend_from_slice(s);
                }
                Item::Int(n) => {
                    if (0..=12).contains(&n) {
                        entries.push(0xf1 + n as u8);
                    } else if let Ok(v) = i8::try_from(n) {
                        entries.push(0xfe);
                        entries.push(v as u8);
                    } else if let Ok(v) = i16::try_from(n) {
                        entries.push(0xc0);
                        entries.extend_from_slice(&v.to_le_bytes());
                    } else if (-(1 << 23)..(1 << 23)).contains(&n) {
                        entries.push(0xf0);
                        entries.extend_from_slice(&(n as i32).to_le_bytes()[..3]);
                    } else if let Ok(v) = i32::try_from(n) {
                        entries.push(0xd0);
                        entries.extend_from_slice(&v.to_le_bytes());
                    } else {
                        entries.push(0xe0);
                        entries.extend_from_slice(&n.to_le_bytes());
                    }
                }
            }
            prev = entries.len() - start;
        }
        let total = 10 + entries.len() + 1;
        let mut zl = Vec::new();
        zl.extend_from_slice(&(total as u32).to_le_bytes());
        zl.extend_from_slice(&(tail as u32).to_le_bytes());
        zl.extend_from_slice(&(items.len() as u16).to_le_bytes());
        zl.extend_from_slice(&entries);
        zl.push(0xff);
        zl
    }

    /// Builds a listpack from entries (strings only, plus a few integer encodings).
    fn listpack(items: &[Item<'_>]) -> Vec<u8> {
        let mut entries = Vec::new();
        for it in items {
            let start = entries.len();
            match *it {
                Item::Str(s) => {
                    if s.len() < 64 {
                        entries.push(0x80 | s.len() as u8);
                    } else if s.len() < 4096 {
                        entries.push(0xe0 | (s.len() >> 8) as u8);
                        entries.push(s.len() as u8);
                    } else {
                        entries.push(0xf0);
                        entries.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    }
                    entries.extend_from_slice(s);
                }
                Item::Int(n) => {
                    if (0..=127).contains(&n) {
                        entries.push(n as u8);
                    } else if (-4096..4096).contains(&n) {
                        let u = (n as u16) & 0x1fff;
                        entries.push(0xc0 | (u >> 8) as u8);
                        entries.push(u as u8);
                    } else if let Ok(v) = i16::try_from(n) {
                        entries.push(0xf1);
                        entries.extend_from_slice(&v.to_le_bytes());
                    } else if (-(1 << 23)..(1 << 23)).contains(&n) {
                        entries.push(0xf2);
                        entries.extend_from_slice(&(n as i32).to_le_bytes()[..3]);
                    } else if let Ok(v) = i32::try_from(n) {
                        entries.push(0xf3);
                        entries.extend_from_slice(&v.to_le_bytes());
                    } else {
                        entries.push(0xf4);
                        entries.extend_from_slice(&n.to_le_bytes());
                    }
                }
            }
            let l = (entries.len() - start) as u64;
            // Highest 7-bit group first without flag; the others carry the 128 flag.
            let size = backlen_size(l);
            let back: Vec<u8> = (0..size)
                .map(|i| {
                    let part = ((l >> (7 * (size - 1 - i))) & 127) as u8;
                    if i == 0 {
                        part
                    } else {
                        part | 128
                    }
                })
                .collect();
            entries.extend_from_slice(&back);
        }
        let total = 6 + entries.len() + 1;
        let mut lp = Vec::new();
        lp.extend_from_slice(&(total as u32).to_le_bytes());
        lp.extend_from_slice(&(items.len() as u16).to_le_bytes());
        lp.extend_from_slice(&entries);
        lp.push(0xff);
        lp
    }

    fn rdb_string(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_len(&mut out, s.len() as u64);
        out.extend_from_slice(s);
        out
    }

    #[test]
    fn crc64_check_value() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        let split = crc64(crc64(0, b"1234"), b"56789");
        assert_eq!(split, 0xe9c6_d914_c4b8_d9ca);
        assert_eq!(crc64(0, b""), 0);
    }

    #[test]
    fn reads_redis_payloads() {
        assert_eq!(
            restore_value(REDIS_LIST),
            Ok(list(&[b"a", b"b", b"1", b"2", b"300", b"70000", b"-5"]))
        );
        assert_eq!(restore_value(REDIS_INTSET), Ok(set(&[b"1", b"2", b"3"])));
        assert_eq!(
            restore_value(REDIS_HASH),
            Ok(hash(&[(b"f", b"v"), (b"a", b"1")]))
        );
        assert_eq!(
            restore_value(REDIS_ZSET),
            Ok(zset(&[(b"a", 1.5), (b"b", 2.0)]))
        );
        assert_eq!(restore_value(REDIS_INT), Ok(Value::Str(b"12345".to_vec())));
        assert_eq!(
            restore_value(REDIS_LZF),
            Ok(Value::Str(
                b"hello world hello world hello world hello world".to_vec()
            ))
        );
        assert_eq!(
            restore_value(REDIS_STREAM),
            Err(RdbError::Unsupported(types::STREAM_LISTPACKS_2))
        );
    }

    #[test]
    fn writes_plain_encodings_and_round_trips() {
        assert_eq!(
            dump_value(&Value::Str(b"12345".to_vec())),
            REDIS_INT,
            "integer strings are written like Redis"
        );
        let long: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let big_list: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("item-{i}").into_bytes())
            .collect();
        let values = vec![
            Value::Str(Vec::new()),
            Value::Str(b"hello".to_vec()),
            Value::Str(b"-2147483648".to_vec()),
            Value::Str(b"2147483648".to_vec()),
            Value::Str(b"007".to_vec()),
            Value::Str(long.clone()),
            list(&[b"a", b"", b"-1", &long]),
            Value::List(Box::new(big_list.iter().map(|e| e[..].into()).collect())),
            set(&[b"1", b"x", b"-100000"]),
            hash(&[(b"f", b"v"), (b"n", b"1"), (b"big", &long)]),
            zset(&[
                (b"a", 1.5),
                (b"b", f64::INFINITY),
                (b"c", f64::NEG_INFINITY),
                (b"d", -0.0),
                (b"e", 1e300),
            ]),
        ];
        for v in values {
            let p = dump_value(&v);
            assert_eq!(p[0], object_type(&v));
            assert_eq!(verify_payload(&p), Ok(RDB_VERSION));
            assert_eq!(restore_value(&p).as_ref(), Ok(&v));
        }
    }

    #[test]
    fn reads_ziplists_and_listpacks() {
        let ints = [
            0i64,
            12,
            13,
            -1,
            127,
            -128,
            300,
            -4096,
            4095,
            -30000,
            70000,
            -8_000_000,
            8_388_607,
            1 << 30,
            i64::MAX,
            i64::MIN,
        ];
        let long = vec![b'x'; 20_000];
        let mid = vec![b'y'; 300];
        let mut items: Vec<Item> = ints.iter().map(|&n| Item::Int(n)).collect();
        items.push(Item::Str(b"str"));
        items.push(Item::Str(&long));
        items.push(Item::Str(&mid));
        let expected: VecDeque<Elem> = items.iter().map(Item::elem).collect();
        let zl = ziplist(&items);
        let lp = listpack(&items);
        assert_eq!(ziplist_items(&zl).unwrap(), items);
        assert_eq!(listpack_items(&lp).unwrap(), items);

        // LIST_ZIPLIST, LIST_QUICKLIST (two nodes), LIST_QUICKLIST_2 (packed + plain).
        let mut body = vec![types::LIST_ZIPLIST];
        body.extend(rdb_string(&zl));
        assert_eq!(
            restore_value(&frame(&body, 9)),
            Ok(Value::List(Box::new(expected.clone())))
        );
        let mut body = vec![types::LIST_QUICKLIST, 2];
        body.extend(rdb_string(&zl));
        body.extend(rdb_string(&ziplist(&[Item::Str(b"last")])));
        let mut exp2 = expected.clone();
        exp2.push_back(b"last"[..].into());
        assert_eq!(
            restore_value(&frame(&body, 9)),
            Ok(Value::List(Box::new(exp2.clone())))
        );
        let mut body = vec![types::LIST_QUICKLIST_2, 3, 2];
        body.extend(rdb_string(&lp));
        body.push(2);
        body.extend(rdb_string(&listpack(&[])));
        body.push(1);
        body.extend(rdb_string(b"last"));
        assert_eq!(
            restore_value(&frame(&body, 10)),
            Ok(Value::List(Box::new(exp2)))
        );

        // Hashes and sorted sets in both blob formats.
        let pairs = [
            Item::Str(b"f1"),
            Item::Str(b"v1"),
            Item::Int(7),
            Item::Int(-70000),
        ];
        let h = hash(&[(b"f1", b"v1"), (b"7", b"-70000")]);
        for (t, blob) in [
            (types::HASH_ZIPLIST, ziplist(&pairs)),
            (types::HASH_LISTPACK, listpack(&pairs)),
        ] {
            let mut body = vec![t];
            body.extend(rdb_string(&blob));
            assert_eq!(restore_value(&frame(&body, 10)).as_ref(), Ok(&h));
        }
        let zpairs = [
            Item::Str(b"a"),
            Item::Int(-3),
            Item::Int(5),
            Item::Str(b"2.5"),
            Item::Str(b"c"),
            Item::Str(b"inf"),
        ];
        let z = zset(&[(b"a", -3.0), (b"5", 2.5), (b"c", f64::INFINITY)]);
        for (t, blob) in [
            (types::ZSET_ZIPLIST, ziplist(&zpairs)),
            (types::ZSET_LISTPACK, listpack(&zpairs)),
        ] {
            let mut body = vec![t];
            body.extend(rdb_string(&blob));
            assert_eq!(restore_value(&frame(&body, 10)).as_ref(), Ok(&z));
        }
    }

    #[test]
    fn reads_old_zset_and_intset_widths() {
        let mut body = vec![types::ZSET, 3];
        body.extend(rdb_string(b"a"));
        body.extend(rdb_string(b"1.25"));
        body.extend(rdb_string(b"b"));
        body.push(255);
        body.extend(rdb_string(b"c"));
        body.extend(rdb_string(b" 2x"));
        assert_eq!(
            restore_value(&frame(&body, 6)),
            Ok(zset(&[
                (b"a", 1.25),
                (b"b", f64::NEG_INFINITY),
                (b"c", 2.0)
            ]))
        );
        let mut nan = vec![types::ZSET, 1];
        nan.extend(rdb_string(b"a"));
        nan.push(253);
        assert!(restore_value(&frame(&nan, 6)).is_err());

        let mut blob = Vec::new();
        blob.extend_from_slice(&8u32.to_le_bytes());
        blob.extend_from_slice(&2u32.to_le_bytes());
        blob.extend_from_slice(&i64::MIN.to_le_bytes());
        blob.extend_from_slice(&5i64.to_le_bytes());
        let mut body = vec![types::SET_INTSET];
        body.extend(rdb_string(&blob));
        assert_eq!(
            restore_value(&frame(&body, 10)),
            Ok(set(&[b"-9223372036854775808", b"5"]))
        );
    }

    #[test]
    fn rejects_bad_payloads() {
        assert_eq!(restore_value(b""), Err(RdbError::Checksum));
        assert_eq!(restore_value(b"garbage"), Err(RdbError::Checksum));
        let mut p = REDIS_HASH.to_vec();
        let n = p.len();
        p[n - 1] ^= 1;
        assert_eq!(restore_value(&p), Err(RdbError::Checksum));
        assert_eq!(
            restore_value(&frame(b"\x00\x01a", 11)),
            Err(RdbError::Checksum)
        );
        assert!(restore_value(&frame(b"\x00\x01a", 0)).is_ok());
        // Bytes after the value are ignored, as in Redis.
        assert!(restore_value(&frame(b"\x00\x01azzz", 10)).is_ok());
        for body in [
            &b"\x1e\x01a"[..],
            b"\x07\x01a",
            b"\x01\x00",
            b"\x02\x02\x01a\x01a",
            b"\x04\x02\x01a\x01b\x01a\x01c",
            b"\x12\x01\x03\x03abc",
            b"\x00\x20ab",
            b"\x00\xc4",
            b"\x01\x80\xff\xff\xff\xff",
            b"\x00\xc3\x01\xbf\xff\xff\xff\xff\x00",
        ] {
            assert!(restore_value(&frame(body, 10)).is_err(), "{body:?}");
        }
        let err = restore_value(&frame(b"\x1e", 10)).unwrap_err();
        assert_eq!(err.restore_reply(), "ERR Bad data format");
        assert_eq!(
            RdbError::Checksum.restore_reply(),
            "ERR DUMP payload version or checksum are wrong"
        );
    }

    #[test]
    fn lzf_edge_cases() {
        assert_eq!(lzf_decompress(b"\x02abc", 3), Ok(b"abc".to_vec()));
        // Literal "a", then a back reference of length 9 at distance 1 (overlapping copy).
        assert_eq!(
            lzf_decompress(b"\x00a\xe0\x00\x00", 10).map(|v| v.len()),
            Ok(10)
        );
        assert!(lzf_decompress(b"\x02abc", 4).is_err());
        assert!(lzf_decompress(b"\x05abc", 6).is_err());
        assert!(lzf_decompress(b"\x20\x05", 3).is_err());
        assert!(lzf_decompress(b"\xe0", 100).is_err());
        assert!(lzf_decompress(b"\x00a", u64::MAX).is_err());
    }

    /// Random mutations of valid payloads (CRC fixed up so the decoder runs) must never panic.
    #[test]
    fn fuzz_mutations_never_panic() {
        let mut seeds: Vec<Vec<u8>> = vec![
            REDIS_LIST.to_vec(),
            REDIS_INTSET.to_vec(),
            REDIS_HASH.to_vec(),
            REDIS_ZSET.to_vec(),
            REDIS_INT.to_vec(),
            REDIS_LZF.to_vec(),
            REDIS_STREAM.to_vec(),
            dump_value(&list(&[b"a", b"bb", b"123"])),
            dump_value(&zset(&[(b"a", 1.0), (b"b", 2.0)])),
            dump_value(&hash(&[(b"f", b"v")])),
        ];
        let items = [Item::Int(-70000), Item::Str(b"xyz"), Item::Int(5)];
        for (t, blob) in [
            (types::LIST_QUICKLIST, ziplist(&items)),
            (types::LIST_ZIPLIST, ziplist(&items)),
            (types::ZSET_LISTPACK, listpack(&items[..2])),
        ] {
            let mut body = vec![t];
            if t == types::LIST_QUICKLIST {
                body.push(1);
            }
            body.extend(rdb_string(&blob));
            seeds.push(frame(&body, 10));
        }
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let seed = &seeds[round % seeds.len()];
            let mut body = seed[..seed.len() - 10].to_vec();
            for _ in 0..1 + next() % 4 {
                let r = next();
                match r % 4 {
                    0 if !body.is_empty() => {
                        let i = (next() % body.len() as u64) as usize;
                        body[i] = next() as u8;
                    }
                    1 if !body.is_empty() => {
                        let i = (next() % body.len() as u64) as usize;
                        body[i] ^= 1 << (next() % 8);
                    }
                    2 if !body.is_empty() => {
                        let n = (next() % body.len() as u64) as usize;
                        body.truncate(n);
                    }
                    _ => {
                        let i = (next() % (body.len() as u64 + 1)) as usize;
                        body.insert(i, next() as u8);
                    }
                }
            }
            let _ = restore_value(&frame(&body, 10));
        }
    }
}
