//! End-to-end tests of RDB persistence: data of every type (and TTLs, and other databases)
//! survives a restart through SAVE, BGSAVE, the save points, SHUTDOWN and SIGTERM; SHUTDOWN
//! NOSAVE and FLUSHALL do what redis-server does; and the files are interchangeable with
//! redis-server's in both directions.

use slotgate_protocol::Frame;
use slotgate_tests::repl::{cmd, info, wait_until};
use slotgate_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A data directory that outlives the servers started on it (removed on drop).
struct DataDir(PathBuf);

impl DataDir {
    fn new(tag: &str) -> DataDir {
        let d = std::env::temp_dir().join(format!(
            "slotgate-persist-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&d).expect("data dir");
        DataDir(d)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }

    fn rdb(&self) -> PathBuf {
        self.0.join("dump.rdb")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `bin` with its data in `dir` and the given save points.
fn start_in(bin: &Path, dir: &DataDir, save: &str) -> Proc {
    spawn_server(bin, &["--dir", dir.path(), "--save", save])
}

fn node_bin() -> PathBuf {
    our_bin("slotgate-node")
}

fn ok() -> Frame {
    Frame::Simple("OK".into())
}

fn bulk(s: &str) -> Frame {
    Frame::Bulk(s.as_bytes().to_vec().into())
}

fn bulks(v: &[&str]) -> Frame {
    Frame::Array(v.iter().map(|s| bulk(s)).collect())
}

/// Writes one key of every type, one with a TTL, and one in database 3.
fn write_data(port: u16) {
    for c in [
        vec!["SET", "s", "hello"],
        vec!["SET", "n", "12345"],
        vec!["SET", "ttl", "x", "EX", "1000"],
        vec!["RPUSH", "l", "a", "b", "c"],
        vec!["HSET", "h", "f1", "v1", "f2", "v2"],
        vec!["SADD", "set", "m1"],
        vec!["ZADD", "z", "1.5", "a", "2", "b"],
    ] {
        let r = cmd(port, &c);
        assert!(!matches!(r, Frame::Error(_)), "{c:?}: {r:?}");
    }
    let mut r = Raw::connect(port);
    assert_eq!(r.cmd(&["SELECT", "3"]), ok());
    assert_eq!(r.cmd(&["SET", "in3", "three"]), ok());
}

/// Checks what [`write_data`] wrote (`keys`: the keys database 0 holds in all).
fn check_data(port: u16, who: &str, keys: i64) {
    assert_eq!(cmd(port, &["GET", "s"]), bulk("hello"), "{who}");
    assert_eq!(cmd(port, &["GET", "n"]), bulk("12345"), "{who}");
    match cmd(port, &["TTL", "ttl"]) {
        Frame::Integer(t) => assert!((900..=1000).contains(&t), "{who}: TTL {t}"),
        other => panic!("{who}: TTL {other:?}"),
    }
    assert_eq!(
        cmd(port, &["LRANGE", "l", "0", "-1"]),
        bulks(&["a", "b", "c"]),
        "{who}"
    );
    assert_eq!(cmd(port, &["HGET", "h", "f2"]), bulk("v2"), "{who}");
    assert_eq!(cmd(port, &["SMEMBERS", "set"]), bulks(&["m1"]), "{who}");
    assert_eq!(
        cmd(port, &["ZRANGE", "z", "0", "-1", "WITHSCORES"]),
        bulks(&["a", "1.5", "b", "2"]),
        "{who}"
    );
    let mut r = Raw::connect(port);
    assert_eq!(r.cmd(&["SELECT", "3"]), ok());
    assert_eq!(r.cmd(&["GET", "in3"]), bulk("three"), "{who}");
    assert_eq!(
        cmd(port, &["DBSIZE"]),
        Frame::Integer(keys),
        "{who}: keys in db 0"
    );
}

fn stat(port: u16, name: &str) -> String {
    info(port, "persistence")
        .get(name)
        .cloned()
        .unwrap_or_default()
}

/// SAVE writes the file; a node restarted on the same directory has every key back.
#[test]
fn data_survives_a_restart_through_save() {
    let dir = DataDir::new("save");
    let mut n = start_in(&node_bin(), &dir, "");
    write_data(n.port);
    assert_ne!(stat(n.port, "rdb_changes_since_last_save"), "0");
    assert_eq!(cmd(n.port, &["SAVE"]), ok());
    assert!(dir.rdb().exists(), "SAVE wrote no dump.rdb");
    assert_eq!(stat(n.port, "rdb_changes_since_last_save"), "0");
    assert_eq!(stat(n.port, "rdb_saves"), "1");
    assert!(n.terminate(Duration::from_secs(10)), "SIGTERM");
    drop(n);
    let n = start_in(&node_bin(), &dir, "");
    assert!(n.log().contains("DB loaded from disk"), "{}", n.log());
    check_data(n.port, "after SAVE and restart", 7);
}

/// BGSAVE and a save point write the file in the background (LASTSAVE moves, INFO reports).
#[test]
fn bgsave_and_save_points_write_in_the_background() {
    let dir = DataDir::new("bgsave");
    let n = start_in(&node_bin(), &dir, "");
    write_data(n.port);
    let before = cmd(n.port, &["LASTSAVE"]);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        cmd(n.port, &["BGSAVE"]),
        Frame::Simple("Background saving started".into())
    );
    wait_until("the background save", Duration::from_secs(10), || {
        stat(n.port, "rdb_bgsave_in_progress") == "0" && stat(n.port, "rdb_saves") == "1"
    });
    assert_eq!(stat(n.port, "rdb_last_bgsave_status"), "ok");
    assert_ne!(cmd(n.port, &["LASTSAVE"]), before);
    assert!(dir.rdb().exists());
    // A save point: one change within a second.
    assert_eq!(cmd(n.port, &["CONFIG", "SET", "save", "1 1"]), ok());
    assert_eq!(cmd(n.port, &["SET", "later", "v"]), ok());
    wait_until("the save point's save", Duration::from_secs(10), || {
        stat(n.port, "rdb_saves") == "2"
    });
    assert_eq!(stat(n.port, "rdb_changes_since_last_save"), "0");
    assert!(
        n.log().contains("1 changes in 1 seconds. Saving..."),
        "{}",
        n.log()
    );
    drop(n);
    let n = start_in(&node_bin(), &dir, "");
    check_data(n.port, "after BGSAVE and a save point", 8);
    assert_eq!(cmd(n.port, &["GET", "later"]), bulk("v"));
}

/// SHUTDOWN and SIGTERM save when save points are set; SHUTDOWN NOSAVE does not; FLUSHALL
/// saves the empty keyspace at once, so the flushed keys do not come back.
#[test]
fn shutdown_sigterm_and_flushall_save_like_redis() {
    let dir = DataDir::new("shutdown");
    let bin = node_bin();
    let mut n = start_in(&bin, &dir, "3600 1");
    write_data(n.port);
    let mut r = Raw::connect(n.port);
    r.send(b"*1\r\n$8\r\nSHUTDOWN\r\n");
    assert!(r.read().is_none(), "SHUTDOWN replies nothing and closes");
    let _ = n.child.wait();
    assert!(n
        .log()
        .contains("Saving the final RDB snapshot before exiting."));
    drop(n);

    let mut n = start_in(&bin, &dir, "3600 1");
    check_data(n.port, "after SHUTDOWN", 7);
    assert_eq!(cmd(n.port, &["SET", "by-sigterm", "v"]), ok());
    assert!(n.terminate(Duration::from_secs(10)), "SIGTERM");
    drop(n);

    let n = start_in(&bin, &dir, "3600 1");
    assert_eq!(cmd(n.port, &["GET", "by-sigterm"]), bulk("v"));
    assert_eq!(cmd(n.port, &["SET", "lost", "v"]), ok());
    let mut r = Raw::connect(n.port);
    r.send(b"*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n");
    assert!(r.read().is_none());
    drop(n);

    let n = start_in(&bin, &dir, "3600 1");
    assert_eq!(
        cmd(n.port, &["EXISTS", "lost"]),
        Frame::Integer(0),
        "NOSAVE saved"
    );
    assert_eq!(cmd(n.port, &["FLUSHALL"]), ok());
    assert_eq!(stat(n.port, "rdb_changes_since_last_save"), "1");
    drop(n); // SIGKILL: only what FLUSHALL saved remains.

    let n = start_in(&bin, &dir, "3600 1");
    assert_eq!(
        cmd(n.port, &["DBSIZE"]),
        Frame::Integer(0),
        "flushed keys came back"
    );
}

/// redis-server loads the file slotgate-node saved, and slotgate-node loads redis-server's.
#[test]
fn rdb_files_are_interchangeable_with_redis_server() {
    let Some(redis) = require_peer("redis-server") else {
        return;
    };
    let dir = DataDir::new("ours");
    let n = start_in(&node_bin(), &dir, "");
    write_data(n.port);
    assert_eq!(cmd(n.port, &["SAVE"]), ok());
    drop(n);
    let r = start_in(&redis, &dir, "");
    check_data(r.port, "redis-server loading slotgate-node's file", 7);
    drop(r);

    let dir = DataDir::new("theirs");
    let r = start_in(&redis, &dir, "");
    write_data(r.port);
    // Values Redis stores in its compact encodings too: a big list, set, hash and zset.
    for i in 0..300 {
        let (m, s) = (format!("m{i}"), i.to_string());
        cmd(r.port, &["RPUSH", "biglist", &m]);
        cmd(r.port, &["SADD", "bigset", &m]);
        cmd(r.port, &["SADD", "intset", &s]);
        cmd(r.port, &["HSET", "bighash", &m, &s]);
        cmd(r.port, &["ZADD", "bigzset", &s, &m]);
    }
    assert_eq!(cmd(r.port, &["SAVE"]), ok());
    let digest = |port: u16| -> Vec<Frame> {
        vec![
            cmd(port, &["LRANGE", "biglist", "0", "-1"]),
            cmd(port, &["SCARD", "bigset"]),
            cmd(port, &["SCARD", "intset"]),
            cmd(port, &["SISMEMBER", "intset", "299"]),
            cmd(port, &["HGET", "bighash", "m150"]),
            cmd(port, &["ZRANGE", "bigzset", "0", "-1", "WITHSCORES"]),
        ]
    };
    let theirs = digest(r.port);
    drop(r);
    let n = start_in(&node_bin(), &dir, "");
    check_data(n.port, "slotgate-node loading redis-server's file", 12);
    assert_eq!(digest(n.port), theirs);
}

/// CONFIG SET dir moves the node (the next SAVE writes there) and a bad directory is refused
/// with redis-server's error; dbfilename must be a plain name, `save` pairs of integers.
#[test]
fn config_set_dir_dbfilename_and_save_behave_like_redis() {
    let first = DataDir::new("dir1");
    let second = DataDir::new("dir2");
    // dir and dbfilename are protected configs in Redis 7.0: refused unless enabled.
    let locked = start_in(&node_bin(), &first, "");
    for (name, value) in [("dir", second.path()), ("dbfilename", "x.rdb")] {
        assert_eq!(
            cmd(locked.port, &["CONFIG", "SET", name, value]),
            Frame::Error(format!(
                "ERR CONFIG SET failed (possibly related to argument '{name}') - can't set protected config"
            ).into_bytes().into())
        );
    }
    drop(locked);
    let n = spawn_server(
        &node_bin(),
        &[
            "--dir",
            first.path(),
            "--save",
            "",
            "--enable-protected-configs",
            "local",
        ],
    );
    assert_eq!(cmd(n.port, &["SET", "k", "v"]), ok());
    assert_eq!(cmd(n.port, &["CONFIG", "SET", "dir", second.path()]), ok());
    let got = cmd(n.port, &["CONFIG", "GET", "dir"]);
    let canonical = std::fs::canonicalize(&second.0).expect("canonical");
    assert_eq!(
        got,
        bulks(&["dir", canonical.to_str().expect("utf-8")]),
        "CONFIG GET dir"
    );
    assert_eq!(cmd(n.port, &["SAVE"]), ok());
    assert!(second.rdb().exists() && !first.rdb().exists());
    assert_eq!(
        cmd(n.port, &["CONFIG", "SET", "dir", "/nonexistent/slotgate"]),
        Frame::Error(
            "ERR CONFIG SET failed (possibly related to argument 'dir') - No such file or directory"
                .into()
        )
    );
    assert_eq!(
        cmd(n.port, &["CONFIG", "SET", "dbfilename", "a/b.rdb"]),
        Frame::Error(
            "ERR CONFIG SET failed (possibly related to argument 'dbfilename') - dbfilename can't be a path, just a filename"
                .into()
        )
    );
    assert_eq!(
        cmd(n.port, &["CONFIG", "SET", "save", "1 2 3"]),
        Frame::Error(
            "ERR CONFIG SET failed (possibly related to argument 'save') - Invalid save parameters"
                .into()
        )
    );
}

/// The binaries the differential persistence tests run: slotgate-node, and redis-server when
/// installed (required in CI).
fn both_servers() -> Vec<PathBuf> {
    let mut bins = vec![node_bin()];
    if let Some(redis) = require_peer("redis-server") {
        bins.push(redis);
    }
    bins
}

/// Waits until no background save runs on `port`.
fn wait_bgsave_done(port: u16) {
    wait_until("background save finished", Duration::from_secs(20), || {
        info(port, "persistence").get("rdb_bgsave_in_progress") == Some(&"0".to_string())
    });
}

/// Starts `bin` with save points, protected configs enabled, and its data in `data/` of a
/// new [`DataDir`] (which the caller removes to make saves fail; `data2/` is where it can
/// move the server with CONFIG SET dir afterwards).
fn start_losing_its_dir(bin: &Path, tag: &str) -> (DataDir, Proc) {
    let dir = DataDir::new(tag);
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let s = spawn_server(
        bin,
        &[
            "--dir",
            data.to_str().expect("utf-8"),
            "--save",
            "3600 1",
            "--enable-protected-configs",
            "yes",
        ],
    );
    (dir, s)
}

/// `stop-writes-on-bgsave-error`: after a failed BGSAVE (its directory removed), writes and
/// PING get MISCONF while reads work, a write queued in MULTI aborts the transaction, and
/// writes come back with `stop-writes-on-bgsave-error no`, without save points, or after a
/// good SAVE. slotgate-node and redis-server give the same replies.
#[test]
fn failed_bgsave_stops_writes_like_redis() {
    let mut runs = Vec::new();
    for bin in both_servers() {
        let (dir, s) = start_losing_its_dir(&bin, "misconf");
        let (data, data2) = (dir.0.join("data"), dir.0.join("data2"));
        let mut r = Raw::connect(s.port);
        let mut replies = vec![r.cmd(&["SET", "a", "1"])];
        std::fs::remove_dir_all(&data).expect("remove data dir");
        replies.push(r.cmd(&["BGSAVE"]));
        wait_bgsave_done(s.port);
        assert_eq!(
            info(s.port, "persistence")
                .get("rdb_last_bgsave_status")
                .map(String::as_str),
            Some("err"),
            "{bin:?}"
        );
        for c in [
            &["SET", "b", "2"][..],
            &["PING"],
            &["GET", "a"],
            &["MULTI"],
            &["SET", "c", "3"],
            &["EXEC"],
            &["MULTI"],
            &["GET", "a"],
            &["EXEC"],
            &["CONFIG", "SET", "stop-writes-on-bgsave-error", "no"],
            &["SET", "b", "2"],
            &["CONFIG", "SET", "stop-writes-on-bgsave-error", "yes"],
            &["SET", "b", "3"],
            &["CONFIG", "SET", "save", ""],
            &["SET", "b", "4"],
            &["CONFIG", "SET", "save", "3600 1"],
            &["SET", "b", "5"],
        ] {
            replies.push(r.cmd(c));
        }
        std::fs::create_dir_all(&data2).expect("data2 dir");
        replies.push(r.cmd(&["CONFIG", "SET", "dir", data2.to_str().expect("utf-8")]));
        replies.push(r.cmd(&["SAVE"]));
        replies.push(r.cmd(&["SET", "b", "6"]));
        replies.push(r.cmd(&["PING"]));
        runs.push((bin, replies));
    }
    let misconf = Frame::Error(
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk. Commands that may modify the data set are disabled, because this instance is configured to report errors during writes if RDB snapshotting fails (stop-writes-on-bgsave-error option). Please check the Redis logs for details about the RDB error.".into(),
    );
    let node = &runs[0].1;
    assert_eq!(node[2], misconf, "SET after the failed BGSAVE");
    assert_eq!(node[3], misconf, "PING after the failed BGSAVE");
    assert_eq!(node[4], bulk("1"), "reads still work");
    assert_eq!(
        node[7],
        Frame::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(node[14], misconf, "writes stop again with the option back");
    assert_eq!(node[16], ok(), "no save points: writes go on");
    assert_eq!(node[18], misconf, "writes stop again with save points back");
    assert_eq!(
        &node[19..],
        &[ok(), ok(), ok(), Frame::Simple("PONG".into())],
        "a good SAVE ends the stop"
    );
    if let Some((bin, redis)) = runs.get(1) {
        assert_eq!(node, redis, "slotgate-node vs {bin:?}");
    }
}

/// A SIGTERM whose final save fails does not stop the server (redis-server: "Error trying
/// to save the DB, can't exit"), so the changes since the last save are not lost; once the
/// directory is writable again the next SIGTERM saves and exits.
#[test]
fn sigterm_does_not_exit_when_the_final_save_fails() {
    for bin in both_servers() {
        let (dir, mut s) = start_losing_its_dir(&bin, "sigterm");
        let (data, data2) = (dir.0.join("data"), dir.0.join("data2"));
        assert_eq!(cmd(s.port, &["SET", "k", "v"]), ok());
        std::fs::remove_dir_all(&data).expect("remove data dir");
        assert!(
            !s.terminate(Duration::from_millis(1500)),
            "{bin:?} exited although its final save failed"
        );
        assert_eq!(cmd(s.port, &["GET", "k"]), bulk("v"), "{bin:?}");
        std::fs::create_dir_all(&data2).expect("data2 dir");
        assert_eq!(
            cmd(
                s.port,
                &["CONFIG", "SET", "dir", data2.to_str().expect("utf-8")]
            ),
            ok()
        );
        assert!(
            s.terminate(Duration::from_secs(20)),
            "{bin:?} still running"
        );
        assert!(data2.join("dump.rdb").exists(), "{bin:?} saved nothing");
    }
}
