//! Property tests ("fuzzing" on a stable toolchain) for the RESP codec.
//!
//! * arbitrary and almost-RESP bytes, whole or split at random points, never make
//!   `parse_command`, `decode_frame`, `frame_len`, `decode_complete` or `split_inline_args`
//!   panic or spin, and the outcome does not depend on how the input was split;
//! * every `Frame` (RESP2 and RESP3, nested) survives encode → decode;
//! * every argument vector written with `write_command` parses back identically;
//! * a raw request frame kept by the parser (`take_frame`, which the proxy forwards as it
//!   came) is always exactly `write_command` of its arguments, and every frame
//!   `write_command` makes is kept.
//!
//! The case count follows `PROPTEST_CASES` (default: proptest's 256). For a
//! long run: `PROPTEST_CASES=200000 cargo test --release -p slotgate-protocol --test fuzz`.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use slotgate_protocol::resp::{
    decode_complete, decode_frame, frame_len, parse_command, split_inline_args, write_command,
    DecodeError, Frame, Limits, Parsed, ProtocolError, RequestParser, INLINE_MAX,
};

/// What one `parse_command` run over a whole stream produced.
#[derive(Debug, PartialEq)]
struct ParseRun {
    requests: Vec<Option<Vec<Bytes>>>,
    error: Option<ProtocolError>,
    rest: Vec<u8>,
}

/// Feeds `input` to `parse_command` in the given chunks, draining every complete request
/// after each chunk, exactly as the node's connection loop does.
fn parse_chunked(input: &[u8], cuts: &[usize], limits: &Limits) -> ParseRun {
    let stateless = parse_chunked_with(input, cuts, limits, None);
    let resumable = parse_chunked_with(
        input,
        cuts,
        limits,
        Some(&mut RequestParser::keeping_frames()),
    );
    assert_eq!(
        stateless, resumable,
        "RequestParser differs from parse_command"
    );
    stateless
}

fn parse_chunked_with(
    input: &[u8],
    cuts: &[usize],
    limits: &Limits,
    mut parser: Option<&mut RequestParser>,
) -> ParseRun {
    let mut buf = BytesMut::new();
    let mut args = Vec::new();
    let mut requests = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    let mut from = 0;
    for &to in &bounds {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        // Every successful call consumes at least one byte, so this is bounded by the input.
        for _ in 0..=input.len() + 1 {
            let before = buf.len();
            let r = match parser.as_deref_mut() {
                Some(p) => p.parse(&mut buf, &mut args, limits),
                None => parse_command(&mut buf, &mut args, limits),
            };
            match r {
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) must not consume");
                    break;
                }
                Ok(Some(p)) => {
                    assert!(buf.len() < before, "a parsed request must consume bytes");
                    match p {
                        Parsed::Command => {
                            assert!(!args.is_empty());
                            if let Some(frame) = parser.as_deref_mut().and_then(|p| p.take_frame())
                            {
                                let mut enc = BytesMut::new();
                                write_command(&mut enc, &args);
                                assert_eq!(&frame[..], &enc[..], "a kept frame must be canonical");
                            }
                            requests.push(Some(args.clone()));
                        }
                        Parsed::Empty => requests.push(None),
                    }
                }
                Err(e) => {
                    assert!(e.0.starts_with("Protocol error: "), "{e}");
                    return ParseRun {
                        requests,
                        error: Some(e),
                        rest: Vec::new(),
                    };
                }
            }
        }
    }
    ParseRun {
        requests,
        error: None,
        rest: buf.to_vec(),
    }
}

/// What one `decode_frame` run over a whole stream produced.
#[derive(Debug)]
struct DecodeRun {
    frames: Vec<Frame>,
    error: Option<DecodeError>,
    rest: Vec<u8>,
}

fn decode_chunked(input: &[u8], cuts: &[usize]) -> DecodeRun {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    let mut from = 0;
    for &to in &bounds {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        for _ in 0..=input.len() + 1 {
            let before = buf.len();
            let measured = frame_len(&buf);
            match decode_frame(&mut buf) {
                Ok(None) => {
                    assert_eq!(measured, Ok(None));
                    assert_eq!(buf.len(), before, "Ok(None) must not consume");
                    break;
                }
                Ok(Some(f)) => {
                    assert_eq!(measured, Ok(Some(before - buf.len())));
                    assert!(buf.len() < before, "a decoded frame must consume bytes");
                    frames.push(f);
                }
                Err(e) => {
                    return DecodeRun {
                        frames,
                        error: Some(e),
                        rest: Vec::new(),
                    }
                }
            }
        }
    }
    DecodeRun {
        frames,
        error: None,
        rest: buf.to_vec(),
    }
}

