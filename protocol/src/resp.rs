//! RESP2/RESP3 frames: a streaming decoder over `BytesMut` and an allocation-free encoder.
//!
//! Two decoders live here:
//! * [`parse_command`] — the server side: a request is a multibulk of bulk strings or an inline
//!   line (`PING\r\n`). It enforces redis-server's limits and answers with its error texts.
//! * [`decode_frame`] / [`frame_len`] — the client side: any RESP2/RESP3 reply. `frame_len`
//!   only measures a complete frame without building it (used to forward replies untouched).
//!
//! Both are incremental: given an incomplete buffer they return `Ok(None)` and consume nothing,
//! so a frame may be split across reads at any byte.

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// Longest inline request or `*`/`$` header line redis-server accepts (PROTO_INLINE_MAX_SIZE).
pub const INLINE_MAX: usize = 64 * 1024;
/// Default `proto-max-bulk-len` (512 MB).
pub const DEFAULT_MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Multibulk length limit for a client that has not authenticated while `requirepass` is set.
pub const UNAUTH_MAX_MULTIBULK: i64 = 10;
/// Bulk length limit for a client that has not authenticated while `requirepass` is set.
pub const UNAUTH_MAX_BULK: i64 = 16384;
/// Deepest nesting of aggregate frames the reply decoder accepts.
pub const MAX_DEPTH: usize = 64;

/// A protocol violation. The text is redis-server's own (without the `ERR ` prefix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub std::borrow::Cow<'static, str>);

impl ProtocolError {
    const fn fixed(s: &'static str) -> ProtocolError {
        ProtocolError(std::borrow::Cow::Borrowed(s))
    }
}

/// Request size limits, as redis-server applies them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `proto-max-bulk-len`.
    pub max_bulk_len: usize,
    /// True while the client must still authenticate (stricter limits apply).
    pub unauthenticated: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: DEFAULT_MAX_BULK_LEN,
            unauthenticated: false,
        }
    }
}

/// One RESP2/RESP3 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`
    Simple(Bytes),
    /// `-ERR ...` (also RESP3 blob errors `!`).
    Error(Bytes),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Bytes),
    /// RESP2 `$-1` / `*-1`, RESP3 `_`.
    Null,
    /// `*N` (a RESP2 `*-1` decodes as [`Frame::Null`]).
    Array(Vec<Frame>),
    /// RESP3 `,1.5`
    Double(f64),
    /// RESP3 `#t`
    Boolean(bool),
    /// RESP3 `(123...`
    BigNumber(Bytes),
    /// RESP3 `=` verbatim string: format (e.g. `txt`) and data.
    Verbatim(Bytes, Bytes),
    /// RESP3 `%N` map.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~N` set.
    Set(Vec<Frame>),
    /// RESP3 `>N` push.
    Push(Vec<Frame>),
}

impl Frame {
    /// A bulk string frame from anything byte-like.
    pub fn bulk(b: impl Into<Bytes>) -> Frame {
        Frame::Bulk(b.into())
    }

    /// Builds a request frame (array of bulk strings).
    pub fn command<I, T>(args: I) -> Frame
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        Frame::Array(
            args.into_iter()
                .map(|a| Frame::Bulk(Bytes::copy_from_slice(a.as_ref())))
                .collect(),
        )
    }

    /// The bytes of a simple string, bulk string, verbatim string or error.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) | Frame::Error(b) | Frame::Verbatim(_, b) => Some(b),
            _ => None,
        }
    }

    /// True for error replies.
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }

    /// Writes this frame in RESP (RESP3 types are written as they are).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Simple(s) => write_simple(out, s),
            Frame::Error(s) => write_error(out, s),
            Frame::Integer(i) => write_integer(out, *i),
            Frame::Bulk(b) => write_bulk(out, b),
            Frame::Null => out.put_slice(b"$-1\r\n"),
            Frame::Array(items) => {
                write_header(out, b'*', items.len() as i64);
                for f in items {
                    f.encode(out);
                }
            }
            Frame::Double(d) => {
                out.put_u8(b',');
                out.put_slice(format_double(*d).as_bytes());
                out.put_slice(b"\r\n");
            }
            Frame::Boolean(b) => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Frame::BigNumber(n) => write_line(out, b'(', n),
            Frame::Verbatim(fmt_, data) => {
                write_header(out, b'=', (fmt_.len() + 1 + data.len()) as i64);
                out.put_slice(fmt_);
                out.put_u8(b':');
                out.put_slice(data);
                out.put_slice(b"\r\n");
            }
            Frame::Map(pairs) => {
                write_header(out, b'%', pairs.len() as i64);
                for (k, v) in pairs {
                    k.encode(out);
                    v.encode(out);
                }
            }
            Frame::Set(items) => {
                write_header(out, b'~', items.len() as i64);
                for f in items {
                    f.encode(out);
                }
            }
            Frame::Push(items) => {
                write_header(out, b'>', items.len() as i64);
                for f in items {
                    f.encode(out);
                }
            }
        }
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Simple(s) => write!(f, "{}", String::from_utf8_lossy(s)),
            Frame::Error(s) => write!(f, "(error) {}", String::from_utf8_lossy(s)),
            Frame::Integer(i) => write!(f, "(integer) {i}"),
            Frame::Bulk(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Frame::Null => write!(f, "(nil)"),
            Frame::Double(d) => write!(f, "(double) {d}"),
            Frame::Boolean(b) => write!(f, "({b})"),
            Frame::BigNumber(n) => write!(f, "(big number) {}", String::from_utf8_lossy(n)),
            Frame::Verbatim(_, d) => write!(f, "{:?}", String::from_utf8_lossy(d)),
            Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
                write!(f, "[")?;
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{it}")?;
                }
                write!(f, "]")
            }
            Frame::Map(pairs) => {
                write!(f, "{{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                write!(f, "}}")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoder helpers: write straight into the output buffer, no per-frame allocation.
