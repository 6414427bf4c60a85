//! Sorted-set commands (Redis 7.0 semantics): ZADD, ZINCRBY, ZREM, ZSCORE, ZMSCORE, ZCARD,
//! ZCOUNT, ZLEXCOUNT, the ZRANGE family (ZRANGE, ZRANGESTORE, ZREVRANGE, Z[REV]RANGEBYSCORE,
//! Z[REV]RANGEBYLEX), ZRANK, ZREVRANK, ZPOPMIN/ZPOPMAX, ZMPOP, the blocking BZPOPMIN/BZPOPMAX/
//! BZMPOP, ZREMRANGEBYRANK/SCORE/LEX, ZUNION/ZINTER/ZDIFF[STORE], ZINTERCARD, ZRANDMEMBER, ZSCAN.
//!
//! Number handling follows Redis 7.0.15 byte for byte: scores are parsed like `strtod` (hex and
//! `inf` accepted, overflow and NaN rejected) and printed like `%.17g` (so `0.1` prints as
//! `0.10000000000000001`, exactly as Redis 7.0 does), as RESP3 double frames where Redis uses them.
//!
//! ZSCAN: sets small enough for Redis's listpack encoding are returned in one reply with cursor
//! 0 (as Redis does); larger ones are walked in score order, the cursor being an order-preserving
//! encoding of the next score to visit (members sharing one score are always returned together).

use super::{Ctx, Handler, Outcome, TimeoutReply};
use crate::db::{Entry, Locked, WrongType};
use crate::notify as ev;
use crate::reply::Reply;
use crate::value::{Elem, Value, ZSet};
use rand::Rng;
use smallvec::SmallVec;
use std::io::Write;

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("zadd", zadd),
    ("zincrby", zincrby),
    ("zrem", zrem),
    ("zscore", zscore),
    ("zmscore", zmscore),
    ("zcard", zcard),
    ("zcount", zcount),
    ("zlexcount", zlexcount),
    ("zrange", zrange),
    ("zrangestore", zrangestore),
    ("zrevrange", zrevrange),
    ("zrangebyscore", zrangebyscore),
    ("zrevrangebyscore", zrevrangebyscore),
    ("zrangebylex", zrangebylex),
    ("zrevrangebylex", zrevrangebylex),
    ("zrank", zrank),
    ("zrevrank", zrevrank),
    ("zpopmin", zpopmin),
    ("zpopmax", zpopmax),
    ("bzpopmin", bzpopmin),
    ("bzpopmax", bzpopmax),
    ("zmpop", zmpop),
    ("bzmpop", bzmpop),
    ("zremrangebyrank", zremrangebyrank),
    ("zremrangebyscore", zremrangebyscore),
    ("zremrangebylex", zremrangebylex),
    ("zunion", zunion),
    ("zinter", zinter),
    ("zdiff", zdiff),
    ("zunionstore", zunionstore),
    ("zinterstore", zinterstore),
    ("zdiffstore", zdiffstore),
    ("zintercard", zintercard),
    ("zrandmember", zrandmember),
    ("zscan", zscan),
];

const ERR_NAN: &str = "ERR resulting score is not a number (NaN)";
const ERR_NOT_FLOAT_RANGE: &str = "ERR min or max is not a float";
const ERR_NOT_LEX_RANGE: &str = "ERR min or max not valid string range item";
const ERR_TIMEOUT_FLOAT: &str = "ERR timeout is not a float or out of range";
const ERR_TIMEOUT_NEG: &str = "ERR timeout is negative";
const ERR_POSITIVE: &str = "ERR value is out of range, must be positive";

// ---------------------------------------------------------------------------------------------
// Numbers: parsing like strtod, printing like %.17g.
// ---------------------------------------------------------------------------------------------

/// C `isspace`.
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Parses the whole of `s` as C `strtod` would (decimal, hex, inf/infinity; NaN rejected).
/// Returns the value and whether it over- or underflowed (what `errno == ERANGE` with a
/// HUGE_VAL or zero result means to Redis).
fn strtod_whole(s: &[u8]) -> Option<(f64, bool)> {
    let (neg, body) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let first = *body.first()?;
    let (v, erange) = if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity")
    {
        (f64::INFINITY, false)
    } else if body.len() > 2 && first == b'0' && (body[1] | 0x20) == b'x' {
        let v = parse_hex_float(&body[2..])?;
        (v, v.is_infinite())
    } else {
        if !(first.is_ascii_digit() || first == b'.') {
            return None;
        }
        if !body
            .iter()
            .all(|&c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            return None;
        }
        let t = std::str::from_utf8(body).ok()?;
        let v: f64 = t.parse().ok()?;
        let mantissa_end = body
            .iter()
            .position(|&c| c == b'e' || c == b'E')
            .unwrap_or(body.len());
        let underflow = v == 0.0
            && body[..mantissa_end]
                .iter()
                .any(|&c| (b'1'..=b'9').contains(&c));
        (v, v.is_infinite() || underflow)
    };
    Some((if neg { -v } else { v }, erange))
}

