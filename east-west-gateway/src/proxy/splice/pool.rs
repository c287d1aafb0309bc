//! A per-thread, bounded, last-in-first-out pool of copy buffers.
//!
//! A copy direction gives its buffer back whenever a read would wait (an idle connection holds
//! none) and takes one when bytes arrive. Without a pool each of those is a malloc and a free;
//! past glibc's mmap threshold that is an mmap, a page fault and a zeroed page per 4 KiB, and a
//! munmap, and every buffer starts cold. Last-in-first-out hands out the buffer written most
//! recently, still in cache, so many bulk connections on one thread cycle through a few hot
//! buffers instead of one cold buffer each.
//!
//! Bounded by [`POOL_BYTES`] per thread: the pool holds at most what was in use at once, up to
//! that figure; the rest goes back to the allocator.

use std::cell::RefCell;

/// Most bytes of free buffers one thread keeps.
pub(super) const POOL_BYTES: usize = 2 * 1024 * 1024;

#[derive(Default)]
struct Pool {
    /// Free buffers, each empty, most recently returned last.
    free: Vec<Vec<u8>>,
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// An empty buffer with room for `capacity` bytes (less than twice that): the most recently
/// returned one of that size, or a new one.
pub(super) fn take(capacity: usize) -> Vec<u8> {
    let pooled = POOL
        .try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let fits = |b: &Vec<u8>| b.capacity() >= capacity && b.capacity() / 2 < capacity;
            let index = pool.free.iter().rposition(fits)?;
            let buf = pool.free.remove(index);
            pool.bytes -= buf.capacity();
            Some(buf)
        })
        .ok()
        .flatten();
    pooled.unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// Returns `buf` to this thread's pool, or frees it if the pool is full.
pub(super) fn give(mut buf: Vec<u8>) {
    let capacity = buf.capacity();
    if capacity == 0 {
        return;
    }
    buf.clear();
    // During thread teardown the pool may be gone; the buffer is simply freed then.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.bytes + capacity <= POOL_BYTES {
            pool.bytes += capacity;
            pool.free.push(buf);
        }
    });
}

/// Bytes of free buffers this thread holds (tests).
#[cfg(test)]
pub(super) fn pooled_bytes() -> usize {
    POOL.with_borrow(|pool| pool.bytes)
}