// ---------------------------------------------------------------------------------------------

/// Formats an integer into `buf` and returns the used tail.
fn fmt_i64(v: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// Writes `<prefix><n>\r\n`.
pub fn write_header(out: &mut BytesMut, prefix: u8, n: i64) {
    let mut tmp = [0u8; 20];
    let digits = fmt_i64(n, &mut tmp);
    out.reserve(digits.len() + 3);
    out.put_u8(prefix);
    out.put_slice(digits);
    out.put_slice(b"\r\n");
}

/// Writes `<prefix>s\r\n` for a one-line frame; CR/LF inside `s` become spaces so that the
/// frame cannot be split or a reply injected.
fn write_line(out: &mut BytesMut, prefix: u8, s: &[u8]) {
    out.reserve(s.len() + 3);
    out.put_u8(prefix);
    if s.iter().any(|&b| b == b'\r' || b == b'\n') {
        for &b in s {
            out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
    } else {
        out.put_slice(s);
    }
    out.put_slice(b"\r\n");
}

/// Writes `+s\r\n` (CR/LF in `s` are replaced by spaces).
pub fn write_simple(out: &mut BytesMut, s: &[u8]) {
    write_line(out, b'+', s);
}

/// Writes `-s\r\n` (`s` must hold no CR/LF; they are replaced by spaces, as redis does).
pub fn write_error(out: &mut BytesMut, s: &[u8]) {
    write_line(out, b'-', s);
}

/// Writes `:n\r\n`.
pub fn write_integer(out: &mut BytesMut, n: i64) {
    write_header(out, b':', n);
}

/// Writes `$len\r\nbytes\r\n`.
pub fn write_bulk(out: &mut BytesMut, b: &[u8]) {
    write_header(out, b'$', b.len() as i64);
    out.reserve(b.len() + 2);
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

/// Writes an array header `*n\r\n`.
pub fn write_array_len(out: &mut BytesMut, n: usize) {
    write_header(out, b'*', n as i64);
}

/// Writes a request (array of bulk strings) from its arguments.
pub fn write_command<T: AsRef<[u8]>>(out: &mut BytesMut, args: &[T]) {
    write_array_len(out, args.len());
    for a in args {
        write_bulk(out, a.as_ref());
    }
}

/// Formats a double the way Redis does in RESP3 and in replies such as INCRBYFLOAT.
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".to_string()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        let s = format!("{d}");
        // Rust prints `1e21` style only for huge values via `{:e}`; `{}` is always positional.
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Server-side request parsing.
// ---------------------------------------------------------------------------------------------

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        match memchr(b'\r', &buf[i..]) {
            Some(p) => {
                let at = i + p;
                if at + 1 < buf.len() {
                    if buf[at + 1] == b'\n' {
                        return Some(at);
                    }
                    i = at + 1;
                } else {
                    return None;
                }
            }
            None => return None,
        }
    }
    None
}

#[inline]
fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// Parses a decimal integer the way Redis's `string2ll` does (no leading `+`, no spaces).
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let (neg, digits) = if s[0] == b'-' {
        (true, &s[1..])
    } else {
        (false, s)
    };
    if digits.is_empty() {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else if v == 0 {
            // "-0" is rejected by string2ll.
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else if v > i64::MAX as u64 {
        None
    } else {
        Some(v as i64)
    }
}

/// Outcome of [`parse_command`] for one request.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A complete request; its arguments were pushed into the caller's vector.
    Command,
    /// An empty request (`*0`, `*-1`, a blank inline line): nothing to run.
    Empty,
}

/// Parses one request from the front of `buf` into `args` (cleared first).
///
/// Returns `Ok(None)` when more bytes are needed (nothing consumed), `Ok(Some(_))` when a request
/// was consumed, or a [`ProtocolError`] after which the connection must answer
/// `-ERR Protocol error: ...` and close.
pub fn parse_command(
    buf: &mut BytesMut,
    args: &mut Vec<Bytes>,
    limits: &Limits,
) -> Result<Option<Parsed>, ProtocolError> {
    args.clear();
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'*' {
        parse_multibulk(buf, args, limits, &mut Progress::new(), None)
    } else {
        parse_inline(buf, args)
    }
}

/// Largest amount of buffer space reserved ahead for one declared bulk argument. redis-server
/// reserves the whole declared length; capping the hint keeps a client that only *declares* a
/// huge bulk from making us allocate it (growth beyond this is amortized by `BytesMut`).
const MAX_BULK_PREALLOC: usize = 1024 * 1024;

/// Finds the end of a `*`/`$` header line the way redis-server does: the first `\r` (searched
/// with `strchr`, so a NUL byte ends the search) followed by at least one more byte, which is
/// skipped unchecked. Returns the position of that `\r`, or `None` while incomplete.
fn find_header_end(buf: &[u8], from: usize) -> Option<usize> {
    let at = from
        + buf
            .get(from..)?
            .iter()
            .position(|&b| b == b'\r' || b == 0)?;
    (buf[at] == b'\r' && at + 1 < buf.len()).then_some(at)
}

/// How far a partially received multibulk request has been validated.
struct Progress {
    /// Declared argument count (0 while the `*` header is not yet parsed).
    count: i64,
    /// Offset of the next unparsed `$` header.
    pos: usize,
    /// Payload spans of the arguments validated so far.
    spans: smallspans::Spans,
    /// Every line seen so far ends in `\r\n` (the frame is exactly what [`write_command`]
    /// makes of its arguments, so it can be forwarded as it came).
    exact: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            count: 0,
            pos: 0,
            spans: smallspans::Spans::new(),
            exact: true,
        }
    }

    fn reset(&mut self) {
        self.count = 0;
        self.pos = 0;
        self.spans.clear();
        self.exact = true;
    }
}