/// Frame equality where NaN doubles equal each other (and nothing else).
fn same(a: &Frame, b: &Frame) -> bool {
    match (a, b) {
        (Frame::Double(x), Frame::Double(y)) => (x.is_nan() && y.is_nan()) || x == y,
        (Frame::Array(x), Frame::Array(y))
        | (Frame::Set(x), Frame::Set(y))
        | (Frame::Push(x), Frame::Push(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Frame::Map(x), Frame::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| same(k1, k2) && same(v1, v2))
        }
        _ => a == b,
    }
}

fn same_all(a: &[Frame], b: &[Frame]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(p, q)| same(p, q))
}

/// Tokens that make random input look like RESP often enough to reach deep parser states.
fn resp_token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            &b"*"[..], b"$", b"+", b"-", b":", b"_", b",", b"#", b"(", b"=", b"!", b"%", b"~",
            b">", b"|", b"\r\n", b"\r", b"\n", b"\0", b"0", b"1", b"2", b"3", b"-1", b"-0",
            b"01", b"10", b"16384", b"16385", b"2147483648", b"536870913", b"9223372036854775807",
            b"-9223372036854775808", b"99999999999999999999", b"t", b"f", b"inf", b"nan",
            b"1.5", b"txt:", b"\"", b"'", b"\\", b"\\x4", b"\\x41", b"\\'", b" ", b"\t", b"\x0b",
            b"PING", b"ECHO", b"\xff",
        ])
        .prop_map(|t| t.to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

fn almost_resp() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(resp_token(), 0..48).prop_map(|ts| ts.concat())
}

fn input_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..256), almost_resp()]
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..400, 0..8)
}

/// Bytes without CR or LF (one-line frames cannot carry them).
fn line_bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..24,
    )
    .prop_map(Bytes::from)
}

fn any_bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

fn leaf_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        line_bytes().prop_map(Frame::Simple),
        line_bytes().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        prop_oneof![Just(0i64), Just(-1), Just(i64::MIN), Just(i64::MAX)].prop_map(Frame::Integer),
        any_bytes().prop_map(Frame::Bulk),
        Just(Frame::Null),
        any::<f64>().prop_map(Frame::Double),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            Just(f64::MAX),
            Just(0.1),
        ]
        .prop_map(Frame::Double),
        any::<bool>().prop_map(Frame::Boolean),
        line_bytes().prop_map(Frame::BigNumber),
        (prop::collection::vec(any::<u8>(), 3..=3), any_bytes())
            .prop_map(|(f, d)| Frame::Verbatim(Bytes::from(f), d)),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    leaf_frame().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Frame::Array),
            prop::collection::vec(inner.clone(), 0..8).prop_map(Frame::Set),
            prop::collection::vec(inner.clone(), 0..8).prop_map(Frame::Push),
            prop::collection::vec((inner.clone(), inner), 0..6).prop_map(Frame::Map),
        ]
    })
}

fn command_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            // Arguments that look like protocol themselves.
            almost_resp(),
        ],
        0..12,
    )
}

