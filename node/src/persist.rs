//! RDB persistence, as redis-server: SAVE and BGSAVE write the keyspace to `dbfilename` in
//! `dir` (Redis's RDB format: redis-server loads it, and we load its files), the `save` points
//! start background saves, SHUTDOWN and SIGTERM save when save points are set, and startup
//! loads the file.
//!
//! A save copies the keyspace under every shard lock (a short pause, as for a replica's full
//! sync), then serializes and writes the copy; BGSAVE does that on its own thread. The file is
//! written to a temporary name, synced, and renamed over the old one, so a crash mid-save
//! leaves the previous file intact.

use crate::db::{Entry, Key, Locked};
use crate::replication::master::{copy_keyspace, write_snapshot, Snapshot};
use crate::server::Server;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reply to SAVE/BGSAVE while a background save runs.
pub const ERR_IN_PROGRESS: &str = "ERR Background save already in progress";

/// Save state for INFO persistence and the save points.
pub struct Persistence {
    /// A background save is running.
    in_progress: AtomicBool,
    /// The last background save succeeded (`rdb_last_bgsave_status`).
    pub last_ok: AtomicBool,
    /// Unix seconds of the last attempt (a failed one is retried after 5 s, as Redis).
    last_try: AtomicU64,
    /// Seconds the last background save took (-1 before the first).
    pub last_secs: AtomicI64,
    /// Unix seconds the running background save started (0 when none).
    pub started: AtomicU64,
    /// Saves done (`rdb_saves`).
    pub saves: AtomicU64,
    /// BGSAVE SCHEDULE asked for a save after the running one.
    pub scheduled: AtomicBool,
    /// SHUTDOWN already made (or skipped) the final save.
    pub final_done: AtomicBool,
    /// Bytes held by keyspace copies being saved or sent (see [`CopyCharge`]).
    pub copies: Arc<AtomicU64>,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            in_progress: AtomicBool::new(false),
            last_ok: AtomicBool::new(true),
            last_try: AtomicU64::new(0),
            last_secs: AtomicI64::new(-1),
            started: AtomicU64::new(0),
            saves: AtomicU64::new(0),
            scheduled: AtomicBool::new(false),
            final_done: AtomicBool::new(false),
            copies: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Persistence {
    /// True while a background save runs (`rdb_bgsave_in_progress`).
    pub fn in_progress(&self) -> bool {
        self.in_progress.load(Ordering::Acquire)
    }
}

/// A copy of every database's keys.
pub type KeyspaceCopy = Vec<(usize, Vec<(Key, Entry)>)>;

/// The memory of a keyspace copy being saved or sent to a replica: counted in
/// [`Persistence::copies`] while it lives, so `maxmemory` does not evict keys for a copy that
/// is about to be freed (Redis's fork does not count either).
pub struct CopyCharge {
    bytes: u64,
    counter: Arc<AtomicU64>,
}

impl CopyCharge {
    /// A charge of `bytes` on `counter`.
    pub fn new(counter: &Arc<AtomicU64>, bytes: u64) -> CopyCharge {
        counter.fetch_add(bytes, Ordering::Relaxed);
        CopyCharge {
            bytes,
            counter: counter.clone(),
        }
    }

