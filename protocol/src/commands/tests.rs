//! Tests of the command table: key extraction, lookup, arity, hand-checked entries, reply
//! shapes and a differential test against a real redis-server.

use super::*;
use crate::resp::decode_frame;
use bytes::BytesMut;

/// Splits a request written like `redis-cli` input; `''` is an empty argument.
fn argv(line: &str) -> Vec<Vec<u8>> {
    line.split_whitespace()
        .map(|a| {
            if a == "''" {
                Vec::new()
            } else {
                a.as_bytes().to_vec()
            }
        })
        .collect()
}

/// Key positions of a request line.
fn keys(line: &str) -> Result<Vec<usize>, KeysError> {
    let args = argv(line);
    let spec = resolve(&args).unwrap_or_else(|| panic!("unknown command in {line:?}"));
    let mut out = KeyPositions::new();
    key_positions(spec, &args, &mut out).map(|()| out.to_vec())
}

/// The keys themselves, as strings.
fn key_names(line: &str) -> Result<Vec<String>, KeysError> {
    let args = argv(line);
    keys(line).map(|p| {
        p.iter()
            .map(|&i| String::from_utf8(args[i].clone()).unwrap())
            .collect()
    })
}

fn encode(f: &Frame) -> Vec<u8> {
    let mut b = BytesMut::new();
    f.encode(&mut b);
    b.to_vec()
}

#[test]
fn plain_ranges() {
    assert_eq!(keys("GET a"), Ok(vec![1]));
    assert_eq!(keys("SET a b EX 10"), Ok(vec![1]));
    assert_eq!(keys("MSET a 1 b 2 c 3"), Ok(vec![1, 3, 5]));
    assert_eq!(keys("DEL a b c"), Ok(vec![1, 2, 3]));
    assert_eq!(keys("BITOP AND d a b"), Ok(vec![2, 3, 4]));
    assert_eq!(keys("LMOVE a b LEFT RIGHT"), Ok(vec![1, 2]));
    assert_eq!(keys("BLPOP a b 0"), Ok(vec![1, 2]));
    assert_eq!(keys("PING"), Ok(vec![]));
    assert_eq!(keys("INFO"), Ok(vec![]));
    assert_eq!(keys("INFO server"), Ok(vec![]));
    // An odd MSET still yields the positions redis would (the command then fails arity-wise).
    assert_eq!(keys("MSET a 1 b"), Ok(vec![1, 3]));
    assert_eq!(keys("GET"), Err(KeysError::WrongArity("get")));
    assert_eq!(
        KeysError::WrongArity("get").to_string(),
        "ERR wrong number of arguments for 'get' command"
    );
}

#[test]
fn container_subcommands() {
    assert_eq!(keys("OBJECT ENCODING k"), Ok(vec![2]));
    assert_eq!(keys("object freq k"), Ok(vec![2]));
    assert_eq!(keys("MEMORY USAGE k SAMPLES 5"), Ok(vec![2]));
    assert_eq!(keys("XINFO STREAM k FULL"), Ok(vec![2]));
    assert_eq!(keys("XGROUP CREATE k g $"), Ok(vec![2]));
    assert_eq!(keys("CONFIG GET maxmemory"), Ok(vec![]));
    assert_eq!(keys("CLUSTER SLOTS"), Ok(vec![]));
    assert_eq!(
        keys("CONFIG GET"),
        Err(KeysError::WrongArity("config|get")),
        "subcommand arity errors carry the full name"
    );
    // Unknown subcommand: resolves to the container, which has no keys.
    let args = argv("CONFIG nope");
    assert_eq!(resolve(&args).unwrap().name, "config");
}

