//! One scripted command sequence across every command family, sent to a real redis-server
//! and to slotgate-node; the replies must be equal (unordered replies are compared sorted).
//! Skipped with a printed reason when redis-server is not installed (fails under CI=true).

use slotgate_protocol::Frame;
use slotgate_tests::*;

/// Commands whose reply order Redis does not define: compare as sorted multisets.
/// Small hashes are compared in order: they keep Redis's listpack (insertion) order.
const UNORDERED: &[&str] = &["smembers", "sinter", "sunion", "sdiff", "keys"];

const SCRIPT: &[&str] = &[
    // connection
    "PING",
    "PING hello",
    "ECHO abc",
    "SELECT 3",
    "SET dbkey 3",
    "SELECT 0",
    "GET dbkey",
    "SELECT 99",
    "SELECT x",
    // strings
    "SET s1 hello",
    "GET s1",
    "SET s1 world XX GET",
    "SET s2 v NX",
    "SET s2 v2 NX",
    "SET s3 v EX 100",
    "TTL s3",
    "SET s3 v EX 0",
    "SET s3 v EX abc",
    "SET s3 v NX XX",
    "SETNX s1 x",
    "GETSET s1 again",
    "GETDEL s2",
    "GET s2",
    "APPEND s1 !!",
    "STRLEN s1",
    "GETRANGE s1 0 3",
    "GETRANGE s1 -3 -1",
    "SETRANGE s1 2 XY",
    "GET s1",
    "MSET m1 a m2 b m3 c",
    "MGET m1 m2 nosuch m3",
    "MSETNX m1 z m9 z",
    "MSETNX m8 z m9 z",
    "INCR counter",
    "INCRBY counter 10",
    "DECR counter",
    "DECRBY counter 3",
    "INCR s1",
    "INCRBY counter abc",
    "INCRBYFLOAT fl 1.5",
    "INCRBYFLOAT fl 2",
    "SET big 9223372036854775807",
    "INCR big",
    "SETBIT bits 7 1",
    "GETBIT bits 7",
    "BITCOUNT bits",
    "BITPOS bits 1",
    "SETEX ex1 100 v",
    "PSETEX ex2 100000 v",
    "GETEX ex1 PERSIST",
    "TTL ex1",
    // keys
    "EXISTS s1 s1 nosuch",
    "TYPE s1",
    "TYPE nosuch",
    "RENAME s1 s1renamed",
    "RENAME nosuch x",
    "RENAMENX s1renamed m1",
    "DEL s1renamed m1 nosuch",
    "EXPIRE m2 100",
    "PEXPIRE m2 100000 XX",
    "EXPIRE m2 100 NX",
    "TTL m2",
    "PERSIST m2",
    "TTL m2",
    "TTL nosuch",
    "EXPIRE m2 abc",
    "COPY m3 m3copy",
    "GET m3copy",
    "KEYS m*",
    "DBSIZE",
    "OBJECT ENCODING counter",
    "OBJECT ENCODING m3",
    "UNLINK m3copy",
    "TOUCH m2 m3",
    // hashes
    "HSET h f1 v1 f2 v2",
    "HSET h f1 v1b",
    "HGET h f1",
    "HMGET h f1 nosuch f2",
    "HGETALL h",
    "HKEYS h",
    "HVALS h",
    "HLEN h",
    "HEXISTS h f2",
    "HDEL h f2 nosuch",
    "HINCRBY h n 5",
    "HINCRBY h f1 1",
    "HINCRBYFLOAT h fl 0.5",
    "HSETNX h f1 x",
    "HSTRLEN h f1",
    // field order after deletes and re-adds (Redis's listpack order)
    "HSET ho a 1 b 2 c 3 d 4",
    "HDEL ho b",
    "HSET ho e 5 b 6 a 7",
    "HDEL ho d",
    "HGETALL ho",
    "HKEYS ho",
    "HVALS ho",
    "HGET s1renamed x",
    "GET h",
    // lists
    "RPUSH l a b c d",
    "LPUSH l z",
    "LRANGE l 0 -1",
    "LLEN l",
    "LINDEX l 2",
    "LSET l 0 zz",
    "LINSERT l BEFORE c bc",
    "LREM l 1 bc",
    "LPOS l c",
    "LPOP l",
    "RPOP l 2",
    "LRANGE l 0 -1",
    "LTRIM l 0 0",
    "LRANGE l 0 -1",
    "LMOVE l l2 LEFT RIGHT",
    "LRANGE l2 0 -1",
    "EXISTS l",
    "RPOPLPUSH nosuch x",
    "LPUSHX nosuch a",
    "LPOP nosuch",
    "BLPOP l2 0.1",
    "BLPOP emptylist 0.1",
    // sets
    "SADD s a b c",
    "SADD s a",
    "SCARD s",
    "SISMEMBER s a",
    "SMISMEMBER s a x",
    "SMEMBERS s",
    "SADD s2 b c d",
    "SINTER s s2",
    "SUNION s s2",
    "SDIFF s s2",
    "SINTERSTORE sdst s s2",
    "SMEMBERS sdst",
    "SINTERCARD 2 s s2",
    "SREM s a x",
    "SMOVE s s2 b",
    "SMEMBERS s2",
    // sorted sets
    "ZADD z 1 a 2 b 3 c",
    "ZADD z XX CH 5 a",
    "ZADD z NX XX 1 a",
    "ZSCORE z a",
    "ZRANGE z 0 -1 WITHSCORES",
    "ZRANGE z 0 -1 REV",
    "ZRANGEBYSCORE z 2 (5",
    "ZRANK z c",
    "ZREVRANK z c",
    "ZINCRBY z 1.5 b",
    "ZCOUNT z -inf +inf",
    "ZCARD z",
    "ZPOPMIN z",
    "ZREM z c",
    "ZRANGE z 0 -1 WITHSCORES",
    "ZADD z2 1 x 2 y",
    "ZUNIONSTORE zu 2 z z2 WEIGHTS 2 1",
    "ZRANGE zu 0 -1 WITHSCORES",
    "ZADD z nan a",
    // hyperloglog
    "PFADD hll a b c d e",
    "PFADD hll a",
    "PFCOUNT hll",
    // transactions
    "MULTI",
    "SET tx 1",
    "INCR tx",
    "GET tx",
    "EXEC",
    "MULTI",
    "SET tx 2",
    "NOSUCHCMD",
    "EXEC",
    "GET tx",
    "EXEC",
    "DISCARD",
    // errors
    "GET",
    "SET onlykey",
    "NOSUCHCOMMAND a b",
    "LPUSH s1renamed x",
    // server
    "FLUSHDB",
    "DBSIZE",
];