fn parse_multibulk(
    buf: &mut BytesMut,
    args: &mut Vec<Bytes>,
    limits: &Limits,
    st: &mut Progress,
    frame_out: Option<&mut Option<Bytes>>,
) -> Result<Option<Parsed>, ProtocolError> {
    if st.count == 0 {
        let Some(eol) = find_header_end(buf, 0) else {
            if buf.len() > INLINE_MAX {
                return Err(ProtocolError::fixed(
                    "Protocol error: too big mbulk count string",
                ));
            }
            return Ok(None);
        };
        let count = match parse_i64(&buf[1..eol]) {
            Some(n) if n <= i32::MAX as i64 => n,
            _ => {
                return Err(ProtocolError::fixed(
                    "Protocol error: invalid multibulk length",
                ))
            }
        };
        if limits.unauthenticated && count > UNAUTH_MAX_MULTIBULK {
            return Err(ProtocolError::fixed(
                "Protocol error: unauthenticated multibulk length",
            ));
        }
        if count <= 0 {
            let _ = buf.split_to(eol + 2);
            return Ok(Some(Parsed::Empty));
        }
        st.count = count;
        st.pos = eol + 2;
        st.exact = buf[eol + 1] == b'\n';
    }
    // Validate and find the end without copying; resumes where the last call stopped.
    while (st.spans.len() as i64) < st.count {
        let pos = st.pos;
        if pos >= buf.len() {
            return Ok(None);
        }
        // As redis-server: the whole header line first, then its type byte.
        let Some(eol) = find_header_end(buf, pos) else {
            if buf.len() - pos > INLINE_MAX {
                return Err(ProtocolError::fixed(
                    "Protocol error: too big bulk count string",
                ));
            }
            return Ok(None);
        };
        if buf[pos] != b'$' {
            return Err(ProtocolError::expected_dollar(buf[pos]));
        }
        let len = match parse_i64(&buf[pos + 1..eol]) {
            Some(n) if n >= 0 && (n as u64) <= limits.max_bulk_len as u64 => n as u64,
            _ => return Err(ProtocolError::fixed("Protocol error: invalid bulk length")),
        };
        if limits.unauthenticated && len > UNAUTH_MAX_BULK as u64 {
            return Err(ProtocolError::fixed(
                "Protocol error: unauthenticated bulk length",
            ));
        }
        let start = eol + 2;
        // Cannot overflow: `len` <= max_bulk_len and `start` <= buf.len(), both usize.
        let end = start.saturating_add(len as usize);
        if end.saturating_add(2) > buf.len() {
            // Make room for a big argument ahead so it does not reallocate on every read.
            let need = end.saturating_add(2) - buf.len();
            if need > 4096 {
                buf.reserve(need.min(MAX_BULK_PREALLOC));
            }
            return Ok(None);
        }
        // Like redis-server, the two bytes after the payload are skipped unchecked.
        st.exact &= buf[eol + 1] == b'\n' && buf[end] == b'\r' && buf[end + 1] == b'\n';
        st.spans.push(start, end);
        st.pos = end + 2;
    }
    let frame = buf.split_to(st.pos).freeze();
    args.reserve(st.spans.len());
    for (s, e) in st.spans.iter() {
        args.push(frame.slice(s..e));
    }
    if let Some(out) = frame_out {
        if st.exact {
            *out = Some(frame);
        }
    }
    Ok(Some(Parsed::Command))
}