#[test]
fn eval_family() {
    assert_eq!(keys("EVAL s 0"), Ok(vec![]));
    assert_eq!(keys("EVAL s 0 a b"), Ok(vec![]));
    assert_eq!(keys("EVAL s 2 a b c"), Ok(vec![3, 4]));
    assert_eq!(keys("EVALSHA h 1 a"), Ok(vec![3]));
    assert_eq!(keys("EVAL_RO s 1 a x"), Ok(vec![3]));
    assert_eq!(keys("EVALSHA_RO h 2 a b"), Ok(vec![3, 4]));
    assert_eq!(keys("FCALL f 2 a b x"), Ok(vec![3, 4]));
    assert_eq!(keys("FCALL_RO f 0"), Ok(vec![]));
    assert_eq!(keys("EVAL s 2 a"), Err(KeysError::TooManyKeys));
    assert_eq!(keys("EVAL s -1"), Err(KeysError::NegativeNumkeys));
    assert_eq!(keys("EVAL s x"), Err(KeysError::NotAnInteger));
    assert_eq!(keys("EVAL s 01 a"), Err(KeysError::NotAnInteger));
    assert_eq!(keys("FCALL f x"), Err(KeysError::BadNumkeys));
    assert_eq!(keys("FCALL f 3 a"), Err(KeysError::TooManyKeys));
    assert_eq!(keys("FCALL_RO f -2"), Err(KeysError::NegativeNumkeys));
    assert_eq!(
        KeysError::TooManyKeys.to_string(),
        "ERR Number of keys can't be greater than number of args"
    );
    assert_eq!(
        KeysError::NegativeNumkeys.to_string(),
        "ERR Number of keys can't be negative"
    );
}

#[test]
fn sorted_set_numkeys() {
    assert_eq!(keys("ZUNIONSTORE d 2 a b"), Ok(vec![1, 3, 4]));
    assert_eq!(keys("ZINTERSTORE d 1 a WEIGHTS 2"), Ok(vec![1, 3]));
    assert_eq!(keys("ZDIFFSTORE d 2 a b"), Ok(vec![1, 3, 4]));
    assert_eq!(keys("ZUNION 2 a b WITHSCORES"), Ok(vec![2, 3]));
    assert_eq!(keys("ZINTER 1 a"), Ok(vec![2]));
    assert_eq!(keys("ZDIFF 3 a b c"), Ok(vec![2, 3, 4]));
    assert_eq!(keys("ZINTERCARD 2 a b LIMIT 1"), Ok(vec![2, 3]));
    assert_eq!(
        keys("ZUNIONSTORE d 0 a"),
        Err(KeysError::NoInputKeys("zunionstore"))
    );
    assert_eq!(
        KeysError::NoInputKeys("zunionstore").to_string(),
        "ERR at least 1 input key is needed for 'zunionstore' command"
    );
    assert_eq!(keys("ZUNIONSTORE d 3 a b"), Err(KeysError::Syntax));
    assert_eq!(keys("ZUNIONSTORE d x a"), Err(KeysError::NotAnInteger));
    assert_eq!(keys("ZUNION -1 a"), Err(KeysError::NoInputKeys("zunion")));
    assert_eq!(keys("ZINTERCARD 3 a"), Err(KeysError::Syntax));
    assert_eq!(
        keys("ZINTERCARD 0 a"),
        Err(KeysError::NoInputKeys("zintercard"))
    );
}

#[test]
fn card_and_mpop_numkeys() {
    assert_eq!(keys("SINTERCARD 2 a b"), Ok(vec![2, 3]));
    assert_eq!(keys("SINTERCARD 1 a LIMIT 5"), Ok(vec![2]));
    assert_eq!(keys("SINTERCARD 0 a"), Err(KeysError::NumkeysNotPositive));
    assert_eq!(keys("SINTERCARD x a"), Err(KeysError::NumkeysNotPositive));
    assert_eq!(keys("SINTERCARD 3 a"), Err(KeysError::TooManyKeys));
    assert_eq!(
        KeysError::NumkeysNotPositive.to_string(),
        "ERR numkeys should be greater than 0"
    );
    assert_eq!(keys("LMPOP 2 a b LEFT COUNT 2"), Ok(vec![2, 3]));
    assert_eq!(keys("ZMPOP 1 a MIN"), Ok(vec![2]));
    assert_eq!(keys("BLMPOP 0 2 a b RIGHT"), Ok(vec![3, 4]));
    assert_eq!(keys("BZMPOP 1.5 1 a MAX"), Ok(vec![3]));
    assert_eq!(keys("LMPOP 0 a LEFT"), Err(KeysError::NumkeysNotPositive));
    assert_eq!(keys("LMPOP x a LEFT"), Err(KeysError::NumkeysNotPositive));
    // numkeys swallowing the LEFT|RIGHT argument is a syntax error.
    assert_eq!(keys("LMPOP 2 a LEFT"), Err(KeysError::Syntax));
    assert_eq!(keys("BZMPOP 0 2 a MIN"), Err(KeysError::Syntax));
    assert_eq!(
        keys("BLMPOP 0 0 a LEFT"),
        Err(KeysError::NumkeysNotPositive)
    );
}