proptest! {
    /// Arbitrary input never panics, never spins, and the result is split-invariant.
    #[test]
    fn parse_command_total(input in input_bytes(), cut in cuts()) {
        let whole = parse_chunked(&input, &[], &Limits::default());
        let split = parse_chunked(&input, &cut, &Limits::default());
        prop_assert_eq!(&whole, &split);
        let lim = Limits { unauthenticated: true, max_bulk_len: 1000 };
        let strict_whole = parse_chunked(&input, &[], &lim);
        let strict_split = parse_chunked(&input, &cut, &lim);
        prop_assert_eq!(strict_whole, strict_split);
    }

    /// Byte-at-a-time feeding gives the same requests as one big read.
    #[test]
    fn parse_command_byte_by_byte(input in almost_resp()) {
        let all: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(
            parse_chunked(&input, &[], &Limits::default()),
            parse_chunked(&input, &all, &Limits::default())
        );
    }

    /// The reply decoder: no panic, no spin, frame_len agrees with decode_frame, and the result
    /// does not depend on how the input was split.
    #[test]
    fn decode_frame_total(input in input_bytes(), cut in cuts()) {
        let whole = decode_chunked(&input, &[]);
        let split = decode_chunked(&input, &cut);
        prop_assert!(same_all(&whole.frames, &split.frames));
        prop_assert_eq!(&whole.error, &split.error);
        prop_assert_eq!(&whole.rest, &split.rest);
        // decode_complete is public and must cope with anything, measured or not.
        let _ = decode_complete(&Bytes::from(input));
    }

    /// Every frame survives encode → decode, whole, split, and followed by another frame.
    #[test]
    fn frame_round_trip(f in frame(), g in leaf_frame(), cut in cuts()) {
        let mut out = BytesMut::new();
        f.encode(&mut out);
        let len = out.len();
        prop_assert_eq!(frame_len(&out), Ok(Some(len)));
        for c in &cut {
            let c = c % len;
            prop_assert_eq!(frame_len(&out[..c]), Ok(None), "prefix of {} bytes", c);
        }
        prop_assert!(same(&decode_complete(&out.clone().freeze()).unwrap(), &f));
        g.encode(&mut out);
        let bytes = out.to_vec();
        let run = decode_chunked(&bytes, &cut);
        prop_assert_eq!(run.error, None);
        prop_assert!(run.rest.is_empty());
        prop_assert!(same_all(&run.frames, &[f.clone(), g.clone()]), "{:?}", run.frames);
    }

    /// A pipeline of commands written with write_command parses back identically whatever
    /// the split points, with and without the unauthenticated limits.
    #[test]
    fn command_round_trip(cmds in prop::collection::vec(command_args(), 1..6), cut in cuts()) {
        let mut out = BytesMut::new();
        for c in &cmds {
            write_command(&mut out, c);
        }
        let expect: Vec<Option<Vec<Bytes>>> = cmds
            .iter()
            .map(|c| (!c.is_empty()).then(|| c.iter().map(|a| Bytes::copy_from_slice(a)).collect()))
            .collect();
        let cut: Vec<usize> = cut.iter().map(|c| c % (out.len() + 1)).collect();
        let run = parse_chunked(&out, &cut, &Limits::default());
        prop_assert_eq!(&run.requests, &expect);
        prop_assert_eq!(run.error, None);
        prop_assert!(run.rest.is_empty());
        // Canonical input: every command's frame is kept, byte for byte.
        let mut parser = RequestParser::keeping_frames();
        let mut buf = out.clone();
        let mut args = Vec::new();
        for c in cmds.iter().filter(|c| !c.is_empty()) {
            let mut p = parser.parse(&mut buf, &mut args, &Limits::default());
            while matches!(p, Ok(Some(Parsed::Empty))) {
                p = parser.parse(&mut buf, &mut args, &Limits::default());
            }
            prop_assert!(matches!(p, Ok(Some(Parsed::Command))));
            let mut enc = BytesMut::new();
            write_command(&mut enc, c);
            let frame = parser.take_frame();
            prop_assert_eq!(frame.as_deref(), Some(&enc[..]));
        }
        // Within the unauthenticated limits (<= 10 arguments) nothing changes; above them
        // the first long command is refused.
        let lim = Limits { unauthenticated: true, ..Limits::default() };
        let run = parse_chunked(&out, &cut, &lim);
        match cmds.iter().position(|c| c.len() > 10) {
            None => prop_assert_eq!(&run.requests, &expect),
            Some(i) => {
                prop_assert_eq!(&run.requests[..], &expect[..i]);
                prop_assert_eq!(
                    run.error.map(|e| e.0),
                    Some("Protocol error: unauthenticated multibulk length".into())
                );
            }
        }
    }

    /// sdssplitargs never panics, and inline requests agree with it.
    #[test]
    fn inline_split_total(line in input_bytes()) {
        let mut args = Vec::new();
        let _ = split_inline_args(&line, &mut args);
        // Without NUL and LF the line is one inline request.
        if !line.is_empty() && line[0] != b'*' && !line.contains(&0) && !line.contains(&b'\n') {
            let mut req = line.clone();
            req.extend_from_slice(b"\r\n");
            let mut direct = Vec::new();
            let direct_res = split_inline_args(&line, &mut direct);
            let mut buf = BytesMut::from(&req[..]);
            let mut parsed = Vec::new();
            match parse_command(&mut buf, &mut parsed, &Limits::default()) {
                Ok(Some(Parsed::Command)) => prop_assert_eq!(parsed, direct),
                Ok(Some(Parsed::Empty)) => prop_assert!(direct_res.is_ok() && direct.is_empty()),
                Ok(None) => prop_assert!(false, "a complete line must parse"),
                Err(e) => prop_assert_eq!(Err(e), direct_res),
            }
        }
    }

    /// Quoting each argument as redis-cli does (`"..."` with escapes) splits back identically.
    #[test]
    fn inline_quoted_round_trip(argv in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..8)) {
        let mut line = Vec::new();
        for a in &argv {
            line.push(b'"');
            for &b in a {
                match b {
                    b'\\' => line.extend_from_slice(b"\\\\"),
                    b'"' => line.extend_from_slice(b"\\\""),
                    b'\n' => line.extend_from_slice(b"\\n"),
                    b'\r' => line.extend_from_slice(b"\\r"),
                    0x20..=0x7e => line.push(b),
                    _ => line.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                }
            }
            line.extend_from_slice(b"\" ");
        }
        let mut args = Vec::new();
        prop_assert_eq!(split_inline_args(&line, &mut args), Ok(()));
        let expect: Vec<Bytes> = argv.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        prop_assert_eq!(args, expect);
    }
}

