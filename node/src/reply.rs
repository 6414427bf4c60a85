//! The reply writer: encodes replies straight into a connection's output buffer, choosing
//! RESP2 or RESP3 shapes by the protocol the client negotiated with HELLO.

use bytes::BytesMut;
use slotgate_protocol::resp;

/// Output buffer of one connection plus its protocol version.
pub struct Reply {
    /// Encoded bytes not yet written to the socket.
    pub buf: BytesMut,
    /// True when the client switched to RESP3 (HELLO 3).
    pub resp3: bool,
    /// Number of replies written (used to count pending replies in MULTI and for CLIENT REPLY).
    pub count: u64,
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            buf: BytesMut::with_capacity(16 * 1024),
            resp3: false,
            count: 0,
        }
    }
}

impl Reply {
    /// `+OK`
    pub fn ok(&mut self) {
        self.count += 1;
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// A simple string `+s`.
    pub fn simple(&mut self, s: &str) {
        self.count += 1;
        resp::write_simple(&mut self.buf, s.as_bytes());
    }

    /// An error reply; `msg` includes its code (`ERR ...`, `WRONGTYPE ...`).
    pub fn error(&mut self, msg: &str) {
        self.count += 1;
        resp::write_error(&mut self.buf, msg.as_bytes());
    }

    /// The WRONGTYPE error.
    pub fn wrong_type(&mut self) {
        self.error("WRONGTYPE Operation against a key holding the wrong kind of value");
    }

    /// `ERR syntax error`
    pub fn syntax_error(&mut self) {
        self.error("ERR syntax error");
    }

    /// `ERR value is not an integer or out of range`
    pub fn not_integer(&mut self) {
        self.error("ERR value is not an integer or out of range");
    }

    /// `ERR value is not a valid float`
    pub fn not_float(&mut self) {
        self.error("ERR value is not a valid float");
    }

    /// `ERR wrong number of arguments for '<cmd>' command`
    pub fn wrong_arity(&mut self, cmd: &str) {
        self.error(&format!(
            "ERR wrong number of arguments for '{}' command",
            cmd.to_ascii_lowercase()
        ));
    }

    /// An integer.
    pub fn int(&mut self, n: i64) {
        self.count += 1;
        resp::write_integer(&mut self.buf, n);
    }

    /// A bulk string.
    pub fn bulk(&mut self, b: &[u8]) {
        self.count += 1;
        resp::write_bulk(&mut self.buf, b);
    }

    /// A bulk string or null.
    pub fn opt_bulk(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.bulk(b),
            None => self.null(),
        }
    }

    /// The null reply (`$-1` in RESP2, `_` in RESP3).
    pub fn null(&mut self) {
        self.count += 1;
        self.buf
            .extend_from_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }

    /// The null array (`*-1` in RESP2, `_` in RESP3), e.g. EXEC after a touched WATCH.
    pub fn null_array(&mut self) {
        self.count += 1;
        self.buf
            .extend_from_slice(if self.resp3 { b"_\r\n" } else { b"*-1\r\n" });
    }

    /// An array header; the caller writes `n` elements next.
    pub fn array(&mut self, n: usize) {
        self.count += 1;
        resp::write_array_len(&mut self.buf, n);
    }

    /// A map header of `n` pairs (RESP2: an array of 2n elements).
    pub fn map(&mut self, n: usize) {
        self.count += 1;
        if self.resp3 {
            resp::write_header(&mut self.buf, b'%', n as i64);
        } else {
            resp::write_array_len(&mut self.buf, n * 2);
        }
    }

    /// A set header (RESP2: an array).
    pub fn set(&mut self, n: usize) {
        self.count += 1;
        if self.resp3 {
            resp::write_header(&mut self.buf, b'~', n as i64);
        } else {
            resp::write_array_len(&mut self.buf, n);
        }
    }

    /// A push header (RESP2: an array), for pub/sub messages.
    pub fn push(&mut self, n: usize) {
        self.count += 1;
        if self.resp3 {
            resp::write_header(&mut self.buf, b'>', n as i64);
        } else {
            resp::write_array_len(&mut self.buf, n);
        }
    }

    /// A double (RESP3 `,d`; RESP2 a bulk string formatted as Redis does).
    pub fn double(&mut self, d: f64) {
        self.count += 1;
        let s = format_double(d);
        if self.resp3 {
            self.buf.extend_from_slice(b",");
            self.buf.extend_from_slice(s.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        } else {
            resp::write_bulk(&mut self.buf, s.as_bytes());
        }
    }

    /// A boolean (RESP3 `#t`; RESP2 integer 1/0).
    pub fn boolean(&mut self, b: bool) {
        if self.resp3 {
            self.count += 1;
            self.buf
                .extend_from_slice(if b { b"#t\r\n" } else { b"#f\r\n" });
        } else {
            self.int(b as i64);
        }
    }

    /// A verbatim string (RESP3 `=`; RESP2 a bulk string), as INFO and CLIENT LIST use.
    pub fn verbatim(&mut self, text: &[u8]) {
        if self.resp3 {
            self.count += 1;
            resp::write_header(&mut self.buf, b'=', (text.len() + 4) as i64);
            self.buf.extend_from_slice(b"txt:");
            self.buf.extend_from_slice(text);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text);
        }
    }

    /// Raw bytes already encoded in RESP (counted as one reply).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.count += 1;
        self.buf.extend_from_slice(bytes);
    }
}

/// Formats a double as Redis does for replies (`%.17g` style, shortest round-trip form).
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "nan".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == d.trunc() && d.abs() < 1e17 {
        return format!("{}", d as i64);
    }
    let s = format!("{d}");
    if s.len() > 24 {
        // Very large/small magnitudes: use exponent form like %.17g does.
        let e = format!("{d:e}");
        return e.replace("e", "e+").replace("e+-", "e-");
    }
    s
}

/// Parses a float argument as Redis's `strtod`-based parsing does (inf/-inf accepted, NaN not).
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(s).ok()?;
    if t.is_empty() || t.starts_with(char::is_whitespace) || t.ends_with(char::is_whitespace) {
        return None;
    }
    let v = match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => t.parse::<f64>().ok()?,
    };
    if v.is_nan() {
        None
    } else {
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles() {
        assert_eq!(format_double(1.5), "1.5");
        assert_eq!(format_double(3.0), "3");
        assert_eq!(format_double(f64::INFINITY), "inf");
        assert_eq!(format_double(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(parse_f64(b"1e3"), Some(1000.0));
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b" 1"), None);
    }

    #[test]
    fn resp2_and_resp3_shapes() {
        let mut r = Reply::default();
        r.map(1);
        r.null();
        r.double(2.5);
        assert_eq!(&r.buf[..], b"*2\r\n$-1\r\n$3\r\n2.5\r\n");
        let mut r = Reply {
            resp3: true,
            ..Reply::default()
        };
        r.map(1);
        r.null();
        r.double(2.5);
        assert_eq!(&r.buf[..], b"%1\r\n_\r\n,2.5\r\n");
    }
}