#[test]
fn streams() {
    assert_eq!(keys("XREAD STREAMS a b 0 0"), Ok(vec![2, 3]));
    assert_eq!(keys("XREAD COUNT 10 BLOCK 100 STREAMS a 0"), Ok(vec![6]));
    assert_eq!(
        keys("xread block 0 count 1 streams a b c $ $ $"),
        Ok(vec![6, 7, 8])
    );
    // A key may be called "streams".
    assert_eq!(
        key_names("XREAD STREAMS streams a 0 0").unwrap(),
        ["streams", "a"]
    );
    assert_eq!(
        keys("XREADGROUP GROUP g c COUNT 1 NOACK STREAMS a b > >"),
        Ok(vec![8, 9])
    );
    assert_eq!(keys("XREADGROUP GROUP g c STREAMS a >"), Ok(vec![5]));
    assert_eq!(
        keys("XREAD STREAMS a b c"),
        Err(KeysError::UnbalancedStreams)
    );
    assert_eq!(keys("XREAD COUNT 1 a 0"), Err(KeysError::Syntax));
    assert_eq!(keys("XREAD COUNT 1 STREAMS"), Err(KeysError::Syntax));
    assert_eq!(
        keys("XREAD GROUP g c STREAMS a 0"),
        Err(KeysError::GroupOnXread)
    );
    assert_eq!(
        keys("XREAD NOACK STREAMS a 0"),
        Err(KeysError::NoackOnXread)
    );
    assert_eq!(
        keys("XREADGROUP COUNT 1 NOACK STREAMS a 0"),
        Err(KeysError::MissingGroup)
    );
    assert_eq!(
        KeysError::UnbalancedStreams.to_string(),
        "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified."
    );
}

#[test]
fn migrate() {
    assert_eq!(keys("MIGRATE h 6379 k 0 1000"), Ok(vec![3]));
    assert_eq!(keys("MIGRATE h 6379 k 0 1000 COPY REPLACE"), Ok(vec![3]));
    assert_eq!(
        keys("MIGRATE h 6379 '' 0 1000 KEYS a b c"),
        Ok(vec![7, 8, 9])
    );
    assert_eq!(
        keys("MIGRATE h 6379 '' 0 1000 COPY AUTH pw KEYS a b"),
        Ok(vec![10, 11])
    );
    assert_eq!(
        key_names("MIGRATE h 6379 '' 0 1000 AUTH2 keys pw KEYS a").unwrap(),
        ["a"],
        "AUTH2 arguments are skipped even when they read KEYS"
    );
    assert_eq!(keys("MIGRATE h 6379 '' 0 1000 KEYS"), Ok(vec![]));
    assert_eq!(
        keys("MIGRATE h 6379 k 0 1000 KEYS a"),
        Err(KeysError::MigrateKeyNotEmpty)
    );
    assert_eq!(
        keys("MIGRATE h 6379 '' 0 1000 AUTH"),
        Err(KeysError::Syntax)
    );
    assert_eq!(
        keys("MIGRATE h 6379 k 0 1000 BOGUS"),
        Err(KeysError::Syntax)
    );
}

#[test]
fn sort() {
    assert_eq!(keys("SORT k"), Ok(vec![1]));
    assert_eq!(keys("SORT k STORE d"), Ok(vec![1, 3]));
    assert_eq!(
        keys("SORT k BY w_* LIMIT 0 10 GET # GET o_* DESC ALPHA STORE d"),
        Ok(vec![1, 14])
    );
    assert_eq!(
        keys("SORT k STORE d1 STORE d2"),
        Ok(vec![1, 5]),
        "the last STORE wins"
    );
    assert_eq!(
        keys("SORT k BY store"),
        Ok(vec![1]),
        "STORE as a BY pattern is no option"
    );
    assert_eq!(keys("SORT k STORE"), Err(KeysError::Syntax));
    assert_eq!(keys("SORT_RO k BY w_* GET #"), Ok(vec![1]));
    assert_eq!(keys("SORT_RO k STORE d"), Err(KeysError::Syntax));
}

