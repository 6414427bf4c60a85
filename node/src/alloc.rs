//! Memory accounting: a global allocator over the system's that counts the bytes in use, as
//! Redis's zmalloc does, so INFO `used_memory` and `maxmemory` see what the data costs rather
//! than the RSS (which the C allocator rarely gives back).
//!
//! Each of the first threads adds to a cache line of its own with a plain (unlocked) update, so
//! two cores allocating at once neither bounce one line nor pay for atomic adds; threads past
//! [`STRIPES`] share the last counter atomically. A reader sums the stripes.
//!
//! Sizes are charged as glibc's malloc chunks (header included, rounded to 16 bytes, at least
//! 32), which is what an allocation really takes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// Number of counters: the first threads (the I/O workers and the runtimes' threads start
/// first) get one each; later threads share the last one.
pub const STRIPES: usize = 32;
const SHARED: usize = STRIPES - 1;

#[repr(align(64))]
struct Stripe(AtomicIsize);

/// The counters of the one [`Counting`] allocator: bytes in use per stripe, and the next
/// stripe to give a new thread.
struct Counters {
    stripes: [Stripe; STRIPES],
    next: AtomicUsize,
}

static COUNTERS: Counters = Counters {
    stripes: [const { Stripe(AtomicIsize::new(0)) }; STRIPES],
    next: AtomicUsize::new(0),
};

thread_local! {
    /// This thread's stripe (`usize::MAX` until its first allocation). No destructor, so it
    /// stays usable while the thread ends; a stripe is never given to another thread.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// What an allocation of `size` bytes takes from glibc's malloc.
#[inline]
fn charge(size: usize) -> isize {
    ((size + 8 + 15) & !15).max(32) as isize
}

#[inline]
fn add(bytes: isize) {
    let i = STRIPE
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = COUNTERS.next.fetch_add(1, Ordering::Relaxed).min(SHARED);
                s.set(i);
            }
            i
        })
        .unwrap_or(SHARED);
    let stripe = &COUNTERS.stripes[i].0;
    if i < SHARED {
        // This thread's own stripe: no other thread writes it, so no locked instruction.
        stripe.store(stripe.load(Ordering::Relaxed) + bytes, Ordering::Relaxed);
    } else {
        stripe.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The system allocator, counting. `slotgate-node`'s binary installs it as the global allocator.
pub struct Counting;

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated around it.
unsafe impl GlobalAlloc for Counting {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(charge(layout.size()));
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(charge(layout.size()));
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        add(-charge(layout.size()));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(charge(new_size) - charge(layout.size()));
        }
        p
    }
}

/// Bytes allocated through [`Counting`] and not yet freed; 0 when it is not the global
/// allocator (unit tests).
pub fn used() -> u64 {
    let sum: isize = COUNTERS
        .stripes
        .iter()
        .map(|s| s.0.load(Ordering::Relaxed))
        .sum();
    sum.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_like_glibc_chunks() {
        assert_eq!(charge(0), 32);
        assert_eq!(charge(24), 32);
        assert_eq!(charge(25), 48);
        assert_eq!(charge(64), 80);
        assert_eq!(charge(1000), 1008);
    }
}