/// A resumable [`parse_command`] for one connection.
///
/// `parse_command` re-validates a partially received multibulk request from its start on every
/// call, so a request of many small arguments trickling in costs time quadratic in its size (a
/// client can keep a core busy that way). This parser remembers how far it got. Contract: pass
/// the same buffer each time, only appended to in between, until a call returns something other
/// than `Ok(None)`; results are then exactly those of `parse_command`.
#[derive(Default)]
pub struct RequestParser {
    progress: Option<Progress>,
    /// Keep the raw bytes of each parsed request for [`RequestParser::take_frame`].
    keep_frames: bool,
    frame: Option<Bytes>,
}

impl RequestParser {
    /// A parser with no request in progress.
    pub fn new() -> RequestParser {
        RequestParser::default()
    }

    /// A parser that also keeps each request's raw bytes (see [`RequestParser::take_frame`]):
    /// a proxy forwards them instead of encoding the arguments again.
    pub fn keeping_frames() -> RequestParser {
        RequestParser {
            keep_frames: true,
            ..RequestParser::default()
        }
    }

    /// The raw bytes of the request the last [`RequestParser::parse`] returned, when the parser
    /// keeps frames and they are exactly [`write_command`]'s encoding of its arguments (a
    /// multibulk request with every line ending in `\r\n`); `None` otherwise, also for inline
    /// requests. The arguments are slices of the same buffer, so this copies nothing.
    pub fn take_frame(&mut self) -> Option<Bytes> {
        self.frame.take()
    }

    /// Like [`parse_command`], resuming a partially validated request.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        args: &mut Vec<Bytes>,
        limits: &Limits,
    ) -> Result<Option<Parsed>, ProtocolError> {
        args.clear();
        self.frame = None;
        let st = self.progress.get_or_insert_with(Progress::new);
        // A buffer that shrank or no longer holds a multibulk breaks the contract: start over.
        if st.count != 0 && (buf.len() < st.pos || buf.first() != Some(&b'*')) {
            st.reset();
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let r = if buf[0] == b'*' {
            let out = if self.keep_frames {
                Some(&mut self.frame)
            } else {
                None
            };
            parse_multibulk(buf, args, limits, st, out)
        } else {
            parse_inline(buf, args)
        };
        if !matches!(r, Ok(None)) {
            st.reset();
        }
        r
    }
}

impl ProtocolError {
    fn expected_dollar(got: u8) -> ProtocolError {
        // redis-server prints the raw byte; a `str` cannot hold a lone byte >= 0x80, so those
        // come out as the Latin-1 character (two bytes in UTF-8). CR/LF become spaces when the
        // error is written, as in redis.
        ProtocolError(std::borrow::Cow::Owned(format!(
            "Protocol error: expected '$', got '{}'",
            got as char
        )))
    }
}