#[test]
fn georadius() {
    assert_eq!(keys("GEORADIUS k 15 37 200 km"), Ok(vec![1]));
    assert_eq!(
        keys("GEORADIUS k 15 37 200 km WITHDIST STORE d"),
        Ok(vec![1, 8])
    );
    assert_eq!(
        keys("GEORADIUS k 15 37 200 km STOREDIST d1 STORE d2"),
        Ok(vec![1, 9])
    );
    assert_eq!(
        keys("GEORADIUSBYMEMBER k m 200 km STOREDIST d"),
        Ok(vec![1, 6])
    );
    assert_eq!(keys("GEORADIUS_RO k 15 37 200 km"), Ok(vec![1]));
}

#[test]
fn key_positions_spill_and_reuse() {
    let mut line = String::from("DEL");
    for i in 0..20 {
        line.push_str(&format!(" k{i}"));
    }
    let args = argv(&line);
    let mut out = KeyPositions::new();
    key_positions(lookup(b"del").unwrap(), &args, &mut out).unwrap();
    assert!(out.spilled());
    assert_eq!(out.as_slice(), (1..=20).collect::<Vec<_>>().as_slice());
    key_positions(lookup(b"get").unwrap(), &argv("GET x"), &mut out).unwrap();
    assert!(!out.spilled());
    assert_eq!(&*out, &[1]);
    assert_eq!(out.keys(&argv("GET x")).collect::<Vec<_>>(), [b"x"]);
}

#[test]
fn slots() {
    let args = argv("MSET {u}a 1 {u}b 2");
    let mut out = KeyPositions::new();
    key_positions(lookup(b"mset").unwrap(), &args, &mut out).unwrap();
    assert_eq!(
        keys_slot(&args, &out),
        SlotCheck::Slot(crate::key_slot(b"u"))
    );
    let args = argv("MSET a 1 b 2");
    key_positions(lookup(b"mset").unwrap(), &args, &mut out).unwrap();
    assert_eq!(keys_slot(&args, &out), SlotCheck::CrossSlot);
    assert_eq!(keys_slot(&args, &[]), SlotCheck::NoKeys);
}

#[test]
fn lookup_is_case_insensitive() {
    for n in [&b"get"[..], b"GET", b"GeT", b"gEt"] {
        assert_eq!(lookup(n).unwrap().name, "get");
    }
    assert_eq!(
        lookup(b"GEORADIUSBYMEMBER_RO").unwrap().name,
        "georadiusbymember_ro"
    );
    assert!(lookup(b"nosuchcommand").is_none());
    assert!(lookup(b"").is_none());
    assert!(lookup(&[b'a'; 100]).is_none());
    assert!(
        lookup(b"config|get").is_none(),
        "lookup only finds top-level commands"
    );
    let config = lookup(b"CONFIG").unwrap();
    assert_eq!(
        lookup_subcommand(config, b"GeT").unwrap().name,
        "config|get"
    );
    assert!(lookup_subcommand(config, b"nope").is_none());
    assert!(lookup_subcommand(lookup(b"get").unwrap(), b"x").is_none());
    assert_eq!(
        lookup(b"cluster")
            .and_then(|c| lookup_subcommand(c, b"COUNT-FAILURE-REPORTS"))
            .unwrap()
            .name,
        "cluster|count-failure-reports"
    );
    assert_eq!(lookup_fullname(b"CONFIG|GET").unwrap().name, "config|get");
    assert_eq!(lookup_fullname(b"Get").unwrap().name, "get");
    assert!(lookup_fullname(b"get|x").is_none());
    assert_eq!(resolve(&argv("client LIST")).unwrap().name, "client|list");
    assert_eq!(resolve(&argv("CLIENT")).unwrap().name, "client");
    assert_eq!(resolve(&argv("get k")).unwrap().name, "get");
    assert!(resolve::<&[u8]>(&[]).is_none());
}

#[test]
fn arity() {
    let get = lookup(b"get").unwrap();
    assert!(!arity_ok(get, 1));
    assert!(arity_ok(get, 2));
    assert!(!arity_ok(get, 3));
    let mset = lookup(b"mset").unwrap();
    assert!(!arity_ok(mset, 2));
    assert!(arity_ok(mset, 3));
    assert!(arity_ok(mset, 99));
    let slots = lookup_fullname(b"cluster|slots").unwrap();
    assert!(arity_ok(slots, 2));
    assert!(!arity_ok(slots, 3));
}

