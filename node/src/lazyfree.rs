//! Background freeing, as Redis's lazyfree thread: UNLINK and FLUSHALL/FLUSHDB ASYNC detach
//! what they delete under the shard lock and hand it to one thread that drops it, so freeing a
//! million-element value does not hold the shard (or the client) for the time it takes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// Values that cost more than this many allocations to free go to the background thread;
/// smaller ones are dropped at once (Redis's `LAZYFREE_THRESHOLD`).
pub const THRESHOLD: usize = 64;

/// Something to drop on the background thread, and how many objects it counts as.
type Garbage = (Box<dyn Send>, u64);

/// The background freeing thread and its counters (INFO `lazyfree_pending_objects`,
/// `lazyfreed_objects`).
pub struct LazyFree {
    /// None when the thread could not be started: everything is then dropped inline.
    tx: Mutex<Option<mpsc::Sender<Garbage>>>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    pending: AtomicU64,
    freed: AtomicU64,
}

impl LazyFree {
    /// Starts the thread (named `slotgate-lazyfree`); it ends when the `LazyFree` is dropped.
    pub fn new() -> LazyFree {
        let (tx, rx) = mpsc::channel::<Garbage>();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let started = std::thread::Builder::new()
            .name("slotgate-lazyfree".into())
            .spawn(move || {
                for (garbage, objects) in rx {
                    drop(garbage);
                    c.pending.fetch_sub(objects, Ordering::Relaxed);
                    c.freed.fetch_add(objects, Ordering::Relaxed);
                }
            })
            .is_ok();
        LazyFree {
            tx: Mutex::new(started.then_some(tx)),
            counts,
        }
    }

    /// Frees `garbage`, whose freeing costs about `effort` allocations: in the background
    /// when that is more than [`THRESHOLD`], else now.
    pub fn free<T: Send + 'static>(&self, garbage: T, effort: usize) {
        if effort > THRESHOLD {
            self.send(Box::new(garbage), 1);
        }
    }

    /// Frees the maps of a flushed database (`keys` keys) in the background, as FLUSHALL /
    /// FLUSHDB ASYNC; they count as `keys` objects.
    pub fn free_keys<T: Send + 'static>(&self, garbage: T, keys: usize) {
        if keys > 0 {
            self.send(Box::new(garbage), keys as u64);
        }
    }

    /// Hands `garbage` to the thread (drops it here if the thread is gone).
    fn send(&self, garbage: Box<dyn Send>, objects: u64) {
        let tx = match self.tx.lock() {
            Ok(g) => g.clone(),
            Err(_) => None,
        };
        if let Some(tx) = tx {
            self.counts.pending.fetch_add(objects, Ordering::Relaxed);
            if let Err(mpsc::SendError(g)) = tx.send((garbage, objects)) {
                self.counts.pending.fetch_sub(objects, Ordering::Relaxed);
                drop(g);
            }
        }
    }

    /// Objects handed over and not freed yet.
    pub fn pending(&self) -> u64 {
        self.counts.pending.load(Ordering::Relaxed)
    }

    /// Objects freed in the background so far.
    pub fn freed(&self) -> u64 {
        self.counts.freed.load(Ordering::Relaxed)
    }
}

impl Default for LazyFree {
    fn default() -> Self {
        LazyFree::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_values_are_freed_in_the_background_small_ones_at_once() {
        let lf = LazyFree::new();
        lf.free(vec![0u8; 10], 1);
        lf.free(vec![vec![0u8; 10]; 1000], 1000);
        for _ in 0..1000 {
            if lf.freed() == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!((lf.freed(), lf.pending()), (1, 0));
    }
}