fn split(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}

fn normalize(cmd: &str, f: Frame) -> Frame {
    let name = cmd.split(' ').next().unwrap_or("").to_ascii_lowercase();
    if !UNORDERED.contains(&name.as_str()) {
        return f;
    }
    match f {
        Frame::Array(mut v) | Frame::Set(mut v) => {
            v.sort_by_key(|x| format!("{x:?}"));
            Frame::Array(v)
        }
        Frame::Map(mut m) => {
            m.sort_by_key(|p| format!("{p:?}"));
            Frame::Map(m)
        }
        other => other,
    }
}

fn run_script(resp3: bool) {
    let Some(redis) = start_redis(&[]) else {
        return;
    };
    let node = start_node(&[]);
    let mut a = Raw::connect(redis.port);
    let mut b = Raw::connect(node.port);
    if resp3 {
        let _ = a.cmd(&["HELLO", "3"]);
        let _ = b.cmd(&["HELLO", "3"]);
    }
    let mut diffs = Vec::new();
    for line in SCRIPT {
        let args = split(line);
        let ra = normalize(line, a.cmd(&args));
        let rb = normalize(line, b.cmd(&args));
        if ra != rb {
            diffs.push(format!("{line}\n   redis: {ra:?}\n    node: {rb:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} replies differ (resp3={resp3}):\n{}",
        diffs.len(),
        SCRIPT.len(),
        diffs.join("\n")
    );
}

#[test]
fn differential_script_resp2() {
    run_script(false);
}

#[test]
fn differential_script_resp3() {
    run_script(true);
}