#[test]
fn hand_checked_entries() {
    use flags::*;
    // (name, arity, flags, first, last, step), checked against redis-server 7.0.15.
    let cases: &[(&str, i32, u64, i32, i32, i32)] = &[
        ("get", 2, READONLY | FAST, 1, 1, 1),
        ("set", -3, WRITE | DENYOOM, 1, 1, 1),
        ("mset", -3, WRITE | DENYOOM, 1, -1, 2),
        ("del", -2, WRITE, 1, -1, 1),
        (
            "eval",
            -3,
            NOSCRIPT | STALE | SKIP_MONITOR | NO_MANDATORY_KEYS | MOVABLE_KEYS,
            0,
            0,
            0,
        ),
        ("xread", -4, READONLY | BLOCKING | MOVABLE_KEYS, 0, 0, 0),
        ("cluster|slots", 2, STALE, 0, 0, 0),
    ];
    for &(name, arity, f, first, last, step) in cases {
        let s = lookup_fullname(name.as_bytes()).unwrap();
        assert_eq!(
            (s.arity, s.flags, s.first_key, s.last_key, s.step),
            (arity, f, first, last, step),
            "{name}"
        );
    }
    let get = lookup(b"get").unwrap();
    assert_eq!(get.acl_categories, ["@read", "@string", "@fast"]);
    assert_eq!(get.group, "string");
    assert_eq!(get.since, "1.0.0");
    assert_eq!(get.summary, "Get the value of a key");
    assert_eq!(
        lookup(b"mset").unwrap().tips,
        [
            "request_policy:multi_shard",
            "response_policy:all_succeeded"
        ]
    );
    assert_eq!(lookup(b"zadd").unwrap().group, "sorted-set");
    assert_eq!(lookup(b"lpush").unwrap().group, "list");
    assert_eq!(lookup(b"expire").unwrap().group, "generic");
    assert_eq!(
        flag_names(lookup(b"eval").unwrap().flags).collect::<Vec<_>>(),
        [
            "noscript",
            "stale",
            "skip_monitor",
            "no_mandatory_keys",
            "movablekeys"
        ]
    );
    assert_eq!(flags::from_name("allow_busy"), Some(ALLOW_BUSY));
    assert_eq!(REDIS_VERSION.get(..4), Some("7.0."));
}

#[test]
fn table_invariants() {
    let cmds = all();
    assert!(cmds.len() >= 200);
    assert!(
        cmds.windows(2).all(|w| w[0].name < w[1].name),
        "sorted, unique"
    );
    let mut total = 0;
    let mut check = |s: &CommandSpec| {
        total += 1;
        assert!(
            !s.name.bytes().any(|b| b.is_ascii_uppercase()),
            "{}",
            s.name
        );
        assert!(s.name.len() <= MAX_NAME);
        assert!(!s.group.is_empty() && !s.since.is_empty() && !s.summary.is_empty());
        let movable = s.has_flag(flags::MOVABLE_KEYS);
        match s.keys {
            KeyRule::None => assert!(!movable && s.first_key == 0, "{}", s.name),
            KeyRule::Range { first, last, step } => {
                assert!(!movable || s.name == "sort_ro", "{}", s.name);
                assert_eq!((first, last, step), (s.first_key, s.last_key, s.step));
                assert!(first > 0 && step > 0, "{}", s.name);
            }
            _ => assert!(movable, "{}", s.name),
        }
        assert_eq!(s.flags & flags::HIDDEN, 0);
    };
    for c in cmds {
        check(c);
        assert_eq!(c.container, "");
        assert!(c.subcommands.windows(2).all(|w| w[0].name < w[1].name));
        for s in c.subcommands {
            check(s);
            assert_eq!(s.container, c.name);
            assert_eq!(s.name, format!("{}|{}", c.name, s.subcommand_name()));
            assert!(s.subcommands.is_empty());
            assert!(std::ptr::eq(lookup_fullname(s.name.as_bytes()).unwrap(), s));
        }
        assert!(std::ptr::eq(
            lookup(c.name.to_uppercase().as_bytes()).unwrap(),
            c
        ));
    }
    assert!(total >= 350);
}

