//! The simulator's event queue: a calendar of one bucket per millisecond
//! for the next `WINDOW` ms and a heap for what lies beyond.
//!
//! Events come out in the order a binary heap of `(time, insertion order)`
//! gives (the simulator's determinism rests on it), but an insert and a
//! pop cost O(1) instead of O(log n): at 10,000 viewers the heap held
//! about a million events and its sift-downs took 12 % of the run
//! (docs/benchmarks/simulator.md).
//!
//! Why the order is the same: an event within the window goes to the back
//! of its bucket; one beyond it waits in the heap and moves to its bucket
//! the moment its time enters the window, which is before any event of the
//! same time can go straight into that bucket. So each bucket holds its
//! events in insertion order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Milliseconds covered by buckets (a power of two).
const WINDOW: u64 = 1 << 14;

/// Items of type `T` due at integer times, popped in (time, insertion) order.
pub struct Calendar<T> {
    buckets: Vec<Vec<T>>,
    /// How far the bucket of `now` has been read.
    read: usize,
    /// The time of the bucket being read; nothing earlier remains.
    now: u64,
    /// Items in buckets.
    len: usize,
    far: BinaryHeap<Reverse<(u64, u64, Slot<T>)>>,
    order: u64,
}

/// A heap entry that compares by time and order only.
struct Slot<T>(T);

impl<T> PartialEq for Slot<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Slot<T> {}
impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Slot<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<T> Default for Calendar<T> {
    fn default() -> Self {
        Self {
            buckets: (0..WINDOW).map(|_| Vec::new()).collect(),
            read: 0,
            now: 0,
            len: 0,
            far: BinaryHeap::new(),
            order: 0,
        }
    }
}

impl<T> Calendar<T> {
    /// Adds `item` due at `at` (an `at` in the past is due now).
    pub fn push(&mut self, at: u64, item: T) {
        let at = at.max(self.now);
        if at - self.now < WINDOW {
            self.buckets[(at % WINDOW) as usize].push(item);
            self.len += 1;
        } else {
            self.order += 1;
            self.far.push(Reverse((at, self.order, Slot(item))));
        }
    }

    /// The next item and its time.
    pub fn pop(&mut self) -> Option<(u64, T)>
    where
        T: Copy,
    {
        loop {
            let b = &self.buckets[(self.now % WINDOW) as usize];
            if self.read < b.len() {
                let item = b[self.read];
                self.read += 1;
                self.len -= 1;
                return Some((self.now, item));
            }
            // This millisecond is done.
            self.buckets[(self.now % WINDOW) as usize].clear();
            self.read = 0;
            if self.len == 0 {
                // Jump to the next far item, if any.
                let Reverse((t, _, _)) = self.far.peek()?;
                self.now = *t;
            } else {
                self.now += 1;
            }
            // Far items whose time entered the window go to their buckets,
            // in their order, before anything else can be added there.
            while let Some(Reverse((t, _, _))) = self.far.peek() {
                if *t - self.now >= WINDOW {
                    break;
                }
                if let Some(Reverse((t, _, Slot(item)))) = self.far.pop() {
                    self.buckets[(t % WINDOW) as usize].push(item);
                    self.len += 1;
                }
            }
        }
    }
}

/// Events of any type in a [`Calendar`]: the events stay in a slab and the
/// calendar moves their 4-byte slot numbers.
pub struct Queue<E> {
    cal: Calendar<u32>,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Self {
            cal: Calendar::default(),
            slab: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<E> Queue<E> {
    /// Adds `ev` due at `at` (an `at` in the past is due now).
    pub fn push(&mut self, at: u64, ev: E) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(ev);
                i
            }
            None => {
                self.slab.push(Some(ev));
                (self.slab.len() - 1) as u32
            }
        };
        self.cal.push(at, slot);
    }

    /// The next event and its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        loop {
            let (at, slot) = self.cal.pop()?;
            if let Some(ev) = self.slab[slot as usize].take() {
                self.free.push(slot);
                return Some((at, ev));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng as _, SeedableRng as _};

    #[test]
    fn pops_in_time_then_insertion_order_like_a_heap() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut cal = Calendar::default();
        let mut heap = BinaryHeap::new();
        let mut order = 0u64;
        let mut now = 0u64;
        let mut out_cal = Vec::new();
        let mut out_heap = Vec::new();
        for _ in 0..200 {
            order += 1;
            cal.push(now, order);
            heap.push(Reverse((now, order)));
        }
        // Pop one, push a few at random distances (some beyond the window,
        // some at the same time), as the simulator does.
        for _ in 0..200_000 {
            let Some((t, x)) = cal.pop() else { break };
            let Some(Reverse((ht, hx))) = heap.pop() else {
                panic!("the heap ran out first")
            };
            out_cal.push((t, x));
            out_heap.push((ht, hx));
            now = t;
            for _ in 0..rng.random_range(0..3) {
                let d = match rng.random_range(0..10) {
                    0 => 0,
                    1 => rng.random_range(WINDOW - 2..WINDOW * 3),
                    _ => rng.random_range(0..500),
                };
                order += 1;
                cal.push(now + d, order);
                heap.push(Reverse((now + d, order)));
            }
        }
        assert!(out_cal.len() > 1000);
        assert_eq!(out_cal, out_heap);
        while let Some(Reverse(h)) = heap.pop() {
            assert_eq!(cal.pop(), Some(h));
        }
        assert_eq!(cal.pop(), None);
    }

    #[test]
    fn jumps_over_long_silences() {
        let mut cal = Calendar::default();
        cal.push(5, 'a');
        cal.push(10 * WINDOW + 3, 'b');
        cal.push(10 * WINDOW + 3, 'c');
        cal.push(40 * WINDOW, 'd');
        assert_eq!(cal.pop(), Some((5, 'a')));
        assert_eq!(cal.pop(), Some((10 * WINDOW + 3, 'b')));
        // Pushed while reading that millisecond: after what is there.
        cal.push(10 * WINDOW + 3, 'e');
        cal.push(0, 'f');
        assert_eq!(cal.pop(), Some((10 * WINDOW + 3, 'c')));
        assert_eq!(cal.pop(), Some((10 * WINDOW + 3, 'e')));
        assert_eq!(cal.pop(), Some((10 * WINDOW + 3, 'f')));
        assert_eq!(cal.pop(), Some((40 * WINDOW, 'd')));
        assert_eq!(cal.pop(), None);
    }
}