/// The part of a hex float after `0x`: hex digits, optional fraction, optional `p` exponent.
fn parse_hex_float(h: &[u8]) -> Option<f64> {
    let mut mant = 0f64;
    let mut exp: i64 = 0;
    let mut any = false;
    let mut dot = false;
    let mut i = 0;
    while i < h.len() {
        let c = h[i];
        if let Some(d) = (c as char).to_digit(16) {
            mant = mant * 16.0 + d as f64;
            if dot {
                exp -= 4;
            }
            any = true;
        } else if c == b'.' && !dot {
            dot = true;
        } else {
            break;
        }
        i += 1;
    }
    if !any {
        return None;
    }
    if i < h.len() {
        if h[i] | 0x20 != b'p' {
            return None;
        }
        let rest = &h[i + 1..];
        let (eneg, digits) = match rest.first() {
            Some(b'-') => (true, &rest[1..]),
            Some(b'+') => (false, &rest[1..]),
            _ => (false, rest),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut e: i64 = 0;
        for &d in digits {
            e = (e * 10 + (d - b'0') as i64).min(100_000);
        }
        exp += if eneg { -e } else { e };
    }
    Some(mant * 2f64.powi(exp.clamp(-100_000, 100_000) as i32))
}

/// A score / weight / increment argument (Redis `getDoubleFromObject`).
fn parse_score(s: &[u8]) -> Option<f64> {
    if s.is_empty() || is_c_space(s[0]) {
        return None;
    }
    match strtod_whole(s)? {
        (_, true) => None,
        (v, false) => Some(v),
    }
}

/// One end of a score range after its optional `(` (Redis `zslParseRange`: plain `strtod`).
fn parse_range_number(s: &[u8]) -> Option<f64> {
    let start = s.iter().position(|&c| !is_c_space(c)).unwrap_or(s.len());
    if start == s.len() {
        // strtod("") converts nothing and stops at the terminator: Redis accepts it as 0.
        return if s.is_empty() { Some(0.0) } else { None };
    }
    strtod_whole(&s[start..]).map(|(v, _)| v)
}

/// A blocking timeout in seconds (Redis `getTimeoutFromObjectOrReply`), as milliseconds
/// (0 = forever). Replies the error itself.
fn parse_timeout(out: &mut Reply, s: &[u8]) -> Option<u64> {
    let v = if s.is_empty() || is_c_space(s[0]) {
        None
    } else {
        strtod_whole(s).map(|(v, _)| v)
    };
    let Some(v) = v else {
        out.error(ERR_TIMEOUT_FLOAT);
        return None;
    };
    let ms = v * 1000.0;
    // C casts the long double to long long: out-of-range values become LLONG_MIN.
    if ms.is_nan() || ms >= 9.223_372_036_854_775e18 || (ms as i64) < 0 {
        out.error(ERR_TIMEOUT_NEG);
        return None;
    }
    Some(ms as i64 as u64)
}

/// Parses an integer in `min..=max`; on failure replies `msg` (or the Redis default texts).
fn parse_range_long(
    out: &mut Reply,
    s: &[u8],
    min: i64,
    max: i64,
    msg: Option<&str>,
) -> Option<i64> {
    match slotgate_protocol::resp::parse_i64(s) {
        Some(v) if v >= min && v <= max => Some(v),
        Some(_) => {
            match msg {
                Some(m) => out.error(m),
                None => out.error(&format!(
                    "ERR value is out of range, value must between {min} and {max}"
                )),
            }
            None
        }
        None => {
            match msg {
                Some(m) => out.error(m),
                None => out.not_integer(),
            }
            None
        }
    }
}

/// Parses a plain integer argument, replying the Redis error when it is not one.
fn parse_long(out: &mut Reply, s: &[u8]) -> Option<i64> {
    let v = slotgate_protocol::resp::parse_i64(s);
    if v.is_none() {
        out.not_integer();
    }
    v
}

/// A double formatted as C's `%.17g` (what Redis 7.0 uses for scores), kept on the stack.
struct G17 {
    buf: [u8; 40],
    len: usize,
}

impl G17 {
    fn new(d: f64) -> G17 {
        let mut g = G17 {
            buf: [0; 40],
            len: 0,
        };
        if d.is_nan() {
            g.push(b"nan");
            return g;
        }
        if d.is_infinite() {
            g.push(if d > 0.0 { b"inf" } else { b"-inf" });
            return g;
        }
        // 17 significant digits in scientific form, e.g. "-1.0000000000000001e-5".
        let mut tmp = [0u8; 40];
        let n = {
            let mut w = &mut tmp[..];
            let _ = write!(w, "{d:.16e}");
            40 - w.len()
        };
        let s = &tmp[..n];
        let (neg, s) = match s.first() {
            Some(b'-') => (true, &s[1..]),
            _ => (false, s),
        };
        let Some(epos) = s.iter().position(|&c| c == b'e') else {
            g.push(s);
            return g;
        };
        let exp: i32 = std::str::from_utf8(&s[epos + 1..])
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let mut digits = [b'0'; 17];
        let mut nd = 0;
        for &c in &s[..epos] {
            if c.is_ascii_digit() && nd < 17 {
                digits[nd] = c;
                nd += 1;
            }
        }
        let mut nd = 17;
        while nd > 1 && digits[nd - 1] == b'0' {
            nd -= 1;
        }
        if neg {
            g.push(b"-");
        }
        if !(-4..17).contains(&exp) {
            g.push(&digits[..1]);
            if nd > 1 {
                g.push(b".");
                g.push(&digits[1..nd]);
            }
            g.push(if exp < 0 { b"e-" } else { b"e+" });
            let a = exp.unsigned_abs();
            if a < 10 {
                g.push(b"0");
            }
            let mut eb = [0u8; 8];
            let mut w = &mut eb[..];
            let _ = write!(w, "{a}");
            let el = 8 - w.len();
            g.push(&eb[..el]);
        } else if exp >= 0 {
            let int_digits = exp as usize + 1;
            if nd <= int_digits {
                g.push(&digits[..nd]);
                for _ in nd..int_digits {
                    g.push(b"0");
                }
            } else {
                g.push(&digits[..int_digits]);
                g.push(b".");
                g.push(&digits[int_digits..nd]);
            }
        } else {
            g.push(b"0.");
            for _ in 0..(-exp - 1) {
                g.push(b"0");
            }
            g.push(&digits[..nd]);
        }
        g
    }

    fn push(&mut self, b: &[u8]) {
        let end = (self.len + b.len()).min(self.buf.len());
        let n = end - self.len;
        self.buf[self.len..end].copy_from_slice(&b[..n]);
        self.len = end;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Writes a score: a RESP3 double frame, or a RESP2 bulk string (`%.17g`, as Redis 7.0).
fn write_score(out: &mut Reply, d: f64) {
    let g = G17::new(d);
    if out.resp3 {
        let mut b = [0u8; 48];
        b[0] = b',';
        let n = g.len;
        b[1..1 + n].copy_from_slice(g.as_bytes());
        b[1 + n..3 + n].copy_from_slice(b"\r\n");
        out.raw(&b[..3 + n]);
    } else {
        out.bulk(g.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Ranges.
// ---------------------------------------------------------------------------------------------

/// A score interval with inclusive/exclusive ends.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ScoreRange {
    min: f64,
    max: f64,
    minex: bool,
    maxex: bool,
}

impl ScoreRange {
    /// Parses `min max` as Redis's `zslParseRange`.
    fn parse(min: &[u8], max: &[u8]) -> Option<ScoreRange> {
        let (min, minex) = match min.first() {
            Some(b'(') => (parse_range_number(&min[1..])?, true),
            _ => (parse_range_number(min)?, false),
        };
        let (max, maxex) = match max.first() {
            Some(b'(') => (parse_range_number(&max[1..])?, true),
            _ => (parse_range_number(max)?, false),
        };
        Some(ScoreRange {
            min,
            max,
            minex,
            maxex,
        })
    }

    fn is_empty(&self) -> bool {
        self.min > self.max || (self.min == self.max && (self.minex || self.maxex))
    }
}

/// One end of a lexicographic range.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LexBound<'a> {
    /// `-`: below every member.
    NegInf,
    /// `+`: above every member.
    PosInf,
    /// `[v`
    Incl(&'a [u8]),
    /// `(v`
    Excl(&'a [u8]),
}

/// A lexicographic interval.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LexRange<'a> {
    min: LexBound<'a>,
    max: LexBound<'a>,
}

impl<'a> LexRange<'a> {
    /// Parses `min max` as Redis's `zslParseLexRange`.
    fn parse(min: &'a [u8], max: &'a [u8]) -> Option<LexRange<'a>> {
        fn item(s: &[u8]) -> Option<LexBound<'_>> {
            match s.first()? {
                b'+' if s.len() == 1 => Some(LexBound::PosInf),
                b'-' if s.len() == 1 => Some(LexBound::NegInf),
                b'(' => Some(LexBound::Excl(&s[1..])),
                b'[' => Some(LexBound::Incl(&s[1..])),
                _ => None,
            }
        }
        Some(LexRange {
            min: item(min)?,
            max: item(max)?,
        })
    }

    fn gte_min(&self, m: &[u8]) -> bool {
        match self.min {
            LexBound::NegInf => true,
            LexBound::PosInf => false,
            LexBound::Incl(v) => m >= v,
            LexBound::Excl(v) => m > v,
        }
    }

    fn lte_max(&self, m: &[u8]) -> bool {
        match self.max {
            LexBound::PosInf => true,
            LexBound::NegInf => false,
            LexBound::Incl(v) => m <= v,
            LexBound::Excl(v) => m < v,
        }
    }
}

/// Normalises a Redis-style `start stop` rank pair against `len`; None when empty.
fn rank_span(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let llen = len as i64;
    let mut start = if start < 0 { llen + start } else { start };
    let mut end = if end < 0 { llen + end } else { end };
    if start < 0 {
        start = 0;
    }
    if start > end || start >= llen {
        return None;
    }
    if end >= llen {
        end = llen - 1;
    }
    Some((start as usize, (end - start + 1) as usize))
}

// ---------------------------------------------------------------------------------------------
// Keyspace helpers.
// ---------------------------------------------------------------------------------------------

/// Reads `key` as a sorted set: Ok(None) when missing, Err when it holds another type.
fn lookup<'k>(ks: &'k mut Locked<'_>, key: &[u8]) -> Result<Option<&'k ZSet>, WrongType> {
    match ks.get(key) {
        None => Ok(None),
        Some(Entry {
            value: Value::ZSet(z),
            ..
        }) => Ok(Some(z)),
        Some(_) => Err(WrongType),
    }
}

/// The sorted set at `key` for modification (the caller checked the type with [`lookup`]).
fn lookup_mut<'k>(ks: &'k mut Locked<'_>, key: &[u8]) -> Option<&'k mut ZSet> {
    match ks.get_mut(key) {
        Some(Entry {
            value: Value::ZSet(z),
            ..
        }) => Some(z),
        _ => None,
    }
}

/// `let z = zset!(ctx, key, { reply when missing });` — replies WRONGTYPE and returns on a
/// type mismatch, runs the block and returns when the key is missing.
macro_rules! zset {
    ($ctx:ident, $key:expr, $missing:block) => {
        match lookup($ctx.ks, $key) {
            Ok(Some(z)) => z,
            Ok(None) => {
                $missing;
                return Outcome::Done;
            }
            Err(WrongType) => {
                $ctx.out.wrong_type();
                return Outcome::Done;
            }
        }
    };
}

/// Writes the header of a list of `n` members (with scores: RESP2 flat, RESP3 pairs).
fn pairs_header(out: &mut Reply, n: usize, withscores: bool) {
    if withscores && !out.resp3 {
        out.array(n * 2);
    } else {
        out.array(n);
    }
}

/// Writes one member (and score) of a list started with [`pairs_header`].
fn write_pair(out: &mut Reply, m: &[u8], s: f64, withscores: bool) {
    if withscores && out.resp3 {
        out.array(2);
    }
    out.bulk(m);
    if withscores {
        write_score(out, s);
    }
}

/// Writes every member produced by `mk()` (called twice: once to count, once to write).
fn emit<'z, I, F>(out: &mut Reply, mk: F, withscores: bool)
where
    F: Fn() -> I,
    I: Iterator<Item = (&'z [u8], f64)>,
{
    let n = mk().count();
    pairs_header(out, n, withscores);
    for (m, s) in mk() {
        write_pair(out, m, s, withscores);
    }
}

/// Stores `z` under `dst` (or deletes `dst` when empty) and replies the cardinality.
fn store_result(ks: &mut Locked<'_>, out: &mut Reply, dst: &[u8], z: ZSet, event: &'static str) {
    let n = z.len();
    if n == 0 {
        if ks.remove(dst).is_some() {
            ks.notify(ev::GENERIC, "del", dst);
        }
        out.int(0);
    } else {
        ks.set(dst, Value::ZSet(Box::new(z)), false);
        ks.notify(ev::ZSET, event, dst);
        out.int(n as i64);
    }
}

// ---------------------------------------------------------------------------------------------
// ZADD / ZINCRBY.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    incr: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum AddResult {
    /// Nothing done (NX/XX/GT/LT said no).
    Nop,
    /// New member.
    Added,
    /// Score changed.
    Updated,
    /// Processed, score unchanged.
    Same,
}

/// Redis's `zsetAdd` decision for one member; Err on a NaN increment result.
fn decide(cur: Option<f64>, score: f64, f: AddFlags) -> Result<(AddResult, f64), ()> {
    match cur {
        Some(c) => {
            if f.nx {
                return Ok((AddResult::Nop, c));
            }
            let mut s = score;
            if f.incr {
                s += c;
                if s.is_nan() {
                    return Err(());
                }
            }
            if (f.lt && s >= c) || (f.gt && s <= c) {
                return Ok((AddResult::Nop, c));
            }
            if s != c {
                Ok((AddResult::Updated, s))
            } else {
                Ok((AddResult::Same, s))
            }
        }
        None if f.xx => Ok((AddResult::Nop, score)),
        None => Ok((AddResult::Added, score)),
    }
}

fn zadd(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let mut f = AddFlags::default();
    let mut ch = false;
    let mut idx = 2;
    while idx < args.len() {
        let a = &args[idx][..];
        if a.eq_ignore_ascii_case(b"nx") {
            f.nx = true;
        } else if a.eq_ignore_ascii_case(b"xx") {
            f.xx = true;
        } else if a.eq_ignore_ascii_case(b"ch") {
            ch = true;
        } else if a.eq_ignore_ascii_case(b"incr") {
            f.incr = true;
        } else if a.eq_ignore_ascii_case(b"gt") {
            f.gt = true;
        } else if a.eq_ignore_ascii_case(b"lt") {
            f.lt = true;
        } else {
            break;
        }
        idx += 1;
    }
    let elements = args.len() - idx;
    if elements % 2 == 1 || elements == 0 {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    if f.nx && f.xx {
        ctx.out
            .error("ERR XX and NX options at the same time are not compatible");
        return Outcome::Done;
    }
    if (f.nx && (f.gt || f.lt)) || (f.gt && f.lt) {
        ctx.out
            .error("ERR GT, LT, and/or NX options at the same time are not compatible");
        return Outcome::Done;
    }
    if f.incr && elements > 2 {
        ctx.out
            .error("ERR INCR option supports a single increment-element pair");
        return Outcome::Done;
    }
    let mut scores: SmallVec<[f64; 8]> = SmallVec::with_capacity(elements / 2);
    for j in (idx..args.len()).step_by(2) {
        match parse_score(&args[j]) {
            Some(v) => scores.push(v),
            None => {
                ctx.out.not_float();
                return Outcome::Done;
            }
        }
    }
    zadd_run(ctx, idx, &scores, f, ch)
}

fn zincrby(ctx: &mut Ctx) -> Outcome {
    let Some(incr) = parse_score(&ctx.args[2]) else {
        ctx.out.not_float();
        return Outcome::Done;
    };
    let f = AddFlags {
        incr: true,
        ..AddFlags::default()
    };
    zadd_run(ctx, 2, &[incr], f, false)
}

/// Applies the `score member` pairs starting at `idx` (scores already parsed), and replies.
fn zadd_run(ctx: &mut Ctx, idx: usize, scores: &[f64], f: AddFlags, ch: bool) -> Outcome {
    let args = ctx.args;
    let key = &args[1][..];
    let pairs = || {
        args[idx..]
            .chunks_exact(2)
            .zip(scores)
            .map(|(p, &score)| (score, &p[1][..]))
    };
    // Dry run against the current state: decides whether anything changes (so a no-op does
    // not count as a write nor touch WATCHers) and catches a NaN increment before writing.
    let mut changes = false;
    let mut last = (AddResult::Nop, 0.0);
    {
        let z = match lookup(ctx.ks, key) {
            Ok(z) => z,
            Err(WrongType) => {
                ctx.out.wrong_type();
                return Outcome::Done;
            }
        };
        if z.is_none() && f.xx {
            if f.incr {
                ctx.out.null();
            } else {
                ctx.out.int(0);
            }
            return Outcome::Done;
        }
        for (score, m) in pairs() {
            match decide(z.and_then(|z| z.score(m)), score, f) {
                Err(()) => {
                    ctx.out.error(ERR_NAN);
                    return Outcome::Done;
                }
                Ok(r) => {
                    changes |= matches!(r.0, AddResult::Added | AddResult::Updated);
                    last = r;
                }
            }
        }
    }
    if !changes {
        if f.incr {
            match last.0 {
                AddResult::Nop => ctx.out.null(),
                _ => write_score(ctx.out, last.1),
            }
        } else {
            ctx.out.int(0);
        }
        return Outcome::Done;
    }
    let entry = ctx.ks.get_or_insert_with(key, Value::new_zset);
    let Value::ZSet(z) = &mut entry.value else {
        ctx.out.wrong_type();
        return Outcome::Done;
    };
    let (mut added, mut updated, mut processed) = (0i64, 0i64, 0i64);
    let mut newscore = 0.0;
    for (score, m) in pairs() {
        let (r, s) = match decide(z.score(m), score, f) {
            Ok(r) => r,
            Err(()) => {
                ctx.out.error(ERR_NAN);
                return Outcome::Done;
            }
        };
        match r {
            AddResult::Nop => continue,
            AddResult::Added => added += 1,
            AddResult::Updated => updated += 1,
            AddResult::Same => {}
        }
        if r != AddResult::Same {
            z.insert(m, s);
        }
        processed += 1;
        newscore = s;
    }
    if added + updated > 0 {
        ctx.notify(ev::ZSET, if f.incr { "zincr" } else { "zadd" }, key);
    }
    if f.incr {
        if processed > 0 {
            write_score(ctx.out, newscore);
        } else {
            ctx.out.null();
        }
    } else {
        ctx.out.int(if ch { added + updated } else { added });
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// Simple reads and removal.
// ---------------------------------------------------------------------------------------------

fn zrem(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let key = &args[1][..];
    let z = zset!(ctx, key, { ctx.out.int(0) });
    if !args[2..].iter().any(|m| z.score(m).is_some()) {
        ctx.out.int(0);
        return Outcome::Done;
    }
    let mut removed = 0;
    if let Some(z) = lookup_mut(ctx.ks, key) {
        for m in &args[2..] {
            if z.remove(m) {
                removed += 1;
            }
        }
    }
    ctx.notify(ev::ZSET, "zrem", key);
    ctx.ks.remove_if_empty(key);
    ctx.out.int(removed);
    Outcome::Done
}

fn zscore(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let z = zset!(ctx, &args[1], { ctx.out.null() });
    match z.score(&args[2]) {
        Some(s) => write_score(ctx.out, s),
        None => ctx.out.null(),
    }
    Outcome::Done
}

fn zmscore(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let z = match lookup(ctx.ks, &args[1]) {
        Ok(z) => z,
        Err(WrongType) => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
    };
    ctx.out.array(args.len() - 2);
    for m in &args[2..] {
        match z.and_then(|z| z.score(m)) {
            Some(s) => write_score(ctx.out, s),
            None => ctx.out.null(),
        }
    }
    Outcome::Done
}

fn zcard(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let z = zset!(ctx, &args[1], { ctx.out.int(0) });
    ctx.out.int(z.len() as i64);
    Outcome::Done
}

fn zcount(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let Some(r) = ScoreRange::parse(&args[2], &args[3]) else {
        ctx.out.error(ERR_NOT_FLOAT_RANGE);
        return Outcome::Done;
    };
    let z = zset!(ctx, &args[1], { ctx.out.int(0) });
    let n = if r.is_empty() {
        0
    } else {
        let (lo, hi) = z.score_span(r.min, r.minex, r.max, r.maxex);
        hi - lo
    };
    ctx.out.int(n as i64);
    Outcome::Done
}

fn zlexcount(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let Some(r) = LexRange::parse(&args[2], &args[3]) else {
        ctx.out.error(ERR_NOT_LEX_RANGE);
        return Outcome::Done;
    };
    let z = zset!(ctx, &args[1], { ctx.out.int(0) });
    let (lo, hi) = z.lex_span(|m| r.gte_min(m), |m| r.lte_max(m));
    ctx.out.int((hi - lo) as i64);
    Outcome::Done
}

fn zrank(ctx: &mut Ctx) -> Outcome {
    rank_generic(ctx, false)
}

fn zrevrank(ctx: &mut Ctx) -> Outcome {
    rank_generic(ctx, true)
}

fn rank_generic(ctx: &mut Ctx, rev: bool) -> Outcome {
    let args = ctx.args;
    let z = zset!(ctx, &args[1], { ctx.out.null() });
    match z.rank(&args[2]) {
        Some(r) if rev => ctx.out.int((z.len() - 1 - r) as i64),
        Some(r) => ctx.out.int(r as i64),
        None => ctx.out.null(),
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// The ZRANGE family.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum RangeType {
    Auto,
    Rank,
    Score,
    Lex,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Direction {
    Auto,
    Forward,
    Reverse,
}

fn zrange(ctx: &mut Ctx) -> Outcome {
    zrange_generic(ctx, 1, false, RangeType::Auto, Direction::Auto)
}

fn zrangestore(ctx: &mut Ctx) -> Outcome {
    zrange_generic(ctx, 2, true, RangeType::Auto, Direction::Auto)
}

fn zrevrange(ctx: &mut Ctx) -> Outcome {
    zrange_generic(ctx, 1, false, RangeType::Rank, Direction::Reverse)
}

fn zrangebyscore(ctx: &mut Ctx) -> Outcome {
    zrange_generic(ctx, 1, false, RangeType::Score, Direction::Forward)
}

fn zrevrangebyscore(ctx: &mut Ctx) -> Outcome {
    zrange_generic(ctx, 1, false, RangeType::Score, Direction::Reverse)
}

fn zrangebylex(ctx: &mut Ctx) -> Outcome {
    zrange_generic(ctx, 1, false, RangeType::Lex, Direction::Forward)
}

fn zrevrangebylex(ctx: &mut Ctx) -> Outcome {
    zrange_generic(ctx, 1, false, RangeType::Lex, Direction::Reverse)
}

/// Where a range result goes.
enum Sink {
    /// Reply to the client.
    Client { withscores: bool },
    /// Collect into a new sorted set (ZRANGESTORE).
    Store(ZSet),
}

impl Sink {
    fn take<'z, I, F>(&mut self, out: &mut Reply, mk: F)
    where
        F: Fn() -> I,
        I: Iterator<Item = (&'z [u8], f64)>,
    {
        match self {
            Sink::Client { withscores } => emit(out, mk, *withscores),
            Sink::Store(z) => {
                for (m, s) in mk() {
                    z.insert(m, s);
                }
            }
        }
    }
}

/// The members at ranks `lo..hi` after LIMIT's `skip` and `take`, ascending or (`rev`) from
/// the top down; the offset is a rank step, not a walk.
fn limited(
    sink: &mut Sink,
    out: &mut Reply,
    z: &ZSet,
    (lo, hi): (usize, usize),
    rev: bool,
    skip: usize,
    take: usize,
) {
    if rev {
        let end = hi.saturating_sub(skip).max(lo);
        sink.take(out, || z.range(end.saturating_sub(take).max(lo), end).rev())
    } else {
        let start = lo.saturating_add(skip).min(hi);
        sink.take(out, || z.range(start, start.saturating_add(take).min(hi)))
    }
}

/// Redis's `zrangeGenericCommand`: the key is at `start`, then min, max and options.
fn zrange_generic(
    ctx: &mut Ctx,
    start: usize,
    store: bool,
    mut rangetype: RangeType,
    mut dir: Direction,
) -> Outcome {
    let args = ctx.args;
    let key = &args[start][..];
    let mut withscores = false;
    let mut offset: i64 = 0;
    let mut limit: i64 = -1;
    let mut j = start + 3;
    while j < args.len() {
        let a = &args[j][..];
        let left = args.len() - j - 1;
        if !store && a.eq_ignore_ascii_case(b"withscores") {
            withscores = true;
        } else if a.eq_ignore_ascii_case(b"limit") && left >= 2 {
            let Some(o) = parse_long(ctx.out, &args[j + 1]) else {
                return Outcome::Done;
            };
            let Some(l) = parse_long(ctx.out, &args[j + 2]) else {
                return Outcome::Done;
            };
            offset = o;
            limit = l;
            j += 2;
        } else if dir == Direction::Auto && a.eq_ignore_ascii_case(b"rev") {
            dir = Direction::Reverse;
        } else if rangetype == RangeType::Auto && a.eq_ignore_ascii_case(b"bylex") {
            rangetype = RangeType::Lex;
        } else if rangetype == RangeType::Auto && a.eq_ignore_ascii_case(b"byscore") {
            rangetype = RangeType::Score;
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
        j += 1;
    }
    if dir == Direction::Auto {
        dir = Direction::Forward;
    }
    if rangetype == RangeType::Auto {
        rangetype = RangeType::Rank;
    }
    if limit != -1 && rangetype == RangeType::Rank {
        ctx.out.error(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
        return Outcome::Done;
    }
    if withscores && rangetype == RangeType::Lex {
        ctx.out
            .error("ERR syntax error, WITHSCORES not supported in combination with BYLEX");
        return Outcome::Done;
    }
    let rev = dir == Direction::Reverse;
    let (mut minarg, mut maxarg) = (&args[start + 1][..], &args[start + 2][..]);
    if rev && rangetype != RangeType::Rank {
        std::mem::swap(&mut minarg, &mut maxarg);
    }
    enum Parsed<'a> {
        Rank(i64, i64),
        Score(ScoreRange),
        Lex(LexRange<'a>),
    }
    let parsed = match rangetype {
        RangeType::Score => match ScoreRange::parse(minarg, maxarg) {
            Some(r) => Parsed::Score(r),
            None => {
                ctx.out.error(ERR_NOT_FLOAT_RANGE);
                return Outcome::Done;
            }
        },
        RangeType::Lex => match LexRange::parse(minarg, maxarg) {
            Some(r) => Parsed::Lex(r),
            None => {
                ctx.out.error(ERR_NOT_LEX_RANGE);
                return Outcome::Done;
            }
        },
        _ => {
            let Some(s) = parse_long(ctx.out, minarg) else {
                return Outcome::Done;
            };
            let Some(e) = parse_long(ctx.out, maxarg) else {
                return Outcome::Done;
            };
            Parsed::Rank(s, e)
        }
    };
    let mut sink = if store {
        Sink::Store(ZSet::default())
    } else {
        Sink::Client { withscores }
    };
    let z = match lookup(ctx.ks, key) {
        Ok(Some(z)) => z,
        Ok(None) => {
            if store {
                store_result(ctx.ks, ctx.out, &args[1], ZSet::default(), "zrangestore");
            } else {
                ctx.out.array(0);
            }
            return Outcome::Done;
        }
        Err(WrongType) => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
    };
    let out = &mut *ctx.out;
    // Redis walks `offset` elements, so a negative offset never reaches any.
    let empty_limit = offset < 0 || (offset > 0 && offset as u64 >= z.len() as u64);
    let skip = offset.max(0) as usize;
    let take = if limit < 0 {
        usize::MAX
    } else {
        limit as usize
    };
    match parsed {
        Parsed::Rank(s, e) => match rank_span(s, e, z.len()) {
            None => sink.take(out, std::iter::empty),
            Some((s, n)) if rev => {
                let end = z.len() - s;
                sink.take(out, || z.range(end.saturating_sub(n), end).rev())
            }
            Some((s, n)) => sink.take(out, || z.range(s, s + n)),
        },
        Parsed::Score(r) => {
            if empty_limit || r.is_empty() {
                sink.take(out, std::iter::empty)
            } else {
                let (lo, hi) = z.score_span(r.min, r.minex, r.max, r.maxex);
                limited(&mut sink, out, z, (lo, hi), rev, skip, take)
            }
        }
        Parsed::Lex(r) => {
            if empty_limit {
                sink.take(out, std::iter::empty)
            } else {
                let span = z.lex_span(|m| r.gte_min(m), |m| r.lte_max(m));
                limited(&mut sink, out, z, span, rev, skip, take)
            }
        }
    }
    if let Sink::Store(result) = sink {
        store_result(ctx.ks, ctx.out, &args[1], result, "zrangestore");
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// ZREMRANGEBY*.
// ---------------------------------------------------------------------------------------------

fn zremrangebyrank(ctx: &mut Ctx) -> Outcome {
    zremrange_generic(ctx, RangeType::Rank)
}

fn zremrangebyscore(ctx: &mut Ctx) -> Outcome {
    zremrange_generic(ctx, RangeType::Score)
}

fn zremrangebylex(ctx: &mut Ctx) -> Outcome {
    zremrange_generic(ctx, RangeType::Lex)
}

fn zremrange_generic(ctx: &mut Ctx, rangetype: RangeType) -> Outcome {
    let args = ctx.args;
    let key = &args[1][..];
    let (a, b) = (&args[2][..], &args[3][..]);
    let mut rank = (0, 0);
    let mut score = None;
    let mut lex = None;
    match rangetype {
        RangeType::Score => match ScoreRange::parse(a, b) {
            Some(r) => score = Some(r),
            None => {
                ctx.out.error(ERR_NOT_FLOAT_RANGE);
                return Outcome::Done;
            }
        },
        RangeType::Lex => match LexRange::parse(a, b) {
            Some(r) => lex = Some(r),
            None => {
                ctx.out.error(ERR_NOT_LEX_RANGE);
                return Outcome::Done;
            }
        },
        _ => {
            let Some(s) = parse_long(ctx.out, a) else {
                return Outcome::Done;
            };
            let Some(e) = parse_long(ctx.out, b) else {
                return Outcome::Done;
            };
            rank = (s, e);
        }
    }
    let z = zset!(ctx, key, { ctx.out.int(0) });
    let victims: Vec<Elem> = if let Some(r) = score {
        if r.is_empty() {
            Vec::new()
        } else {
            z.range_by_score(r.min, r.minex, r.max, r.maxex)
                .map(|(m, _)| m.into())
                .collect()
        }
    } else if let Some(r) = lex {
        let (lo, hi) = z.lex_span(|m| r.gte_min(m), |m| r.lte_max(m));
        z.range(lo, hi).map(|(m, _)| m.into()).collect()
    } else {
        match rank_span(rank.0, rank.1, z.len()) {
            Some((s, n)) => z.range(s, s + n).map(|(m, _)| m.into()).collect(),
            None => Vec::new(),
        }
    };
    if victims.is_empty() {
        ctx.out.int(0);
        return Outcome::Done;
    }
    if let Some(z) = lookup_mut(ctx.ks, key) {
        for m in &victims {
            z.remove(m);
        }
    }
    ctx.notify(ev::ZSET, ctx.spec.name, key);
    ctx.ks.remove_if_empty(key);
    ctx.out.int(victims.len() as i64);
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// Pops, blocking pops.
// ---------------------------------------------------------------------------------------------

/// Reply shapes of the pop commands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PopShape {
    /// `[m, s, m, s...]` (ZPOPMIN in RESP2, or without count).
    Flat,
    /// `[[m, s], ...]` (ZPOPMIN with count in RESP3).
    Nested,
    /// `[key, m, s]` (BZPOPMIN).
    KeyFlat,
    /// `[key, [[m, s], ...]]` (ZMPOP, BZMPOP).
    KeyNested,
}

/// Pops up to `count` members from the non-empty sorted set at `key` and replies.
fn pop_and_reply(
    ks: &mut Locked<'_>,
    out: &mut Reply,
    key: &[u8],
    max: bool,
    count: usize,
    shape: PopShape,
) {
    let Some(z) = lookup_mut(ks, key) else {
        out.null_array();
        return;
    };
    let n = count.min(z.len());
    match shape {
        PopShape::Flat => out.array(n * 2),
        PopShape::Nested => out.array(n),
        PopShape::KeyFlat => {
            out.array(n * 2 + 1);
            out.bulk(key);
        }
        PopShape::KeyNested => {
            out.array(2);
            out.bulk(key);
            out.array(n);
        }
    }
    let nested = matches!(shape, PopShape::Nested | PopShape::KeyNested);
    for _ in 0..n {
        let next = if max {
            z.iter().next_back()
        } else {
            z.iter().next()
        };
        let Some((m, s)) = next else { break };
        let m: SmallVec<[u8; 64]> = SmallVec::from_slice(m);
        z.remove(&m);
        if nested {
            out.array(2);
        }
        out.bulk(&m);
        write_score(out, s);
    }
    if n > 0 {
        ks.notify(ev::ZSET, if max { "zpopmax" } else { "zpopmin" }, key);
    }
    ks.remove_if_empty(key);
}

fn zpopmin(ctx: &mut Ctx) -> Outcome {
    zpop_generic(ctx, false)
}

fn zpopmax(ctx: &mut Ctx) -> Outcome {
    zpop_generic(ctx, true)
}

fn zpop_generic(ctx: &mut Ctx, max: bool) -> Outcome {
    let args = ctx.args;
    if args.len() > 3 {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    let count = if args.len() == 3 {
        match parse_range_long(ctx.out, &args[2], 0, i64::MAX, Some(ERR_POSITIVE)) {
            Some(c) => Some(c),
            None => return Outcome::Done,
        }
    } else {
        None
    };
    let key = &args[1][..];
    let _ = zset!(ctx, key, { ctx.out.array(0) });
    if count == Some(0) {
        ctx.out.array(0);
        return Outcome::Done;
    }
    let shape = if count.is_some() && ctx.out.resp3 {
        PopShape::Nested
    } else {
        PopShape::Flat
    };
    let n = usize::try_from(count.unwrap_or(1)).unwrap_or(usize::MAX);
    pop_and_reply(ctx.ks, ctx.out, key, max, n, shape);
    Outcome::Done
}

fn bzpopmin(ctx: &mut Ctx) -> Outcome {
    bzpop_generic(ctx, false)
}

fn bzpopmax(ctx: &mut Ctx) -> Outcome {
    bzpop_generic(ctx, true)
}

fn bzpop_generic(ctx: &mut Ctx, max: bool) -> Outcome {
    let args = ctx.args;
    let n = args.len();
    let Some(timeout) = parse_timeout(ctx.out, &args[n - 1]) else {
        return Outcome::Done;
    };
    blocking_pop(ctx, 1..n - 1, max, 1, PopShape::KeyFlat, timeout)
}

/// Pops from the first non-empty sorted set among `args[keys]`, or blocks on all of them.
fn blocking_pop(
    ctx: &mut Ctx,
    keys: std::ops::Range<usize>,
    max: bool,
    count: usize,
    shape: PopShape,
    timeout_ms: u64,
) -> Outcome {
    let args = ctx.args;
    for i in keys.clone() {
        let key = &args[i][..];
        match lookup(ctx.ks, key) {
            Err(WrongType) => {
                ctx.out.wrong_type();
                return Outcome::Done;
            }
            Ok(None) => continue,
            Ok(Some(z)) if z.is_empty() => continue,
            Ok(Some(_)) => {}
        }
        // Clients already waiting on this key are served first (FIFO).
        if !ctx.ks.first_in_line(key, &ctx.client.waiter) {
            continue;
        }
        pop_and_reply(ctx.ks, ctx.out, key, max, count, shape);
        return Outcome::Done;
    }
    if ctx.in_exec {
        ctx.out.null_array();
        return Outcome::Done;
    }
    for i in keys.clone() {
        ctx.ks.block_on(&args[i], &ctx.client.waiter);
    }
    Outcome::Block {
        keys: args[keys].to_vec(),
        timeout_ms,
        on_timeout: TimeoutReply::NullArray,
    }
}

fn zmpop(ctx: &mut Ctx) -> Outcome {
    mpop_generic(ctx, 1, false)
}

fn bzmpop(ctx: &mut Ctx) -> Outcome {
    mpop_generic(ctx, 2, true)
}

/// ZMPOP / BZMPOP: `numkeys key... MIN|MAX [COUNT count]` with numkeys at `numkeys_idx`.
fn mpop_generic(ctx: &mut Ctx, numkeys_idx: usize, block: bool) -> Outcome {
    let args = ctx.args;
    let Some(numkeys) = parse_range_long(
        ctx.out,
        &args[numkeys_idx],
        1,
        i64::MAX,
        Some("ERR numkeys should be greater than 0"),
    ) else {
        return Outcome::Done;
    };
    let where_idx = (numkeys_idx as u64)
        .saturating_add(numkeys as u64)
        .saturating_add(1);
    if where_idx >= args.len() as u64 {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    let where_idx = where_idx as usize;
    let max = if args[where_idx].eq_ignore_ascii_case(b"min") {
        false
    } else if args[where_idx].eq_ignore_ascii_case(b"max") {
        true
    } else {
        ctx.out.syntax_error();
        return Outcome::Done;
    };
    let mut count: i64 = -1;
    let mut j = where_idx + 1;
    while j < args.len() {
        let more = args.len() - 1 - j;
        if count == -1 && args[j].eq_ignore_ascii_case(b"count") && more > 0 {
            j += 1;
            match parse_range_long(
                ctx.out,
                &args[j],
                1,
                i64::MAX,
                Some("ERR count should be greater than 0"),
            ) {
                Some(c) => count = c,
                None => return Outcome::Done,
            }
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
        j += 1;
    }
    let count = count.max(1) as usize;
    let keys = numkeys_idx + 1..where_idx;
    if block {
        let Some(timeout) = parse_timeout(ctx.out, &args[1]) else {
            return Outcome::Done;
        };
        return blocking_pop(ctx, keys, max, count, PopShape::KeyNested, timeout);
    }
    for i in keys {
        let key = &args[i][..];
        match lookup(ctx.ks, key) {
            Err(WrongType) => {
                ctx.out.wrong_type();
                return Outcome::Done;
            }
            Ok(None) => continue,
            Ok(Some(_)) => {
                pop_and_reply(ctx.ks, ctx.out, key, max, count, PopShape::KeyNested);
                return Outcome::Done;
            }
        }
    }
    ctx.out.null_array();
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// ZUNION / ZINTER / ZDIFF (+STORE), ZINTERCARD.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

/// Redis's `zunionInterAggregate`.
fn aggregate(target: &mut f64, val: f64, agg: Aggregate) {
    match agg {
        Aggregate::Sum => {
            *target += val;
            // inf + -inf: Redis keeps 0.
            if target.is_nan() {
                *target = 0.0;
            }
        }
        Aggregate::Min => {
            if val < *target {
                *target = val;
            }
        }
        Aggregate::Max => {
            if val > *target {
                *target = val;
            }
        }
    }
}

/// Calls `f(member, score)` for every member of a sorted set or (score 1) plain set.
fn for_each_member(entry: Option<&Entry>, mut f: impl FnMut(&[u8], f64)) {
    match entry.map(|e| &e.value) {
        Some(Value::ZSet(z)) => z.iter().for_each(|(m, s)| f(m, s)),
        Some(Value::Set(s)) => s.iter().for_each(|m| f(m, 1.0)),
        _ => {}
    }
}

/// The score of `m` in a sorted set or (1) plain set.
fn member_score(entry: Option<&Entry>, m: &[u8]) -> Option<f64> {
    match entry.map(|e| &e.value) {
        Some(Value::ZSet(z)) => z.score(m),
        Some(Value::Set(s)) => s.contains(m).then_some(1.0),
        _ => None,
    }
}

fn zunion(ctx: &mut Ctx) -> Outcome {
    setop_generic(ctx, None, 1, SetOp::Union, false)
}

fn zinter(ctx: &mut Ctx) -> Outcome {
    setop_generic(ctx, None, 1, SetOp::Inter, false)
}

fn zdiff(ctx: &mut Ctx) -> Outcome {
    setop_generic(ctx, None, 1, SetOp::Diff, false)
}

fn zunionstore(ctx: &mut Ctx) -> Outcome {
    setop_generic(ctx, Some(1), 2, SetOp::Union, false)
}

fn zinterstore(ctx: &mut Ctx) -> Outcome {
    setop_generic(ctx, Some(1), 2, SetOp::Inter, false)
}

fn zdiffstore(ctx: &mut Ctx) -> Outcome {
    setop_generic(ctx, Some(1), 2, SetOp::Diff, false)
}

fn zintercard(ctx: &mut Ctx) -> Outcome {
    setop_generic(ctx, None, 1, SetOp::Inter, true)
}

/// Redis's `zunionInterDiffGenericCommand`.
fn setop_generic(
    ctx: &mut Ctx,
    dst: Option<usize>,
    numkeys_idx: usize,
    op: SetOp,
    card_only: bool,
) -> Outcome {
    let args = ctx.args;
    let Some(setnum) = parse_long(ctx.out, &args[numkeys_idx]) else {
        return Outcome::Done;
    };
    if setnum < 1 {
        ctx.out.error(&format!(
            "ERR at least 1 input key is needed for '{}' command",
            ctx.spec.name
        ));
        return Outcome::Done;
    }
    let first = numkeys_idx + 1;
    if setnum as u64 > (args.len() - first) as u64 {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    let setnum = setnum as usize;
    // Type checks come before option parsing, as in Redis.
    let mut lens: SmallVec<[usize; 8]> = SmallVec::with_capacity(setnum);
    for key in &args[first..first + setnum] {
        match ctx.ks.get(key).map(|e| &e.value) {
            None => lens.push(0),
            Some(Value::ZSet(z)) => lens.push(z.len()),
            Some(Value::Set(s)) => lens.push(s.len()),
            Some(_) => {
                ctx.out.wrong_type();
                return Outcome::Done;
            }
        }
    }
    // Those were the lookups Redis counts as hits and misses; the inputs are read again below.
    ctx.ks.read_stats = false;
    let mut weights: SmallVec<[f64; 8]> = SmallVec::from_elem(1.0, setnum);
    let mut agg = Aggregate::Sum;
    let mut withscores = false;
    let mut limit: i64 = 0;
    let mut j = first + setnum;
    while j < args.len() {
        let remaining = args.len() - j;
        let a = &args[j][..];
        if op != SetOp::Diff
            && !card_only
            && remaining > setnum
            && a.eq_ignore_ascii_case(b"weights")
        {
            j += 1;
            for w in weights.iter_mut() {
                match parse_score(&args[j]) {
                    Some(v) => *w = v,
                    None => {
                        ctx.out.error("ERR weight value is not a float");
                        return Outcome::Done;
                    }
                }
                j += 1;
            }
        } else if op != SetOp::Diff
            && !card_only
            && remaining >= 2
            && a.eq_ignore_ascii_case(b"aggregate")
        {
            let v = &args[j + 1][..];
            agg = if v.eq_ignore_ascii_case(b"sum") {
                Aggregate::Sum
            } else if v.eq_ignore_ascii_case(b"min") {
                Aggregate::Min
            } else if v.eq_ignore_ascii_case(b"max") {
                Aggregate::Max
            } else {
                ctx.out.syntax_error();
                return Outcome::Done;
            };
            j += 2;
        } else if dst.is_none() && !card_only && a.eq_ignore_ascii_case(b"withscores") {
            withscores = true;
            j += 1;
        } else if card_only && remaining >= 2 && a.eq_ignore_ascii_case(b"limit") {
            match parse_range_long(
                ctx.out,
                &args[j + 1],
                0,
                i64::MAX,
                Some("ERR LIMIT can't be negative"),
            ) {
                Some(l) => limit = l,
                None => return Outcome::Done,
            }
            j += 2;
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
    }

    let key_of = |i: usize| &args[first + i][..];
    // Union and intersection visit the inputs smallest first (a stable sort, like glibc's
    // qsort), which also fixes the order in which SUM adds up scores.
    let mut order: SmallVec<[usize; 8]> = (0..setnum).collect();
    if op != SetOp::Diff {
        order.sort_by_key(|&i| lens[i]);
    }
    let mut result: Vec<(Elem, f64)> = Vec::new();
    match op {
        SetOp::Union => {
            let mut acc: hashbrown::HashMap<Elem, f64> = hashbrown::HashMap::new();
            for &i in &order {
                if lens[i] == 0 {
                    continue;
                }
                let w = weights[i];
                for_each_member(ctx.ks.get(key_of(i)), |m, s| {
                    let mut score = w * s;
                    if score.is_nan() {
                        score = 0.0;
                    }
                    match acc.get_mut(m) {
                        Some(t) => aggregate(t, score, agg),
                        None => {
                            acc.insert(m.into(), score);
                        }
                    }
                });
            }
            result.extend(acc);
        }
        SetOp::Inter => {
            if lens.iter().all(|&l| l > 0) {
                let i0 = order[0];
                let w0 = weights[i0];
                for_each_member(ctx.ks.get(key_of(i0)), |m, s| {
                    let mut score = w0 * s;
                    if score.is_nan() {
                        score = 0.0;
                    }
                    result.push((m.into(), score));
                });
                for &i in &order[1..] {
                    let w = weights[i];
                    let e = ctx.ks.get(key_of(i));
                    result.retain_mut(|(m, t)| match member_score(e, m) {
                        Some(v) => {
                            aggregate(t, v * w, agg);
                            true
                        }
                        None => false,
                    });
                }
            }
        }
        SetOp::Diff => {
            if lens[0] > 0 {
                for_each_member(ctx.ks.get(key_of(0)), |m, s| result.push((m.into(), s)));
                for i in 1..setnum {
                    if lens[i] == 0 {
                        continue;
                    }
                    let e = ctx.ks.get(key_of(i));
                    result.retain(|(m, _)| member_score(e, m).is_none());
                }
            }
        }
    }
    if card_only {
        let n = result.len() as i64;
        ctx.out.int(if limit > 0 { n.min(limit) } else { n });
        return Outcome::Done;
    }
    let mut z = ZSet::default();
    for (m, s) in &result {
        z.insert(m, *s);
    }
    drop(result);
    match dst {
        Some(d) => store_result(ctx.ks, ctx.out, &args[d], z, ctx.spec.name),
        None => emit(ctx.out, || z.iter(), withscores),
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// ZRANDMEMBER, ZSCAN.
// ---------------------------------------------------------------------------------------------

fn zrandmember(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let key = &args[1][..];
    if args.len() < 3 {
        let z = zset!(ctx, key, { ctx.out.null() });
        let i = rand::thread_rng().gen_range(0..z.len().max(1));
        match z.get(i) {
            Some((m, _)) => ctx.out.bulk(m),
            None => ctx.out.null(),
        }
        return Outcome::Done;
    }
    let Some(l) = parse_range_long(ctx.out, &args[2], -i64::MAX, i64::MAX, None) else {
        return Outcome::Done;
    };
    let mut withscores = false;
    if args.len() > 4 || (args.len() == 4 && !args[3].eq_ignore_ascii_case(b"withscores")) {
        ctx.out.syntax_error();
        return Outcome::Done;
    } else if args.len() == 4 {
        withscores = true;
        if !(-i64::MAX / 2..=i64::MAX / 2).contains(&l) {
            ctx.out.error("ERR value is out of range");
            return Outcome::Done;
        }
    }
    let z = zset!(ctx, key, { ctx.out.array(0) });
    let count = l.unsigned_abs();
    let uniq = l >= 0;
    if count == 0 || z.is_empty() {
        ctx.out.array(0);
        return Outcome::Done;
    }
    let size = z.len();
    let mut rng = rand::thread_rng();
    if !uniq || count == 1 {
        // Sampling with repetition: random order, members may repeat. Each pick is a rank.
        pairs_header(ctx.out, count as usize, withscores);
        for _ in 0..count {
            if let Some((m, s)) = z.get(rng.gen_range(0..size)) {
                write_pair(ctx.out, m, s, withscores);
            }
        }
        return Outcome::Done;
    }
    if count >= size as u64 {
        // The whole set, in the order Redis's zset iterator walks it (highest first).
        emit(ctx.out, || z.iter().rev(), withscores);
        return Outcome::Done;
    }
    let count = count as usize;
    let picks = rand::seq::index::sample(&mut rng, size, count);
    pairs_header(ctx.out, count, withscores);
    for i in picks.iter() {
        if let Some((m, s)) = z.get(i) {
            write_pair(ctx.out, m, s, withscores);
        }
    }
    Outcome::Done
}

/// An order-preserving, never-zero encoding of a score as a scan cursor.
fn score_cursor(s: f64) -> u64 {
    let bits = s.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// Inverse of [`score_cursor`] (may be NaN for cursors no score encodes to).
fn cursor_score(c: u64) -> f64 {
    if c >> 63 == 1 {
        f64::from_bits(c & !(1 << 63))
    } else {
        f64::from_bits(!c)
    }
}

/// Parses a SCAN cursor like Redis's `strtoul`-based parser (a `-` sign wraps around, as
/// `strtoul` does; the empty string is 0).
fn parse_cursor(s: &[u8]) -> Option<u64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if !digits.iter().all(u8::is_ascii_digit) || (digits.is_empty() && !s.is_empty()) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        v = v.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

fn zscan(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let Some(cursor) = parse_cursor(&args[2]) else {
        ctx.out.error("ERR invalid cursor");
        return Outcome::Done;
    };
    let key = &args[1][..];
    let small = match ctx.ks.get(key) {
        None => {
            ctx.out.array(2);
            ctx.out.bulk(b"0");
            ctx.out.array(0);
            return Outcome::Done;
        }
        Some(e) if e.value.kind() != crate::value::Kind::ZSet => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
        Some(e) => e.value.encoding(&ctx.server.compact) == "listpack",
    };
    let mut count: i64 = 10;
    let mut pattern: Option<&[u8]> = None;
    let mut i = 3;
    while i < args.len() {
        let left = args.len() - i;
        let a = &args[i][..];
        if a.eq_ignore_ascii_case(b"count") && left >= 2 {
            let Some(c) = parse_long(ctx.out, &args[i + 1]) else {
                return Outcome::Done;
            };
            if c < 1 {
                ctx.out.syntax_error();
                return Outcome::Done;
            }
            count = c;
        } else if a.eq_ignore_ascii_case(b"match") && left >= 2 {
            let p = &args[i + 1][..];
            pattern = if p == b"*" { None } else { Some(p) };
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
        i += 2;
    }
    let Ok(Some(z)) = lookup(ctx.ks, key) else {
        ctx.out.wrong_type();
        return Outcome::Done;
    };
    let matches = |m: &[u8]| pattern.is_none_or(|p| crate::glob::glob_match(p, m, false));
    let mut items: Vec<(&[u8], f64)> = Vec::new();
    let mut next = 0u64;
    if small {
        items.extend(z.iter().filter(|(m, _)| matches(m)));
    } else {
        let from = cursor_score(cursor);
        let iter: Box<dyn Iterator<Item = (&[u8], f64)>> = if cursor == 0 {
            Box::new(z.iter())
        } else if from.is_nan() {
            if cursor > score_cursor(f64::INFINITY) {
                Box::new(std::iter::empty())
            } else {
                Box::new(z.iter())
            }
        } else {
            Box::new(z.range_by_score(from, false, f64::INFINITY, false))
        };
        let mut last: Option<f64> = None;
        for (visited, (m, s)) in (0_i64..).zip(iter) {
            // Stop only between two different scores, so the score cursor resumes exactly.
            if visited >= count && last != Some(s) {
                next = score_cursor(s);
                break;
            }
            last = Some(s);
            if matches(m) {
                items.push((m, s));
            }
        }
    }
    ctx.out.array(2);
    let mut cb = [0u8; 24];
    let mut w = &mut cb[..];
    let _ = write!(w, "{next}");
    let n = 24 - w.len();
    ctx.out.bulk(&cb[..n]);
    ctx.out.array(items.len() * 2);
    for (m, s) in items {
        ctx.out.bulk(m);
        ctx.out.bulk(G17::new(s).as_bytes());
    }
    Outcome::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(d: f64) -> String {
        String::from_utf8_lossy(G17::new(d).as_bytes()).into_owned()
    }

    #[test]
    fn g17_matches_printf() {
        assert_eq!(g(0.1), "0.10000000000000001");
        assert_eq!(g(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(g(1.5), "1.5");
        assert_eq!(g(3.0), "3");
        assert_eq!(g(0.0), "0");
        assert_eq!(g(-2.0), "-2");
        assert_eq!(g(1e20), "1e+20");
        assert_eq!(g(1e16), "10000000000000000");
        assert_eq!(g(1e17), "1e+17");
        assert_eq!(g(123456789012345678.0), "1.2345678901234568e+17");
        assert_eq!(g(1e-5), "1.0000000000000001e-05");
        assert_eq!(g(0.0001), "0.0001");
        assert_eq!(g(-0.25), "-0.25");
        assert_eq!(g(123456789.123), "123456789.123");
        assert_eq!(g(1e300), "1.0000000000000001e+300");
        assert_eq!(g(5e-324), "4.9406564584124654e-324");
        assert_eq!(g(f64::INFINITY), "inf");
        assert_eq!(g(f64::NEG_INFINITY), "-inf");
        assert_eq!(g(f64::MAX), "1.7976931348623157e+308");
    }

    #[test]
    fn score_parsing_like_strtod() {
        assert_eq!(parse_score(b"1.5"), Some(1.5));
        assert_eq!(parse_score(b"0x10"), Some(16.0));
        assert_eq!(parse_score(b"0x1p3"), Some(8.0));
        assert_eq!(parse_score(b"+2"), Some(2.0));
        assert_eq!(parse_score(b"1."), Some(1.0));
        assert_eq!(parse_score(b".5"), Some(0.5));
        assert_eq!(parse_score(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_score(b"Infinity"), Some(f64::INFINITY));
        assert_eq!(parse_score(b"4.9e-324"), Some(4.9e-324));
        for bad in [
            &b""[..],
            b" 1",
            b"1 ",
            b"nan",
            b"1e400",
            b"1e-400",
            b"0x",
            b"1e",
            b".",
            b"abc",
        ] {
            assert_eq!(parse_score(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_range_number(b""), Some(0.0));
        assert_eq!(parse_range_number(b" 1"), Some(1.0));
        assert_eq!(parse_range_number(b"1e400"), Some(f64::INFINITY));
        assert_eq!(parse_range_number(b"  "), None);
        assert_eq!(parse_range_number(b"1 "), None);
    }

    #[test]
    fn timeouts() {
        let mut out = Reply::default();
        assert_eq!(parse_timeout(&mut out, b"0"), Some(0));
        assert_eq!(parse_timeout(&mut out, b"1.5"), Some(1500));
        assert_eq!(parse_timeout(&mut out, b"0.0001"), Some(0));
        assert_eq!(parse_timeout(&mut out, b"-0.0001"), Some(0));
        assert_eq!(out.count, 0);
        assert_eq!(parse_timeout(&mut out, b"-1"), None);
        assert_eq!(parse_timeout(&mut out, b"inf"), None);
        assert_eq!(parse_timeout(&mut out, b"x"), None);
        assert_eq!(out.count, 3);
    }

    #[test]
    fn cursors_preserve_order() {
        let scores = [
            f64::NEG_INFINITY,
            -1e300,
            -1.0,
            -0.0,
            0.0,
            1e-300,
            1.0,
            2.5,
            f64::INFINITY,
        ];
        for w in scores.windows(2) {
            assert!(score_cursor(w[0]) < score_cursor(w[1]));
        }
        for s in scores {
            assert_ne!(score_cursor(s), 0);
            assert_eq!(cursor_score(score_cursor(s)).to_bits(), s.to_bits());
        }
        assert_eq!(parse_cursor(b""), Some(0));
        assert_eq!(parse_cursor(b"+1"), Some(1));
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"18446744073709551616"), None);
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"-"), None);
        assert_eq!(parse_cursor(b" 1"), None);
        assert_eq!(parse_cursor(b"+"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(rank_span(0, -1, 3), Some((0, 3)));
        assert_eq!(rank_span(-2, 10, 3), Some((1, 2)));
        assert_eq!(rank_span(2, 1, 3), None);
        assert_eq!(rank_span(5, 10, 3), None);
        assert_eq!(rank_span(-10, -5, 3), None);
        let r = ScoreRange::parse(b"(1", b"+inf").unwrap_or(ScoreRange {
            min: 0.0,
            max: 0.0,
            minex: false,
            maxex: false,
        });
        assert!(r.minex && r.min == 1.0 && !r.maxex && r.max == f64::INFINITY);
        assert!(ScoreRange::parse(b"(1", b"(1").is_some_and(|r| r.is_empty()));
        assert!(ScoreRange::parse(b"x", b"1").is_none());
        let l = LexRange::parse(b"[b", b"(d");
        assert!(l.is_some_and(|l| l.gte_min(b"b") && !l.gte_min(b"a") && !l.lte_max(b"d")));
        assert!(LexRange::parse(b"a", b"+").is_none());
        assert!(LexRange::parse(b"-", b"+x").is_none());
    }

    #[test]
    fn zadd_decisions() {
        let f = AddFlags::default();
        assert_eq!(decide(None, 1.0, f), Ok((AddResult::Added, 1.0)));
        assert_eq!(decide(Some(1.0), 1.0, f), Ok((AddResult::Same, 1.0)));
        let gt = AddFlags { gt: true, ..f };
        assert_eq!(decide(Some(2.0), 1.0, gt), Ok((AddResult::Nop, 2.0)));
        let incr = AddFlags { incr: true, ..f };
        assert_eq!(
            decide(Some(f64::INFINITY), f64::NEG_INFINITY, incr),
            Err(())
        );
        let xx = AddFlags { xx: true, ..f };
        assert_eq!(decide(None, 1.0, xx), Ok((AddResult::Nop, 1.0)));
    }
}