#[test]
fn getkeys_semantics() {
    let mut out = KeyPositions::new();
    let mut gk = |line: &str| getkeys(&argv(line), &mut out).map(|_| out.to_vec());
    assert_eq!(gk("MSET a 1 b 2"), Ok(vec![1, 3]));
    assert_eq!(gk("EVAL s 0"), Ok(vec![]), "no_mandatory_keys");
    assert_eq!(gk("EVAL s 5 a"), Ok(vec![]), "no_mandatory_keys");
    assert_eq!(gk("OBJECT ENCODING k"), Ok(vec![2]));
    assert_eq!(gk("nope"), Err(GetKeysError::InvalidCommand));
    assert_eq!(gk("CONFIG nope"), Err(GetKeysError::InvalidCommand));
    assert_eq!(gk("PING"), Err(GetKeysError::NoKeyArguments));
    assert_eq!(gk("SPUBLISH ch msg"), Err(GetKeysError::NoKeyArguments));
    assert_eq!(gk("GET"), Err(GetKeysError::InvalidArity));
    assert_eq!(gk("ZUNIONSTORE d 0 a"), Err(GetKeysError::InvalidArguments));
    assert_eq!(
        getkeys_error_text(GetKeysError::InvalidArguments),
        GetKeysError::InvalidArguments.to_string()
    );
    assert_eq!(
        GetKeysError::NoKeyArguments.to_string(),
        "ERR The command has no key arguments"
    );
}

#[test]
fn command_info_shape() {
    // Captured from redis-server 7.0.15: `COMMAND INFO get` (RESP2), without the outer `*1`.
    let expected = "*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n\
        *3\r\n+@read\r\n+@string\r\n+@fast\r\n*0\r\n*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RO\r\n\
        +access\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n\
        $5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n\
        *6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n";
    let ours = encode(&to_resp2(command_info(lookup(b"get").unwrap())));
    assert_eq!(String::from_utf8(ours).unwrap(), expected);

    let info = command_info(lookup(b"config").unwrap());
    let Frame::Array(items) = &info else {
        panic!("not an array")
    };
    assert_eq!(items.len(), 10);
    let Frame::Array(subs) = &items[9] else {
        panic!("subcommands")
    };
    assert!(subs.len() >= 5);

    let docs = command_docs(lookup(b"get").unwrap());
    let expected = "%5\r\n$7\r\nsummary\r\n$22\r\nGet the value of a key\r\n$5\r\nsince\r\n\
        $5\r\n1.0.0\r\n$5\r\ngroup\r\n$6\r\nstring\r\n$10\r\ncomplexity\r\n$4\r\nO(1)\r\n\
        $9\r\narguments\r\n*1\r\n%3\r\n$4\r\nname\r\n$3\r\nkey\r\n$4\r\ntype\r\n$3\r\nkey\r\n\
        $14\r\nkey_spec_index\r\n:0\r\n";
    assert_eq!(String::from_utf8(encode(&docs)).unwrap(), expected);
}

/// Lookup cost; run with `cargo test -p slotgate-protocol --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn lookup_speed() {
    let names: Vec<Vec<u8>> = [
        "GET",
        "set",
        "HGETALL",
        "zrangebyscore",
        "xreadgroup",
        "EVALSHA_RO",
        "nosuch",
        "client",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let rounds = 2_000_000;
    let t = std::time::Instant::now();
    let mut hits = 0usize;
    for i in 0..rounds {
        let n = std::hint::black_box(&names[i % names.len()]);
        hits += lookup(n).is_some() as usize;
    }
    let ns = t.elapsed().as_nanos() as f64 / rounds as f64;
    println!("lookup: {ns:.1} ns/op ({hits} hits)");
    let args = argv("MSET a 1 b 2 c 3");
    let mut out = KeyPositions::new();
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        let spec = resolve(std::hint::black_box(&args)).unwrap();
        key_positions(spec, &args, &mut out).unwrap();
    }
    let ns2 = t.elapsed().as_nanos() as f64 / rounds as f64;
    println!("resolve + key_positions(MSET, 3 keys): {ns2:.1} ns/op");
    assert!(ns < 100.0, "lookup took {ns} ns");
}

// ------------------------------------------------------------------------------------------
// Differential test against a real redis-server.
// ------------------------------------------------------------------------------------------

mod differential {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    struct Conn {
        sock: TcpStream,
        buf: BytesMut,
    }