    /// Changes the charge to `bytes` (a buffer that grew).
    pub fn resize(&mut self, bytes: u64) {
        if bytes >= self.bytes {
            self.counter
                .fetch_add(bytes - self.bytes, Ordering::Relaxed);
        } else {
            self.counter
                .fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
    }
}

impl Drop for CopyCharge {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Copies the keyspace `l` holds locked (every shard) and charges the copy's memory (what was
/// allocated while copying: the other threads wait on the locks meanwhile).
pub fn charged_copy(server: &Server, l: &mut Locked) -> (KeyspaceCopy, CopyCharge) {
    let before = crate::alloc::used();
    let dbs = copy_keyspace(l);
    let bytes = crate::alloc::used().saturating_sub(before);
    (dbs, CopyCharge::new(&server.persist.copies, bytes))
}

/// The save points of the `save` directive: (seconds, changes) pairs.
pub fn save_points(server: &Server) -> Vec<(u64, u64)> {
    let c = server.config.read();
    let words: Vec<u64> = c
        .get("save")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    words.chunks_exact(2).map(|p| (p[0], p[1])).collect()
}

fn now_secs() -> u64 {
    crate::db::now_ms() / 1000
}

/// A consistent copy of the keyspace and the changes count it includes.
fn snapshot(server: &Server) -> (Snapshot, u64) {
    // Only the databases in use are locked (creating the others costs memory); a write to a
    // database created meanwhile comes after this cut.
    let mut l = Locked::new(&server.ks, 0, crate::db::now_ms());
    l.lock_everything();
    let dirty = server.stats.dirty.load(Ordering::Relaxed);
    let (dbs, charge) = charged_copy(server, &mut l);
    drop(l);
    let snap = Snapshot {
        dbs,
        stream_db: server.repl.stream_db(),
        offset: server.repl.offset(),
        replid: server.repl.replid(),
        charge: Some(charge),
    };
    (snap, dirty)
}

/// Serializes `snap` and writes it over `dbfilename` (in the working directory, which is
/// `dir`) through a temporary file.
fn write(server: &Server, snap: &Snapshot) -> std::io::Result<()> {
    use std::io::Write;
    let name = server.config.read().get("dbfilename").to_string();
    let tmp = format!("temp-{}-{}.rdb", std::process::id(), rand::random::<u32>());
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write_snapshot(snap, &mut |b| f.write_all(b))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &name)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// After a save that included `dirty` changes: the changes since, LASTSAVE, the counters.
fn saved(server: &Server, dirty: u64) {
    let now = server.stats.dirty.load(Ordering::Relaxed);
    server
        .stats
        .dirty
        .store(now.saturating_sub(dirty), Ordering::Relaxed);
    server.last_save.store(now_secs(), Ordering::Relaxed);
    server.persist.saves.fetch_add(1, Ordering::Relaxed);
}

/// SAVE: saves now, in the caller's thread. Errors are logged and returned as the reply text.
pub fn save(server: &Server) -> Result<(), String> {
    if server.persist.in_progress() {
        return Err(ERR_IN_PROGRESS.into());
    }
    let (snap, dirty) = snapshot(server);
    match write(server, &snap) {
        Ok(()) => {
            saved(server, dirty);
            // As redis-server's rdbSave: a good save clears a background save's error.
            server.persist.last_ok.store(true, Ordering::Relaxed);
            server.log.notice("DB saved on disk");
            Ok(())
        }
        Err(e) => {
            server.log.warning(&format!(
                "Failed opening the temp RDB file for writing: {e}"
            ));
            Err("ERR".into())
        }
    }
}

/// BGSAVE: copies the keyspace now and writes it on a thread of its own.
pub fn bgsave(server: &Arc<Server>) -> Result<(), &'static str> {
    let p = &server.persist;
    if p.in_progress.swap(true, Ordering::AcqRel) {
        return Err(ERR_IN_PROGRESS);
    }
    let start = Instant::now();
    p.started.store(now_secs(), Ordering::Relaxed);
    p.last_try.store(now_secs(), Ordering::Relaxed);
    let (snap, dirty) = snapshot(server);
    server.log.notice(&format!(
        "Background saving started by pid {}",
        std::process::id()
    ));
    let srv = server.clone();
    let job = move || {
        let res = write(&srv, &snap);
        drop(snap);
        let p = &srv.persist;
        p.last_secs
            .store(start.elapsed().as_secs() as i64, Ordering::Relaxed);
        match res {
            Ok(()) => {
                saved(&srv, dirty);
                p.last_ok.store(true, Ordering::Relaxed);
                srv.log.notice("DB saved on disk");
                srv.log.notice("Background saving terminated with success");
            }
            Err(e) => {
                p.last_ok.store(false, Ordering::Relaxed);
                srv.log
                    .warning(&format!("Write error saving DB on disk: {e}"));
                srv.log.warning("Background saving error");
            }
        }
        p.started.store(0, Ordering::Relaxed);
        p.in_progress.store(false, Ordering::Release);
    };
    if std::thread::Builder::new()
        .name("slotgate-bgsave".into())
        .spawn(job)
        .is_err()
    {
        p.in_progress.store(false, Ordering::Release);
        p.last_ok.store(false, Ordering::Relaxed);
        server
            .log
            .warning("Can't save in background: thread spawn failed");
        return Err("ERR Background save failed to start");
    }
    Ok(())
}

/// Waits (bounded) for a running background save to end: SHUTDOWN must not exit mid-write.
pub fn wait_for_bgsave(server: &Server, limit: Duration) {
    let t = Instant::now();
    while server.persist.in_progress() && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The final save of a shutdown (SHUTDOWN, SIGTERM): when `force_save`, or when save points
/// are set and not `nosave`. Returns false when the save was needed and failed.
pub fn save_on_shutdown(server: &Server, force_save: bool, nosave: bool) -> bool {
    if nosave || (!force_save && save_points(server).is_empty()) {
        return true;
    }
    wait_for_bgsave(server, Duration::from_secs(60));
    server
        .log
        .notice("Saving the final RDB snapshot before exiting.");
    match save(server) {
        Ok(()) => true,
        Err(_) => {
            server
                .log
                .warning("Error trying to save the DB, can't exit.");
            false
        }
    }
}

/// After FLUSHALL with save points set: writes the (now empty) keyspace at once, as Redis,
/// so a restart does not bring the flushed keys back. Called with every shard locked: the
/// keyspace is known to be empty, so nothing is copied.
pub fn save_flushed(server: &Server) -> bool {
    wait_for_bgsave(server, Duration::from_secs(60));
    let snap = Snapshot {
        dbs: Vec::new(),
        stream_db: server.repl.stream_db(),
        offset: server.repl.offset(),
        replid: server.repl.replid(),
        charge: None,
    };
    match write(server, &snap) {
        Ok(()) => {
            saved(server, server.stats.dirty.load(Ordering::Relaxed));
            server.log.notice("DB saved on disk");
            true
        }
        Err(e) => {
            server.log.warning(&format!("Error saving DB on disk: {e}"));
            false
        }
    }
}

/// Loads `dbfilename` at startup if it exists. Expired keys are skipped (a master's load).
/// A file that cannot be read is fatal, as in Redis.
pub fn load(server: &Server) -> Result<(), String> {
    let name = server.config.read().get("dbfilename").to_string();
    let data = match std::fs::read(&name) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("Fatal error loading the DB: {e}. Exiting.")),
    };
    let started = Instant::now();
    let now = crate::db::now_ms();
    let dbs = server.ks.count();
    let (mut loaded, mut expired) = (0usize, 0usize);
    let mut l = Locked::new(&server.ks, 0, now);
    let res = crate::rdb::read_file(
        &data,
        |_, _| {},
        |fk| {
            if fk.db >= dbs {
                return;
            }
            if fk.expire_at != 0 && fk.expire_at <= now {
                expired += 1;
                return;
            }
            l.set_db(fk.db);
            l.set_entry(&fk.key, Entry::with_expiry(fk.value, fk.expire_at));
            l.unlock();
            loaded += 1;
        },
    );
    drop(l);
    if let Err(e) = res {
        return Err(format!(
            "Short read or OOM loading DB. Unrecoverable error, aborting now. ({e})"
        ));
    }
    server.stats.dirty.store(0, Ordering::Relaxed);
    server.log.notice(&format!(
        "Done loading RDB, keys loaded: {loaded}, keys expired: {expired}."
    ));
    server.log.notice(&format!(
        "DB loaded from disk: {:.3} seconds",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The save points: every second, a background save when one of them is reached (a failed
/// save is retried after 5 s).
pub async fn cron(server: Arc<Server>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let p = &server.persist;
        if p.in_progress() || server.shutting_down.load(Ordering::Acquire) {
            continue;
        }
        let now = now_secs();
        let dirty = server.stats.dirty.load(Ordering::Relaxed);
        let since = now.saturating_sub(server.last_save.load(Ordering::Relaxed));
        let retry_ok =
            p.last_ok.load(Ordering::Relaxed) || now >= p.last_try.load(Ordering::Relaxed) + 5;
        if p.scheduled.swap(false, Ordering::AcqRel) {
            let _ = bgsave(&server);
            continue;
        }
        let due = save_points(&server)
            .into_iter()
            .find(|&(secs, changes)| dirty >= changes && since >= secs);
        if let (Some((secs, changes)), true) = (due, retry_ok) {
            server
                .log
                .notice(&format!("{changes} changes in {secs} seconds. Saving..."));
            let _ = bgsave(&server);
        }
    }
}
