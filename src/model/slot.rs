//! The swap point between the learning loop and the scorer: one current value (a scorer and
//! what goes with it), replaced atomically while readers keep scoring.
//!
//! Why not a lock around the scorer: the scorer must never wait on training, and a reader
//! must never see half of a swap. Here a writer builds the whole new value first, then
//! publishes it with one pointer store under a short lock and bumps a generation counter.
//! A reader ([`SlotReader`]) keeps its own `Arc` of the value it scores with and checks the
//! generation (one atomic load) at each batch boundary: a batch is scored by exactly one
//! model, the reader takes the lock only when a swap happened, and the old value is freed
//! when its last batch is done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The current value and its generation (how many swaps happened).
pub struct ModelSlot<T> {
    current: Mutex<Arc<T>>,
    generation: AtomicU64,
}

impl<T> ModelSlot<T> {
    pub fn new(value: T) -> ModelSlot<T> {
        ModelSlot { current: Mutex::new(Arc::new(value)), generation: AtomicU64::new(0) }
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        // The lock guards a pointer copy only; a panic elsewhere cannot leave it inconsistent.
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Publishes `value`; readers pick it up at their next batch. Returns the new generation.
    pub fn store(&self, value: T) -> u64 {
        let value = Arc::new(value);
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        *cur = value;
        // Bumped under the lock, so a reader that sees the new generation loads the new value.
        self.generation.fetch_add(1, Ordering::Release) + 1
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A reader that follows this slot.
    pub fn reader(&self) -> SlotReader<'_, T> {
        let generation = self.generation();
        SlotReader { slot: self, cached: self.load(), generation }
    }
}

/// A scorer's handle on the slot: the value it uses until the next [`SlotReader::refresh`].
pub struct SlotReader<'a, T> {
    slot: &'a ModelSlot<T>,
    cached: Arc<T>,
    generation: u64,
}

impl<T> SlotReader<'_, T> {
    /// Takes the slot's current value if it changed; returns whether it did. Call at batch
    /// boundaries.
    pub fn refresh(&mut self) -> bool {
        let g = self.slot.generation();
        if g == self.generation {
            return false;
        }
        self.cached = self.slot.load();
        self.generation = g;
        true
    }

    pub fn get(&self) -> &Arc<T> {
        &self.cached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_a_swap_at_their_next_refresh() {
        let slot = ModelSlot::new(1u32);
        let mut r = slot.reader();
        assert!(!r.refresh());
        assert_eq!(**r.get(), 1);
        assert_eq!(slot.store(2), 1);
        // Until it refreshes, the reader keeps scoring with what it had.
        assert_eq!(**r.get(), 1);
        assert!(r.refresh());
        assert_eq!(**r.get(), 2);
        assert!(!r.refresh());
    }

    #[test]
    fn concurrent_swaps_are_never_torn() {
        // Each value is a pair that must stay equal; a reader checks every one it sees.
        let slot = ModelSlot::new((0u64, 0u64));
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=2000u64 {
                    slot.store((i, i));
                }
            });
            for _ in 0..2 {
                s.spawn(|| {
                    let mut r = slot.reader();
                    let mut last = 0;
                    for _ in 0..20_000 {
                        r.refresh();
                        let (a, b) = **r.get();
                        assert_eq!(a, b);
                        assert!(a >= last, "values only move forward");
                        last = a;
                    }
                });
            }
        });
        assert_eq!(slot.generation(), 2000);
        assert_eq!(*slot.load(), (2000, 2000));
    }
}