    impl Conn {
        fn call(&mut self, args: &[&str]) -> Frame {
            let mut req = BytesMut::new();
            crate::resp::write_command(&mut req, args);
            self.sock.write_all(&req).unwrap();
            loop {
                if let Some(f) = decode_frame(&mut self.buf).unwrap() {
                    return f;
                }
                let mut chunk = [0u8; 65536];
                let n = self.sock.read(&mut chunk).unwrap();
                assert!(n > 0, "server closed the connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }

    /// Starts redis-server on a free port; `None` (test skipped) if it is not installed,
    /// unless `CI=true`, where a missing server fails the test.
    fn start() -> Option<(Server, u16)> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("redis-server is not on PATH (required when CI=true)");
            }
            eprintln!("skipping differential test: redis-server is not on PATH");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some((server, port))
    }

    fn connect(port: u16) -> Conn {
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            sock,
            buf: BytesMut::new(),
        }
    }

    /// Orders the subcommands of an info entry (element 9) or a docs map (`subcommands`),
    /// which redis-server emits in its dict's random order.
    fn normalize(f: Frame) -> Frame {
        match f {
            Frame::Array(mut items) if items.len() == 10 && items[0].as_bytes().is_some() => {
                if let Frame::Array(subs) = &mut items[9] {
                    let mut v: Vec<Frame> = subs.drain(..).map(normalize).collect();
                    v.sort_by_key(encode);
                    *subs = v;
                }
                Frame::Array(items)
            }
            Frame::Map(mut pairs) => {
                for (k, v) in pairs.iter_mut() {
                    if k.as_bytes() == Some(b"subcommands") {
                        if let Frame::Map(subs) = v {
                            subs.sort_by_key(|(k, _)| encode(k));
                            for (_, d) in subs.iter_mut() {
                                *d = normalize(std::mem::replace(d, Frame::Null));
                            }
                        }
                    }
                }
                Frame::Map(pairs)
            }
            // RESP2 `COMMAND DOCS` flattens maps: normalize pairwise.
            other => other,
        }
    }

    fn single(reply: Frame) -> Frame {
        match reply {
            Frame::Array(mut v) if v.len() == 1 => v.pop().unwrap(),
            other => panic!("unexpected reply {other}"),
        }
    }

    #[test]
    fn command_info_and_docs_match_redis_server() {
        let Some((_server, port)) = start() else {
            return;
        };
        let mut resp2 = connect(port);
        let mut resp3 = connect(port);
        assert!(!resp3.call(&["HELLO", "3"]).is_error());

        let version = match resp2.call(&["INFO", "server"]) {
            Frame::Bulk(b) => String::from_utf8_lossy(&b)
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:").map(str::to_string))
                .unwrap_or_default(),
            other => panic!("INFO: {other}"),
        };
        if !version.starts_with("7.0.") {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("redis-server {version} is not 7.0.x (required when CI=true)");
            }
            eprintln!("skipping differential test: redis-server {version} is not 7.0.x");
            return;
        }

        // Every command the server knows must be in the table, and vice versa.
        let Frame::Integer(count) = resp2.call(&["COMMAND", "COUNT"]) else {
            panic!("COMMAND COUNT")
        };
        assert_eq!(count as usize, all().len());

        let diverse = [
            "get",
            "set",
            "mset",
            "del",
            "eval",
            "evalsha_ro",
            "fcall",
            "xread",
            "xreadgroup",
            "xadd",
            "zunionstore",
            "zinter",
            "sintercard",
            "lmpop",
            "blmpop",
            "bzmpop",
            "migrate",
            "sort",
            "sort_ro",
            "georadius",
            "georadiusbymember",
            "geosearchstore",
            "bitop",
            "bitfield",
            "lmove",
            "blpop",
            "ping",
            "info",
            "spublish",
            "ssubscribe",
            "subscribe",
            "publish",
            "watch",
            "exec",
            "hello",
            "auth",
            "shutdown",
            "keys",
            "scan",
            "rename",
            "object",
            "memory",
            "xinfo",
            "config",
            "cluster",
            "client",
            "command",
            "function",
            "script",
            "acl",
            "xgroup",
            "pubsub",
            "module",
            "latency",
            "slowlog",
        ];
        let mut checked = 0;
        for name in diverse.iter().copied().chain(all().iter().map(|c| c.name)) {
            let spec = lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name} missing"));
            let ours = command_info(spec);

