//! A worker's spare client buffers. A client takes a buffer when it has input to read or
//! replies to write and gives it back once they are handled, so idle clients hold none and a
//! busy one does not pay an allocation and a free per request.

use bytes::BytesMut;
use parking_lot::Mutex;

/// Buffers kept at most (per worker).
const KEEP: usize = 64;
/// Larger buffers are freed rather than kept, so a burst of big requests does not stay
/// resident.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Spare empty buffers of one worker (only its own thread uses it, so the lock is never
/// contended).
#[derive(Default)]
pub struct BufCache {
    free: Mutex<Vec<BytesMut>>,
}

impl BufCache {
    /// An empty buffer, a spare one when there is one.
    pub fn take(&self) -> BytesMut {
        self.free.lock().pop().unwrap_or_default()
    }

    /// Takes `buf` back (emptied), or frees it when it is large or the cache is full. (The
    /// next `reserve` on a kept buffer reuses its storage in place once no `Bytes` split off
    /// it is alive any more.)
    pub fn give(&self, mut buf: BytesMut) {
        let cap = buf.capacity();
        if cap == 0 || cap > KEEP_CAPACITY {
            return;
        }
        buf.clear();
        let mut free = self.free.lock();
        if free.len() < KEEP {
            free.push(buf);
        }
    }
}