fn parse_inline(
    buf: &mut BytesMut,
    args: &mut Vec<Bytes>,
) -> Result<Option<Parsed>, ProtocolError> {
    // redis-server looks for the `\n` with `strchr`, so a NUL byte hides it: such a line waits
    // for more input until the buffer outgrows the inline limit.
    let nl = match buf.iter().position(|&b| b == b'\n' || b == 0) {
        Some(p) if buf[p] == b'\n' => p,
        _ => {
            if buf.len() > INLINE_MAX {
                return Err(ProtocolError::fixed(
                    "Protocol error: too big inline request",
                ));
            }
            return Ok(None);
        }
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let line = buf.split_to(nl + 1);
    split_inline_args(&line[..line_end], args)?;
    if args.is_empty() {
        return Ok(Some(Parsed::Empty));
    }
    Ok(Some(Parsed::Command))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// C `isspace` in the "C" locale (also vertical tab and form feed).
#[inline]
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Splits an inline request line as `sdssplitargs` does (quotes and escapes). Like the C
/// version the line ends at the first NUL byte.
pub fn split_inline_args(line: &[u8], args: &mut Vec<Bytes>) -> Result<(), ProtocolError> {
    const UNBALANCED: ProtocolError =
        ProtocolError::fixed("Protocol error: unbalanced quotes in request");
    let line = match line.iter().position(|&b| b == 0) {
        Some(z) => &line[..z],
        None => line,
    };
    let n = line.len();
    let mut i = 0;
    loop {
        while i < n && is_c_space(line[i]) {
            i += 1;
        }
        if i >= n {
            return Ok(());
        }
        let mut cur = Vec::new();
        let mut inq = false;
        let mut insq = false;
        loop {
            if inq {
                if i >= n {
                    return Err(UNBALANCED);
                }
                let c = line[i];
                let hex = if c == b'\\' && i + 3 < n && line[i + 1] == b'x' {
                    hex_digit(line[i + 2]).zip(hex_digit(line[i + 3]))
                } else {
                    None
                };
                if let Some((hi, lo)) = hex {
                    cur.push(hi * 16 + lo);
                    i += 3;
                } else if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    // The closing quote must be followed by a space or nothing at all.
                    if i + 1 < n && !is_c_space(line[i + 1]) {
                        return Err(UNBALANCED);
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else if insq {
                if i >= n {
                    return Err(UNBALANCED);
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < n && !is_c_space(line[i + 1]) {
                        return Err(UNBALANCED);
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    // Only these end an unquoted token (not \v or \f), as in sdssplitargs.
                    b' ' | b'\n' | b'\r' | b'\t' => {
                        i += 1;
                        break;
                    }
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        args.push(Bytes::from(cur));
    }
}

mod smallspans {
    //! A tiny span list that stays on the stack for typical request sizes.
    pub struct Spans {
        inline: [(usize, usize); 8],
        len: usize,
        spill: Vec<(usize, usize)>,
    }
    impl Spans {
        pub fn new() -> Self {
            Spans {
                inline: [(0, 0); 8],
                len: 0,
                spill: Vec::new(),
            }
        }
        pub fn push(&mut self, s: usize, e: usize) {
            if self.len < 8 {
                self.inline[self.len] = (s, e);
            } else {
                if self.spill.is_empty() {
                    self.spill.extend_from_slice(&self.inline);
                }
                self.spill.push((s, e));
            }
            self.len += 1;
        }
        pub fn len(&self) -> usize {
            self.len
        }
        /// Empties the list, keeping any spilled capacity for reuse.
        pub fn clear(&mut self) {
            self.len = 0;
            self.spill.clear();
            if self.spill.capacity() > 4096 {
                self.spill = Vec::new();
            }
        }
        pub fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
            let slice: &[(usize, usize)] = if self.len <= 8 {
                &self.inline[..self.len]
            } else {
                &self.spill
            };
            slice.iter().copied()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client-side reply decoding.
// ---------------------------------------------------------------------------------------------

/// Error from the reply decoder: the peer sent something that is not RESP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Unknown type byte.
    #[error("invalid RESP type byte 0x{0:02x}")]
    BadType(u8),
    /// A length or integer that does not parse.
    #[error("invalid RESP length or integer")]
    BadNumber,
    /// Missing CRLF after a bulk payload.
    #[error("missing CRLF after bulk payload")]
    MissingCrlf,
    /// Aggregates nested deeper than [`MAX_DEPTH`].
    #[error("RESP nesting too deep")]
    TooDeep,
    /// A length above the decoder's limit.
    #[error("RESP length too large")]
    TooLarge,
}

/// Returns the length of the complete frame at the front of `buf`, `Ok(None)` if incomplete.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    scan(buf, 0, 0)
}

fn line_at(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    find_crlf(buf, pos).map(|eol| (eol, eol + 2))
}

fn scan(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    if pos >= buf.len() {
        return Ok(None);
    }
    let t = buf[pos];
    let Some((eol, next)) = line_at(buf, pos + 1) else {
        if buf.len() - pos > INLINE_MAX * 16 {
            return Err(DecodeError::TooLarge);
        }
        return Ok(None);
    };
    match t {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(Some(next)),
        b'$' | b'!' | b'=' => {
            let n = parse_i64(&buf[pos + 1..eol]).ok_or(DecodeError::BadNumber)?;
            if n < 0 {
                return Ok(Some(next));
            }
            if n as u64 > DEFAULT_MAX_BULK_LEN as u64 * 8 {
                return Err(DecodeError::TooLarge);
            }
            let end = next + n as usize;
            if end + 2 > buf.len() {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(DecodeError::MissingCrlf);
            }
            Ok(Some(end + 2))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = parse_i64(&buf[pos + 1..eol]).ok_or(DecodeError::BadNumber)?;
            if n < 0 {
                // `*-1` (and the like) is a null; an attribute must have a size.
                if t == b'|' {
                    return Err(DecodeError::BadNumber);
                }
                return Ok(Some(next));
            }
            let items = if t == b'%' || t == b'|' {
                (n as u64).saturating_mul(2)
            } else {
                n as u64
            };
            let mut p = next;
            for _ in 0..items {
                match scan(buf, p, depth + 1)? {
                    Some(e) => p = e,
                    None => return Ok(None),
                }
            }
            if t == b'|' {
                // An attribute is followed by the real reply.
                return scan(buf, p, depth + 1);
            }
            Ok(Some(p))
        }
        other => Err(DecodeError::BadType(other)),
    }
}

/// Decodes one complete frame from the front of `buf`, consuming it; `Ok(None)` if incomplete.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    let bytes = buf.split_to(len).freeze();
    let (frame, _) = build(&bytes, 0, 0)?;
    Ok(Some(frame))
}

/// Decodes a complete frame held in `bytes` (as measured by [`frame_len`]).
pub fn decode_complete(bytes: &Bytes) -> Result<Frame, DecodeError> {
    build(bytes, 0, 0).map(|(f, _)| f)
}

fn build(b: &Bytes, pos: usize, depth: usize) -> Result<(Frame, usize), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    // `decode_complete` may be handed anything: never index past the end.
    let t = *b.get(pos).ok_or(DecodeError::BadNumber)?;
    let (eol, next) = line_at(b, pos + 1).ok_or(DecodeError::BadNumber)?;
    let line = &b[pos + 1..eol];
    let num = || parse_i64(line).ok_or(DecodeError::BadNumber);
    Ok(match t {
        b'+' => (Frame::Simple(b.slice(pos + 1..eol)), next),
        b'-' => (Frame::Error(b.slice(pos + 1..eol)), next),
        b':' => (Frame::Integer(num()?), next),
        b'_' => (Frame::Null, next),
        b'#' => (Frame::Boolean(line == b"t"), next),
        b'(' => (Frame::BigNumber(b.slice(pos + 1..eol)), next),
        b',' => {
            let s = std::str::from_utf8(line).map_err(|_| DecodeError::BadNumber)?;
            let d = match s {
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                "nan" => f64::NAN,
                _ => s.parse().map_err(|_| DecodeError::BadNumber)?,
            };
            (Frame::Double(d), next)
        }
        b'$' | b'!' | b'=' => {
            let n = num()?;
            if n < 0 {
                return Ok((Frame::Null, next));
            }
            let end = next.saturating_add(n as usize);
            if end.saturating_add(2) > b.len() {
                return Err(DecodeError::MissingCrlf);
            }
            let data = b.slice(next..end);
            let f = match t {
                b'$' => Frame::Bulk(data),
                b'!' => Frame::Error(data),
                _ => {
                    if data.len() >= 4 && data[3] == b':' {
                        Frame::Verbatim(data.slice(0..3), data.slice(4..))
                    } else {
                        Frame::Verbatim(Bytes::from_static(b"txt"), data)
                    }
                }
            };
            (f, end + 2)
        }
        b'*' | b'~' | b'>' => {
            let n = num()?;
            if n < 0 {
                return Ok((Frame::Null, next));
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            let mut p = next;
            for _ in 0..n {
                let (f, e) = build(b, p, depth + 1)?;
                items.push(f);
                p = e;
            }
            let f = match t {
                b'*' => Frame::Array(items),
                b'~' => Frame::Set(items),
                _ => Frame::Push(items),
            };
            (f, p)
        }
        b'%' | b'|' => {
            let n = num()?;
            if n < 0 {
                if t == b'|' {
                    return Err(DecodeError::BadNumber);
                }
                return Ok((Frame::Null, next));
            }
            let mut pairs = Vec::with_capacity((n as usize).min(1024));
            let mut p = next;
            for _ in 0..n {
                let (k, e) = build(b, p, depth + 1)?;
                let (v, e2) = build(b, e, depth + 1)?;
                pairs.push((k, v));
                p = e2;
            }
            if t == b'|' {
                return build(b, p, depth + 1);
            }
            (Frame::Map(pairs), p)
        }
        other => return Err(DecodeError::BadType(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        let mut args = Vec::new();
        while let Some(p) = parse_command(&mut buf, &mut args, &Limits::default())? {
            if p == Parsed::Command {
                out.push(args.clone());
            }
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline() {
        let r = parse_all(b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\nPING\r\n  set a \"b c\"\r\n").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], vec![Bytes::from("GET"), Bytes::from("foo")]);
        assert_eq!(r[1], vec![Bytes::from("PING")]);
        assert_eq!(r[2][2], Bytes::from("b c"));
    }

    #[test]
    fn split_at_every_byte() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\nPING\r\n";
        for cut in 0..input.len() {
            let mut buf = BytesMut::from(&input[..cut]);
            let mut args = Vec::new();
            let mut got = Vec::new();
            while let Some(p) = parse_command(&mut buf, &mut args, &Limits::default()).unwrap() {
                if p == Parsed::Command {
                    got.push(args.clone());
                }
            }
            buf.extend_from_slice(&input[cut..]);
            while let Some(p) = parse_command(&mut buf, &mut args, &Limits::default()).unwrap() {
                if p == Parsed::Command {
                    got.push(args.clone());
                }
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0][2], Bytes::from("value"));
        }
    }

    #[test]
    fn protocol_errors_in_redis_words() {
        assert_eq!(
            parse_all(b"*abc\r\n").unwrap_err().0,
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            parse_all(b"*1\r\n+foo\r\n").unwrap_err().0,
            "Protocol error: expected '$', got '+'"
        );
        assert_eq!(
            parse_all(b"*1\r\n$-5\r\n").unwrap_err().0,
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            parse_all(b"*1\r\n$600000000\r\n").unwrap_err().0,
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            parse_all(b"set \"a\r\n").unwrap_err().0,
            "Protocol error: unbalanced quotes in request"
        );
        let big = vec![b'a'; INLINE_MAX + 10];
        assert_eq!(
            parse_all(&big).unwrap_err().0,
            "Protocol error: too big inline request"
        );
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        let lim = Limits {
            unauthenticated: true,
            ..Limits::default()
        };
        assert_eq!(
            parse_command(&mut buf, &mut Vec::new(), &lim)
                .unwrap_err()
                .0,
            "Protocol error: unauthenticated multibulk length"
        );
    }

    fn parse_one(input: &[u8], limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut args = Vec::new();
        Ok(parse_command(&mut buf, &mut args, limits)?.map(|_| args))
    }

    /// Quirks of redis-server 7.0.15's request reader, checked against the real server.
    #[test]
    fn redis_header_and_inline_quirks() {
        let d = Limits::default();
        let ping = Some(vec![Bytes::from("PING")]);
        // A header ends at the first CR; the byte after it is skipped unchecked.
        assert_eq!(parse_one(b"*1\rX$4\r\nPING\r\n", &d), Ok(ping.clone()));
        assert_eq!(parse_one(b"*1\r\n$4\rXPING\r\n", &d), Ok(ping.clone()));
        // ... and so are the two bytes after a bulk payload.
        assert_eq!(parse_one(b"*1\r\n$4\r\nPINGXY", &d), Ok(ping.clone()));
        // The type byte is checked only once the header line is complete.
        assert_eq!(parse_one(b"*1\r\n+x", &d), Ok(None));
        assert_eq!(
            parse_one(b"*1\r\n\nx\r\n", &d).unwrap_err().0,
            "Protocol error: expected '$', got '\n'"
        );
        // strchr stops at NUL: such a header or inline line never completes.
        assert_eq!(parse_one(b"*1\r\n\0x\r\n", &d), Ok(None));
        assert_eq!(parse_one(b"*1\0\r\n", &d), Ok(None));
        assert_eq!(parse_one(b"ECHO a\0b\r\n", &d), Ok(None));
        // Inline lines longer than 64 KiB are fine once their newline has arrived.
        let mut long = b"PING".to_vec();
        long.extend_from_slice(&vec![b' '; INLINE_MAX + 10]);
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_one(&long, &d), Ok(ping.clone()));
        // isspace() also skips \v and \f, but only space/\t/\r/\n end an unquoted token.
        assert_eq!(parse_one(b"\x0bPING\r\n", &d), Ok(ping));
        assert_eq!(
            parse_one(b"PING\x0b\r\n", &d),
            Ok(Some(vec![Bytes::from(&b"PING\x0b"[..])]))
        );
        assert_eq!(
            parse_one(b"ECHO \"a\"\x0b\r\n", &d),
            Ok(Some(vec![Bytes::from("ECHO"), Bytes::from("a")]))
        );
        assert_eq!(
            parse_one(b"ECHO \"\\x41\\x4\" 'a\\'b'\r\n", &d),
            Ok(Some(vec![
                Bytes::from("ECHO"),
                Bytes::from("Ax4"),
                Bytes::from("a'b")
            ]))
        );
        // Unauthenticated limits: exactly 10 arguments and 16384 bytes are still fine.
        let un = Limits {
            unauthenticated: true,
            ..Limits::default()
        };
        assert_eq!(parse_one(b"*10\r\n", &un), Ok(None));
        assert_eq!(parse_one(b"*1\r\n$16384\r\n", &un), Ok(None));
        assert_eq!(
            parse_one(b"*1\r\n$16385\r\n", &un).unwrap_err().0,
            "Protocol error: unauthenticated bulk length"
        );
        // The invalid-length check comes first.
        assert_eq!(
            parse_one(b"*1\r\n$600000000\r\n", &un).unwrap_err().0,
            "Protocol error: invalid bulk length"
        );
    }

    #[test]
    fn sdssplitargs_stops_at_nul() {
        let mut args = Vec::new();
        split_inline_args(b"set a\0b c", &mut args).unwrap();
        assert_eq!(args, vec![Bytes::from("set"), Bytes::from("a")]);
        args.clear();
        assert!(split_inline_args(b"set \"a\0\"", &mut args).is_err());
    }

    #[test]
    fn declared_big_bulk_reserves_little() {
        let mut buf = BytesMut::from(&b"*1\r\n$536870912\r\n"[..]);
        assert_eq!(
            parse_command(&mut buf, &mut Vec::new(), &Limits::default()),
            Ok(None)
        );
        assert!(
            buf.capacity() <= 2 * MAX_BULK_PREALLOC,
            "{}",
            buf.capacity()
        );
    }

    #[test]
    fn one_line_frames_cannot_inject() {
        let mut out = BytesMut::new();
        write_simple(&mut out, b"a\r\n+b");
        write_error(&mut out, b"ERR x\r\n");
        Frame::BigNumber("1\r\n2".into()).encode(&mut out);
        assert_eq!(&out[..], b"+a  +b\r\n-ERR x  \r\n(1  2\r\n");
    }

    #[test]
    fn reply_decoder_rejects_instead_of_panicking() {
        for bad in [
            &b"|-1\r\n"[..],
            b"%-1\r\n|-1\r\n",
            b"$5\r\nab\r\n",
            b"*2\r\n:1\r\n",
        ] {
            let _ = decode_complete(&Bytes::copy_from_slice(bad));
            let mut buf = BytesMut::from(bad);
            let _ = decode_frame(&mut buf);
        }
        assert_eq!(frame_len(b"|-1\r\n"), Err(DecodeError::BadNumber));
        let mut buf = BytesMut::from(&b"%-1\r\n"[..]);
        assert_eq!(decode_frame(&mut buf), Ok(Some(Frame::Null)));
    }

    #[test]
    fn empty_requests() {
        let mut buf = BytesMut::from(&b"*0\r\n\r\n*-1\r\n"[..]);
        let mut args = Vec::new();
        for _ in 0..3 {
            assert_eq!(
                parse_command(&mut buf, &mut args, &Limits::default()).unwrap(),
                Some(Parsed::Empty)
            );
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn replies_round_trip() {
        let f = Frame::Array(vec![
            Frame::Simple("OK".into()),
            Frame::Error("ERR x".into()),
            Frame::Integer(-42),
            Frame::Bulk("hello".into()),
            Frame::Null,
            Frame::Map(vec![(Frame::Bulk("k".into()), Frame::Double(1.5))]),
            Frame::Set(vec![Frame::Boolean(true)]),
            Frame::Push(vec![Frame::BigNumber("123".into())]),
            Frame::Verbatim("txt".into(), "v".into()),
        ]);
        let mut out = BytesMut::new();
        f.encode(&mut out);
        let total = out.len();
        assert_eq!(frame_len(&out).unwrap(), Some(total));
        for cut in 0..total {
            assert_eq!(frame_len(&out[..cut]).unwrap(), None);
        }
        assert_eq!(decode_frame(&mut out).unwrap(), Some(f));
    }

    #[test]
    fn kept_frames_only_when_canonical() {
        let lim = Limits::default();
        let mut args = Vec::new();
        let mut p = RequestParser::keeping_frames();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n"[..]);
        assert!(matches!(
            p.parse(&mut buf, &mut args, &lim),
            Ok(Some(Parsed::Command))
        ));
        assert_eq!(
            p.take_frame().as_deref(),
            Some(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..])
        );
        assert_eq!(p.take_frame(), None, "taken once");
        // Inline: no frame.
        assert!(matches!(
            p.parse(&mut buf, &mut args, &lim),
            Ok(Some(Parsed::Command))
        ));
        assert_eq!(p.take_frame(), None);
        // Accepted as redis-server accepts them, but not canonical: no frame.
        for odd in [
            &b"*1\r\n$4\r\nPINGxy"[..],
            &b"*1\r\n$4\rxPING\r\n"[..],
            &b"*1\rx$4\r\nPING\r\n"[..],
        ] {
            let mut buf = BytesMut::from(odd);
            assert!(
                matches!(
                    p.parse(&mut buf, &mut args, &lim),
                    Ok(Some(Parsed::Command))
                ),
                "{odd:?}"
            );
            assert_eq!(args, vec![Bytes::from_static(b"PING")]);
            assert_eq!(p.take_frame(), None, "{odd:?}");
        }
        // A parser that does not keep frames never has one.
        let mut q = RequestParser::new();
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n"[..]);
        assert!(matches!(
            q.parse(&mut buf, &mut args, &lim),
            Ok(Some(Parsed::Command))
        ));
        assert_eq!(q.take_frame(), None);
    }

    #[test]
    fn integers() {
        let mut tmp = [0u8; 20];
        assert_eq!(fmt_i64(i64::MIN, &mut tmp), b"-9223372036854775808");
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"01"), None);
        assert_eq!(parse_i64(b"+1"), None);
        assert_eq!(parse_i64(b"-0"), None);
        assert_eq!(parse_i64(b"0"), Some(0));
    }
}
