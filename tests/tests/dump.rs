//! End-to-end tests for DUMP, RESTORE and RESTORE-ASKING on slotgate-node, and payload
//! interoperability with a real redis-server 7.0 in both directions (every type, in its small
//! listpack/intset and large quicklist/hashtable/skiplist encodings, plus the older ziplist
//! encodings Redis still loads).

use bytes::BytesMut;
use slotgate_protocol::Frame;
use slotgate_tests::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ------------------------------------------------------------------------------------------
// Helpers: RESP over Raw with binary arguments, and a tiny RDB encoder for test payloads.
// ------------------------------------------------------------------------------------------

fn send(raw: &mut Raw, args: &[&[u8]]) -> Frame {
    let mut out = BytesMut::new();
    slotgate_protocol::resp::write_command(&mut out, args);
    raw.send(&out);
    raw.read().expect("reply")
}

fn ok(f: &Frame) -> bool {
    matches!(f, Frame::Simple(s) if &s[..] == b"OK")
}

fn err_text(f: &Frame) -> String {
    match f {
        Frame::Error(e) => String::from_utf8_lossy(e).into_owned(),
        other => format!("not an error: {other:?}"),
    }
}

fn dump(raw: &mut Raw, key: &str) -> Option<Vec<u8>> {
    match send(raw, &[b"DUMP", key.as_bytes()]) {
        Frame::Bulk(b) => Some(b.to_vec()),
        Frame::Null => None,
        other => panic!("DUMP {key}: {other:?}"),
    }
}

fn restore(raw: &mut Raw, key: &str, ttl: &str, payload: &[u8], extra: &[&str]) -> Frame {
    let mut args: Vec<&[u8]> = vec![b"RESTORE", key.as_bytes(), ttl.as_bytes(), payload];
    args.extend(extra.iter().map(|s| s.as_bytes()));
    send(raw, &args)
}