            let theirs2 = normalize(single(resp2.call(&["COMMAND", "INFO", name])));
            let ours2 = normalize(to_resp2(ours.clone()));
            assert_eq!(
                String::from_utf8_lossy(&encode(&ours2)),
                String::from_utf8_lossy(&encode(&theirs2)),
                "COMMAND INFO {name} (RESP2)"
            );

            let theirs3 = normalize(single(resp3.call(&["COMMAND", "INFO", name])));
            assert_eq!(
                String::from_utf8_lossy(&encode(&normalize(ours))),
                String::from_utf8_lossy(&encode(&theirs3)),
                "COMMAND INFO {name} (RESP3)"
            );

            let Frame::Map(mut docs) = resp3.call(&["COMMAND", "DOCS", name]) else {
                panic!("COMMAND DOCS {name}")
            };
            assert_eq!(docs.len(), 1);
            let (k, theirs_docs) = docs.pop().unwrap();
            assert_eq!(k.as_bytes(), Some(name.as_bytes()));
            assert_eq!(
                String::from_utf8_lossy(&encode(&normalize(command_docs(spec)))),
                String::from_utf8_lossy(&encode(&normalize(theirs_docs))),
                "COMMAND DOCS {name} (RESP3)"
            );
            checked += 1;
        }
        assert!(checked > diverse.len());

        // Key extraction against COMMAND GETKEYS where both must agree.
        for line in [
            "MSET a 1 b 2",
            "DEL a b c",
            "ZUNIONSTORE d 2 a b",
            "EVAL s 2 a b c",
            "XREAD COUNT 1 BLOCK 0 STREAMS a b 0 0",
            "XREADGROUP GROUP g c STREAMS a >",
            "SORT k LIMIT 0 1 STORE d",
            "MIGRATE h 1 '' 0 10 KEYS a b",
            "LMPOP 2 a b LEFT",
            "BZMPOP 0 1 a MIN",
            "OBJECT ENCODING k",
            "GEORADIUS k 1 2 3 m STORE d",
        ] {
            let args = argv(line);
            let mut req: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
            req.extend(args.iter().map(|a| a.as_slice()));
            let req: Vec<&str> = req
                .iter()
                .map(|a| std::str::from_utf8(a).unwrap())
                .collect();
            let Frame::Array(theirs) = resp2.call(&req) else {
                panic!("GETKEYS {line}")
            };
            let mut theirs: Vec<Vec<u8>> = theirs
                .iter()
                .map(|f| f.as_bytes().unwrap().to_vec())
                .collect();
            let mut ours: Vec<Vec<u8>> = key_names(line)
                .unwrap()
                .into_iter()
                .map(String::into_bytes)
                .collect();
            theirs.sort();
            ours.sort();
            assert_eq!(ours, theirs, "{line}");
        }
    }
}

proptest::proptest! {
    /// Any request against any command: no panic, positions in bounds and ascending.
    #[test]
    fn key_positions_never_panics(
        cmd in 0usize..400,
        tail in proptest::collection::vec(
            proptest::sample::select(vec![
                "0", "1", "2", "3", "-1", "x", "", "STORE", "storedist", "KEYS", "AUTH", "auth2",
                "STREAMS", "COUNT", "BLOCK", "GROUP", "NOACK", "LIMIT", "BY", "GET", "LEFT", "MIN",
            ]),
            0..12,
        ),
    ) {
        let specs: Vec<&CommandSpec> = all()
            .iter()
            .flat_map(|c| std::iter::once(c).chain(c.subcommands.iter()))
            .collect();
        let spec = specs[cmd % specs.len()];
        let mut args: Vec<&str> = vec![spec.container, spec.subcommand_name()];
        if spec.container.is_empty() {
            args.remove(0);
        }
        args.extend(tail);
        let mut out = KeyPositions::new();
        if key_positions(spec, &args, &mut out).is_ok() {
            proptest::prop_assert!(out.iter().all(|&p| p > 0 && p < args.len()));
            proptest::prop_assert!(out.windows(2).all(|w| w[0] < w[1]));
        }
        let mut g = KeyPositions::new();
        let _ = getkeys(&args, &mut g);
    }
}