/// Long lines at the limits: the 64 KiB rules are not split-invariant by design (they follow
/// how much is buffered, as in redis-server), so check them directly.
#[test]
fn limits_on_long_lines() {
    let mut args = Vec::new();
    let big = vec![b'x'; INLINE_MAX + 1];
    let mut buf = BytesMut::from(&big[..]);
    assert_eq!(
        parse_command(&mut buf, &mut args, &Limits::default())
            .unwrap_err()
            .0,
        "Protocol error: too big inline request"
    );
    let mut buf = BytesMut::from(&big[..INLINE_MAX]);
    assert_eq!(
        parse_command(&mut buf, &mut args, &Limits::default()),
        Ok(None)
    );
    let mut mb = b"*".to_vec();
    mb.extend_from_slice(&big);
    let mut buf = BytesMut::from(&mb[..]);
    assert_eq!(
        parse_command(&mut buf, &mut args, &Limits::default())
            .unwrap_err()
            .0,
        "Protocol error: too big mbulk count string"
    );
    let mut mb = b"*1\r\n$".to_vec();
    mb.extend_from_slice(&big);
    let mut buf = BytesMut::from(&mb[..]);
    assert_eq!(
        parse_command(&mut buf, &mut args, &Limits::default())
            .unwrap_err()
            .0,
        "Protocol error: too big bulk count string"
    );
    // Deep nesting is refused, not a stack overflow.
    let deep = b"*1\r\n".repeat(100_000);
    assert_eq!(frame_len(&deep), Err(DecodeError::TooDeep));
    assert_eq!(
        decode_complete(&Bytes::from(deep)),
        Err(DecodeError::TooDeep)
    );
}

/// A request of many tiny arguments trickling in: RequestParser stays linear.
#[test]
fn trickled_multibulk_is_linear_with_request_parser() {
    const N: usize = 200_000;
    let mut input = format!("*{}\r\n", N + 1).into_bytes();
    input.extend_from_slice(b"$4\r\nSADD\r\n");
    for _ in 0..N {
        input.extend_from_slice(b"$1\r\na\r\n");
    }
    let mut parser = RequestParser::new();
    let mut buf = BytesMut::new();
    let mut args = Vec::new();
    let t = std::time::Instant::now();
    let mut done = false;
    for chunk in input.chunks(512) {
        buf.extend_from_slice(chunk);
        if let Some(p) = parser
            .parse(&mut buf, &mut args, &Limits::default())
            .unwrap()
        {
            assert_eq!(p, Parsed::Command);
            done = true;
        }
    }
    assert!(done && buf.is_empty());
    assert_eq!(args.len(), N + 1);
    // The stateless parser needs ~N/73 full rescans here (minutes in debug builds).
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}