fn restore_ok(raw: &mut Raw, key: &str, ttl: &str, payload: &[u8]) {
    let r = restore(raw, key, ttl, payload, &["REPLACE"]);
    assert!(ok(&r), "RESTORE {key}: {r:?}");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn crc64(data: &[u8]) -> u64 {
    const POLY: u64 = 0x95ac_9329_ac4b_c9b5;
    let mut crc = 0u64;
    for &b in data {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// type byte + body, then RDB version and CRC64.
fn payload(body: &[u8], version: u16) -> Vec<u8> {
    let mut p = body.to_vec();
    p.extend_from_slice(&version.to_le_bytes());
    let crc = crc64(&p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

fn rdb_len(out: &mut Vec<u8>, n: usize) {
    if n < 64 {
        out.push(n as u8);
    } else if n < 16384 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// An RDB string the way slotgate writes it (integer encoding for canonical i32 values).
fn rdb_str(out: &mut Vec<u8>, s: &[u8]) {
    if let Some(n) = std::str::from_utf8(s)
        .ok()
        .filter(|t| t.len() <= 11)
        .and_then(|t| t.parse::<i32>().ok())
        .filter(|n| n.to_string().as_bytes() == s)
    {
        if let Ok(v) = i8::try_from(n) {
            out.extend_from_slice(&[0xc0, v as u8]);
        } else if let Ok(v) = i16::try_from(n) {
            out.push(0xc1);
            out.extend_from_slice(&v.to_le_bytes());
        } else {
            out.push(0xc2);
            out.extend_from_slice(&n.to_le_bytes());
        }
        return;
    }
    rdb_len(out, s.len());
    out.extend_from_slice(s);
}

fn str_payload(s: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8];
    rdb_str(&mut b, s);
    payload(&b, 10)
}

/// RDB_TYPE_LIST (1), RDB_TYPE_SET (2) or RDB_TYPE_HASH (4 with pairs flattened).
fn seq_payload(t: u8, items: &[&[u8]]) -> Vec<u8> {
    let mut b = vec![t];
    rdb_len(&mut b, if t == 4 { items.len() / 2 } else { items.len() });
    for i in items {
        rdb_str(&mut b, i);
    }
    payload(&b, 10)
}

/// RDB_TYPE_ZSET_2, highest score first (slotgate's order).
fn zset_payload(pairs: &[(&[u8], f64)]) -> Vec<u8> {
    let mut b = vec![5u8];
    rdb_len(&mut b, pairs.len());
    for (m, s) in pairs.iter().rev() {
        rdb_str(&mut b, m);
        b.extend_from_slice(&s.to_le_bytes());
    }
    payload(&b, 10)
}

/// A ziplist (pre-7.0 blob format) of strings and small integers (0..=12 or i16).
fn ziplist(items: &[&[u8]]) -> Vec<u8> {
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
        let int = std::str::from_utf8(it)
            .ok()
            .and_then(|t| t.parse::<i16>().ok())
            .filter(|n| n.to_string().as_bytes() == *it);
        match int {
            Some(n @ 0..=12) => entries.push(0xf1 + n as u8),
            Some(n) => {
                entries.push(0xc0);
                entries.extend_from_slice(&n.to_le_bytes());
            }
            None if it.len() < 64 => {
                entries.push(it.len() as u8);
                entries.extend_from_slice(it);
            }
            None => {
                entries.push(0x40 | (it.len() >> 8) as u8);
                entries.push(it.len() as u8);
                entries.extend_from_slice(it);
            }
        }
        prev = entries.len() - start;
    }
    let mut zl = Vec::new();
    zl.extend_from_slice(&((10 + entries.len() + 1) as u32).to_le_bytes());
    zl.extend_from_slice(&(tail as u32).to_le_bytes());
    zl.extend_from_slice(&(items.len() as u16).to_le_bytes());
    zl.extend_from_slice(&entries);
    zl.push(0xff);
    zl
}

/// A value whose type byte is `t` and whose body is one ziplist (types 10, 12, 13) or a
/// quicklist of ziplists (type 14).
fn ziplist_payload(t: u8, nodes: &[&[&[u8]]]) -> Vec<u8> {
    let mut b = vec![t];
    if t == 14 {
        rdb_len(&mut b, nodes.len());
    }
    for n in nodes {
        let zl = ziplist(n);
        rdb_len(&mut b, zl.len());
        b.extend_from_slice(&zl);
    }
    payload(&b, 9)
}

fn frames_bytes(f: &Frame) -> Vec<Vec<u8>> {
    match f {
        Frame::Array(items) | Frame::Set(items) => items
            .iter()
            .map(|i| i.as_bytes().map(<[u8]>::to_vec).unwrap_or_default())
            .collect(),
        Frame::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [k, v])
            .map(|i| i.as_bytes().map(<[u8]>::to_vec).unwrap_or_default())
            .collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// The full contents of a key on real Redis, in a comparable (order-normalised) form.
fn contents(raw: &mut Raw, key: &str) -> (String, Vec<Vec<u8>>) {
    let k = key.as_bytes();
    let t = match send(raw, &[b"TYPE", k]) {
        Frame::Simple(s) => String::from_utf8_lossy(&s).into_owned(),
        other => panic!("TYPE: {other:?}"),
    };
    let data = match t.as_str() {
        "string" => vec![send(raw, &[b"GET", k])
            .as_bytes()
            .unwrap_or_default()
            .to_vec()],
        "list" => frames_bytes(&send(raw, &[b"LRANGE", k, b"0", b"-1"])),
        "set" => {
            let mut v = frames_bytes(&send(raw, &[b"SMEMBERS", k]));
            v.sort();
            v
        }
        "hash" => {
            let flat = frames_bytes(&send(raw, &[b"HGETALL", k]));
            let mut pairs: Vec<Vec<u8>> = flat
                .chunks(2)
                .map(|p| [p[0].clone(), b"=".to_vec(), p[1].clone()].concat())
                .collect();
            pairs.sort();
            pairs
        }
        "zset" => frames_bytes(&send(raw, &[b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"])),
        "none" => Vec::new(),
        other => panic!("unexpected type {other}"),
    };
    (t, data)
}

fn encoding(raw: &mut Raw, key: &str) -> String {
    send(raw, &[b"OBJECT", b"ENCODING", key.as_bytes()])
        .as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// PTTL on the node when the keys family provides it (None while it does not).
fn pttl(raw: &mut Raw, key: &str) -> Option<i64> {
    match send(raw, &[b"PTTL", key.as_bytes()]) {
        Frame::Integer(n) => Some(n),
        Frame::Error(e) if e.starts_with(b"ERR unknown command") => None,
        other => panic!("PTTL: {other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// slotgate-node alone
// ------------------------------------------------------------------------------------------

#[test]
fn node_round_trip_every_type_with_ttl() {
    let node = start_node(&[]);
    let mut c = Raw::connect(node.port);
    let long = vec![b'z'; 5000];
    let big: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("element-{i}").into_bytes())
        .collect();
    let big_refs: Vec<&[u8]> = big.iter().map(|v| &v[..]).collect();
    // Payloads in slotgate's canonical form: DUMP after RESTORE must give the same bytes.
    let canonical: Vec<(&str, Vec<u8>)> = vec![
        ("str-int", str_payload(b"12345")),
        ("str-neg", str_payload(b"-2147483648")),
        ("str-i64", str_payload(b"9223372036854775807")),
        ("str-lead0", str_payload(b"007")),
        ("str-empty", str_payload(b"")),
        ("str-long", str_payload(&long)),
        ("list", seq_payload(1, &[b"a", b"", b"1", b"-300", &long])),
        ("list-big", seq_payload(1, &big_refs)),
        ("set-one", seq_payload(2, &[b"member"])),
        ("hash-one", seq_payload(4, &[b"field", &long])),
        (
            "zset",
            zset_payload(&[
                (b"neg-inf", f64::NEG_INFINITY),
                (b"a", -1.5),
                (b"b", 0.0),
                (b"c", 3.0),
                (b"inf", f64::INFINITY),
            ]),
        ),
    ];
    for (key, p) in &canonical {
        restore_ok(&mut c, key, "0", p);
        assert_eq!(dump(&mut c, key).as_deref(), Some(&p[..]), "{key}");
        assert_eq!(pttl(&mut c, key).unwrap_or(-1), -1, "{key}");
    }

    // Sets and hashes iterate in hash order: their DUMP must restore to an equal value whose
    // own DUMP has the same length (same members, same encodings).
    let multi = [
        ("set", seq_payload(2, &[b"1", b"x", b"-100000", &long])),
        ("set-big", seq_payload(2, &big_refs)),
        (
            "hash",
            seq_payload(4, &[b"f", b"v", b"n", b"42", b"big", &long]),
        ),
    ];
    for (key, p) in &multi {
        restore_ok(&mut c, key, "0", p);
        let d = dump(&mut c, key).expect("dump");
        assert_eq!(d.len(), p.len(), "{key}");
        restore_ok(&mut c, "copy", "0", &d);
        assert_eq!(
            dump(&mut c, "copy").map(|v| v.len()),
            Some(d.len()),
            "{key}"
        );
    }

    // Redis 7.0 encodings (listpack, intset, quicklist, LZF) come back in plain form.
    let from_redis: [(&[u8], Vec<u8>); 4] = [
        (
            b"\x12\x01\x02\x1c\x1c\x00\x00\x00\x07\x00\x81a\x02\x81b\x02\x01\x01\x02\x01\xc1,\x02\xf2p\x11\x01\x04\xdf\xfb\x02\xff\n\x00\x05\xa3/\x89\xef\xae\xffn",
            seq_payload(1, &[b"a", b"b", b"1", b"2", b"300", b"70000", b"-5"]),
        ),
        (
            b"\x11\x14\x14\x00\x00\x00\x04\x00\x81a\x02\x831.5\x04\x81b\x02\x02\x01\xff\n\x00\xfa\x02\xb4%\xaf\x18\x87c",
            zset_payload(&[(b"a", 1.5), (b"b", 2.0)]),
        ),
        (
            b"\x00\xc3\x14/\x0chello world h\xe0\x17\x0b\x01ld\n\x00\x12\xca\xcc+[\xafU\xba",
            str_payload(b"hello world hello world hello world hello world"),
        ),
        (
            b"\x00\xc190\n\x00\x9d\x94\xea'\x93\xfc\x08\xb9",
            str_payload(b"12345"),
        ),
    ];
    for (i, (input, expected)) in from_redis.iter().enumerate() {
        let key = format!("redis-{i}");
        restore_ok(&mut c, &key, "0", input);
        assert_eq!(dump(&mut c, &key).as_ref(), Some(expected), "{key}");
    }

    // Every type with a TTL: the TTL is applied, and the key expires.
    let all: Vec<&(&str, Vec<u8>)> = canonical.iter().chain(multi.iter()).collect();
    for (key, p) in &all {
        let k = format!("ttl-{key}");
        restore_ok(&mut c, &k, "100000", p);
        if let Some(t) = pttl(&mut c, &k) {
            assert!((90_000..=100_000).contains(&t), "{k}: pttl {t}");
        }
        let k2 = format!("short-{key}");
        restore_ok(&mut c, &k2, "150", p);
        assert!(dump(&mut c, &k2).is_some(), "{k2}");
    }
    std::thread::sleep(Duration::from_millis(300));
    for (key, _) in &all {
        assert!(
            dump(&mut c, &format!("short-{key}")).is_none(),
            "{key} expired"
        );
        assert!(
            dump(&mut c, &format!("ttl-{key}")).is_some(),
            "{key} still there"
        );
    }

    // ABSTTL: unix milliseconds; a past one replies OK without creating the key, and with
    // REPLACE deletes the old value.
    let p = str_payload(b"v");
    let future = (now_ms() + 60_000).to_string();
    assert!(ok(&restore(&mut c, "abs", &future, &p, &["ABSTTL"])));
    if let Some(t) = pttl(&mut c, "abs") {
        assert!((50_000..=60_000).contains(&t), "pttl {t}");
    }
    assert!(ok(&restore(&mut c, "abs-past", "1", &p, &["ABSTTL"])));
    assert!(dump(&mut c, "abs-past").is_none());
    assert!(ok(&restore(&mut c, "abs", "1", &p, &["ABSTTL", "REPLACE"])));
    assert!(dump(&mut c, "abs").is_none());
    // A relative TTL that overflows lands in the past, as in Redis 7.0.
    assert!(ok(&restore(&mut c, "huge", "9223372036854775807", &p, &[])));
    assert!(dump(&mut c, "huge").is_none());

    // REPLACE, IDLETIME, FREQ and RESTORE-ASKING.
    assert_eq!(
        err_text(&restore(&mut c, "str-int", "0", &p, &[])),
        "BUSYKEY Target key name already exists."
    );
    assert!(ok(&restore(
        &mut c,
        "str-int",
        "0",
        &p,
        &["replace", "absttl", "idletime", "10"]
    )));
    assert_eq!(dump(&mut c, "str-int"), Some(p.clone()));
    assert!(ok(&restore(&mut c, "freq", "0", &p, &["FREQ", "255"])));
    let r = send(&mut c, &[b"RESTORE-ASKING", b"asking", b"0", &p]);
    assert!(ok(&r), "{r:?}");
    assert_eq!(dump(&mut c, "asking"), Some(p.clone()));

    // RESP3: a missing key is the RESP3 null.
    let mut c3 = Raw::connect(node.port);
    send(&mut c3, &[b"HELLO", b"3"]);
    c3.send(b"*2\r\n$4\r\nDUMP\r\n$7\r\nmissing\r\n");
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut c3.s, &mut buf).expect("read");
    assert_eq!(&buf[..n], b"_\r\n");
    c.send(b"*2\r\n$4\r\nDUMP\r\n$7\r\nmissing\r\n");
    let n = std::io::Read::read(&mut c.s, &mut buf).expect("read");
    assert_eq!(&buf[..n], b"$-1\r\n");
}

/// The error replies, checked against fixed texts and (when available) real Redis.
#[test]
fn errors_and_bad_payloads() {
    let node = start_node(&[]);
    let redis = start_redis(&[]);
    let good = str_payload(b"value");
    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x55;
    let newer = payload(&[0, 1, b'a'], 11);
    let cases: Vec<(Vec<&[u8]>, &str)> = vec![
        (
            vec![b"RESTORE", b"k", b"0", &bad_crc],
            "ERR DUMP payload version or checksum are wrong",
        ),
        (
            vec![b"RESTORE", b"k", b"0", b"garbage"],
            "ERR DUMP payload version or checksum are wrong",
        ),
        (
            vec![b"RESTORE", b"k", b"0", b""],
            "ERR DUMP payload version or checksum are wrong",
        ),
        (
            vec![b"RESTORE", b"k", b"0", &newer],
            "ERR DUMP payload version or checksum are wrong",
        ),
        (
            vec![b"RESTORE", b"k", b"-1", &good],
            "ERR Invalid TTL value, must be >= 0",
        ),
        (
            vec![b"RESTORE", b"k", b"x", &good],
            "ERR value is not an integer or out of range",
        ),
        (
            vec![b"RESTORE", b"busy", b"-1", b"garbage"],
            "BUSYKEY Target key name already exists.",
        ),
        (
            vec![b"RESTORE", b"busy", b"0", &good, b"foo"],
            "ERR syntax error",
        ),
        (
            vec![b"RESTORE", b"k", b"0", &good, b"IDLETIME"],
            "ERR syntax error",
        ),
        (
            vec![b"RESTORE", b"k", b"0", &good, b"IDLETIME", b"-1"],
            "ERR Invalid IDLETIME value, must be >= 0",
        ),
        (
            vec![b"RESTORE", b"k", b"0", &good, b"IDLETIME", b"x"],
            "ERR value is not an integer or out of range",
        ),
        (
            vec![b"RESTORE", b"k", b"0", &good, b"FREQ", b"256"],
            "ERR Invalid FREQ value, must be >= 0 and <= 255",
        ),
        (
            vec![b"RESTORE", b"k", b"0", &good, b"FREQ", b"-1"],
            "ERR Invalid FREQ value, must be >= 0 and <= 255",
        ),
        (
            vec![
                b"RESTORE",
                b"k",
                b"0",
                &good,
                b"FREQ",
                b"1",
                b"IDLETIME",
                b"1",
            ],
            "ERR syntax error",
        ),
        (
            vec![b"RESTORE", b"k", b"0"],
            "ERR wrong number of arguments for 'restore' command",
        ),
        (
            vec![b"DUMP"],
            "ERR wrong number of arguments for 'dump' command",
        ),
        (
            vec![b"DUMP", b"a", b"b"],
            "ERR wrong number of arguments for 'dump' command",
        ),
    ];
    // Payloads whose checksum is right but whose content is not: "Bad data format".
    let bad_data: Vec<Vec<u8>> = vec![
        payload(&[0x1e, 1, b'a'], 10),                   // unknown type
        payload(&[7, 1, b'a'], 10),                      // module
        payload(&[1, 0], 10),                            // empty list
        payload(&[2, 2, 1, b'a', 1, b'a'], 10),          // duplicate set member
        payload(&[0, 0x41, 0, b'a'], 10),                // truncated string
        payload(&[0x12, 1, 3, 3, b'a', b'b', b'c'], 10), // bad quicklist container
        payload(&[1, 0x80, 0xff, 0xff, 0xff, 0xff], 10), // absurd count
        payload(&[0, 0xc3, 1, 0xbf, 0xff, 0xff, 0xff, 0xff], 10), // bad LZF header
        payload(&[5, 1, 1, b'a', 0, 0, 0, 0, 0, 0, 0xf8, 0x7f], 10), // NaN score
        payload(
            b"\x13\x01\x10\x00\x00\x01\xa2\x00\xa9\x05W\x00\x00\x00\x00\x00",
            10,
        ), // stream
    ];
    let mut servers = vec![("slotgate-node", Raw::connect(node.port))];
    if let Some(r) = &redis {
        servers.push(("redis-server", Raw::connect(r.port)));
    }
    for (name, c) in servers.iter_mut() {
        restore_ok(c, "busy", "0", &good);
        for (args, expected) in &cases {
            let f = send(c, args);
            assert_eq!(err_text(&f), *expected, "{name}: {:?}", args[..2].to_vec());
        }
        for p in &bad_data {
            let f = restore(c, "k", "0", p, &[]);
            assert_eq!(err_text(&f), "ERR Bad data format", "{name}: {p:?}");
        }
        assert!(dump(c, "k").is_none(), "{name}: nothing was created");
        assert_eq!(
            dump(c, "busy"),
            Some(good.clone()),
            "{name}: busy key untouched"
        );
        assert!(
            matches!(send(c, &[b"PING"]), Frame::Simple(_)),
            "{name} still up"
        );
    }

    // Random garbage (framed with a valid checksum, so it reaches the decoder) never takes the
    // node down.
    let c = &mut servers[0].1;
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..300 {
        let mut body = Vec::new();
        for _ in 0..(i % 40) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            body.push(state as u8);
        }
        if let Some(b) = body.first_mut() {
            *b %= 20;
        }
        let f = restore(c, "fuzz", "0", &payload(&body, 10), &["REPLACE"]);
        assert!(ok(&f) || err_text(&f) == "ERR Bad data format", "{f:?}");
    }
    assert!(matches!(send(c, &[b"PING"]), Frame::Simple(_)));
}

// ------------------------------------------------------------------------------------------
// Interoperability with real Redis
// ------------------------------------------------------------------------------------------

/// Creates `key` on Redis with `cmd` args (key inserted after the command name).
fn create(raw: &mut Raw, cmd: &str, key: &str, args: &[Vec<u8>]) {
    let mut all: Vec<&[u8]> = vec![cmd.as_bytes(), key.as_bytes()];
    all.extend(args.iter().map(|a| &a[..]));
    let f = send(raw, &all);
    assert!(!f.is_error(), "{cmd} {key}: {f:?}");
}

fn strings(v: impl IntoIterator<Item = String>) -> Vec<Vec<u8>> {
    v.into_iter().map(String::into_bytes).collect()
}

#[test]
fn interop_with_redis_both_directions() {
    let Some(redis) = start_redis(&[]) else {
        return;
    };
    let node = start_node(&[]);
    let mut r = Raw::connect(redis.port);
    let mut n = Raw::connect(node.port);

    let long: String = (0..3000)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    // (key, creating command, args, expected Redis encoding)
    let mut cases: Vec<(&str, &str, Vec<Vec<u8>>, &str)> = vec![
        ("s-int", "SET", strings(["12345".into()]), "int"),
        (
            "s-i64",
            "SET",
            strings(["-9223372036854775808".into()]),
            "int",
        ),
        ("s-emb", "SET", strings(["hello".into()]), "embstr"),
        ("s-raw", "SET", vec![long.clone().into_bytes()], "raw"),
        ("s-lzf", "SET", vec![vec![b'q'; 100_000]], "raw"),
        ("s-bin", "SET", vec![(0..=255u8).collect()], "raw"),
        (
            "l-small",
            "RPUSH",
            strings(["a", "", "1", "-1", "300", "70000", "-9000000000", "x y"].map(String::from)),
            "quicklist",
        ),
        (
            "l-big",
            "RPUSH",
            strings((0..1000).map(|i| format!("value-{i}-{}", &long[..i % 200]))),
            "quicklist",
        ),
        (
            "set-int",
            "SADD",
            strings([1, 2, 3, -5, 100_000, i64::MAX].map(|i| i.to_string())),
            "intset",
        ),
        (
            "set-int-big",
            "SADD",
            strings((0..600).map(|i| (i * 3).to_string())),
            "hashtable",
        ),
        (
            "set-str",
            "SADD",
            strings(["a", "b", "1"].map(String::from)),
            "hashtable",
        ),
        (
            "set-big",
            "SADD",
            strings((0..1000).map(|i| format!("member:{i}"))),
            "hashtable",
        ),
        (
            "h-small",
            "HSET",
            strings(["f", "v", "n", "42", "neg", "-7", "e", ""].map(String::from)),
            "listpack",
        ),
        (
            "h-big",
            "HSET",
            strings(
                (0..1000).flat_map(|i| [format!("field:{i}"), format!("{i}-{}", &long[..i % 100])]),
            ),
            "hashtable",
        ),
        (
            "h-longval",
            "HSET",
            vec![b"f".to_vec(), long.clone().into_bytes()],
            "hashtable",
        ),
        (
            "z-small",
            "ZADD",
            strings(
                [
                    "1.5", "a", "-2", "b", "inf", "c", "-inf", "d", "0", "e", "3", "7",
                ]
                .map(String::from),
            ),
            "listpack",
        ),
        (
            "z-big",
            "ZADD",
            strings((0..1000).flat_map(|i| [format!("{}", i as f64 / 7.0), format!("m{i}")])),
            "skiplist",
        ),
    ];
    // A compressed quicklist: interior nodes are written LZF-compressed.
    assert!(ok(&send(
        &mut r,
        &[b"CONFIG", b"SET", b"list-compress-depth", b"1"]
    )));
    cases.push((
        "l-compressed",
        "RPUSH",
        strings((0..2000).map(|i| format!("compressible-{}", i % 10))),
        "quicklist",
    ));

    for (key, cmd, args, enc) in &cases {
        create(&mut r, cmd, key, args);
        assert_eq!(encoding(&mut r, key), *enc, "{key} encoding on redis");
        let original = contents(&mut r, key);

        // Redis → slotgate (with a TTL) → Redis.
        let from_redis = dump(&mut r, key).expect("dump on redis");
        let rr = restore(&mut n, key, "100000", &from_redis, &[]);
        assert!(ok(&rr), "{key}: RESTORE on slotgate: {rr:?}");
        let from_node = dump(&mut n, key).expect("dump on slotgate");
        let back = format!("{key}:back");
        let rr = restore(&mut r, &back, "0", &from_node, &[]);
        assert!(
            ok(&rr),
            "{key}: RESTORE on redis of slotgate's DUMP: {rr:?}"
        );
        assert_eq!(
            contents(&mut r, &back),
            original,
            "{key}: content after the round trip"
        );

        // slotgate → Redis → slotgate → Redis: the node's own payload survives Redis too.
        let again = dump(&mut r, &back).expect("dump back");
        restore_ok(&mut n, "again", "0", &again);
        let again_node = dump(&mut n, "again").expect("dump again");
        restore_ok(&mut r, "again", "0", &again_node);
        assert_eq!(
            contents(&mut r, "again"),
            original,
            "{key}: second round trip"
        );
    }

    // Older encodings Redis 7.0 still loads (ziplists, quicklist v1, text zset scores): both
    // servers must read them to the same content.
    let mut text_zset = vec![3u8, 3];
    for (m, s) in [(&b"a"[..], &b"1.5"[..]), (b"b", b"-3"), (b"c", b"1e3")] {
        rdb_str(&mut text_zset, m);
        text_zset.push(s.len() as u8);
        text_zset.extend_from_slice(s);
    }
    text_zset.extend_from_slice(&[1, b'd', 254]);
    text_zset[1] = 4;
    let big_items: Vec<String> = (0..300).map(|i| format!("node-item-{i}")).collect();
    let big_refs: Vec<&[u8]> = big_items.iter().map(|s| s.as_bytes()).collect();
    let legacy: Vec<(&str, Vec<u8>)> = vec![
        (
            "old-list-zl",
            ziplist_payload(10, &[&[b"a", b"7", b"-300", b"bc"]]),
        ),
        (
            "old-quicklist",
            ziplist_payload(14, &[&[b"x", b"1"], &big_refs, &[b"12", b"last"]]),
        ),
        (
            "old-hash-zl",
            ziplist_payload(13, &[&[b"f", b"v", b"n", b"5"]]),
        ),
        (
            "old-zset-zl",
            ziplist_payload(12, &[&[b"c", b"-1000", b"a", b"1", b"b", b"2.5"]]),
        ),
        ("old-zset-text", payload(&text_zset, 6)),
    ];
    for (key, p) in &legacy {
        let rr = restore(&mut r, key, "0", p, &[]);
        assert!(ok(&rr), "{key}: redis refused the test payload: {rr:?}");
        let expected = contents(&mut r, key);
        let rr = restore(&mut n, key, "0", p, &[]);
        assert!(ok(&rr), "{key}: RESTORE on slotgate: {rr:?}");
        let from_node = dump(&mut n, key).expect("dump");
        let back = format!("{key}:back");
        restore_ok(&mut r, &back, "0", &from_node);
        assert_eq!(contents(&mut r, &back), expected, "{key}");
    }
}
