//! The order in which ended flows reach everything that depends on order: the `ct_*` window,
//! the threshold calibrator, the learning loop's reservoir, the output files.
//!
//! UNSW-NB15 counts its `ct_*` features over "the last 100 connection records" ordered by last
//! time (`ltime`). A flow table exports records out of that order (a closed TCP connection
//! leaves after a 2 s linger, an idle one after its 60 s timeout), and the pipeline's flow
//! workers deliver them in whatever order the threads happen to run. So the order is defined by
//! the records alone ([`OrderKey`]) and restored by a [`Reorder`] buffer that releases a record
//! only when no source can still produce one that sorts before it (every source's low mark has
//! passed it). The result is the same for one table or many workers, any batch size, any run.
//!
//! The key's time is [`StreamTime`]: the capture clock at the flow's last packet within the
//! clock epoch. It equals `ltime` except when that packet arrived out of order (older than the
//! clock); ordering by the clock rather than the packet's own time is what lets a table state a
//! bound ([`crate::flow::FlowTable::low_mark`]) that a late packet can never undercut.

use std::cmp::Ordering;
use std::net::IpAddr;

use super::record::FlowRecord;
use crate::capture::Timestamp;

/// A point on the stream's clock: the capture clock, within the count of clock restarts so far
/// (concatenated captures whose time jumps back start a new epoch, which sorts after the old).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamTime {
    pub epoch: u32,
    pub clock: Timestamp,
}

impl StreamTime {
    /// Before every record.
    pub const MIN: StreamTime = StreamTime { epoch: 0, clock: Timestamp(i64::MIN) };
    /// After every record: a source that has ended.
    pub const MAX: StreamTime = StreamTime { epoch: u32::MAX, clock: Timestamp(i64::MAX) };
}

/// Where a record stands in the window order: its [`StreamTime`], then fields of the record
/// itself for a tie (start time, 5-tuple, VLAN, sizes), so that two workers' records at the same
/// instant always come in the same order. Never the flow id, which depends on the worker count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrderKey {
    last: StreamTime,
    first_ts: Timestamp,
    last_ts: Timestamp,
    proto: u8,
    orig_addr: IpAddr,
    orig_port: u16,
    resp_addr: IpAddr,
    resp_port: u16,
    vlan: u32,
    pkts: u64,
    bytes: u64,
}

impl OrderKey {
    pub fn of(r: &FlowRecord) -> OrderKey {
        OrderKey {
            last: r.last_clock,
            first_ts: r.first_ts,
            last_ts: r.last_ts,
            proto: r.proto,
            orig_addr: r.orig_addr,
            orig_port: r.orig_port,
            resp_addr: r.resp_addr,
            resp_port: r.resp_port,
            vlan: r.vlan,
            pkts: r.orig.pkts + r.resp.pkts,
            bytes: r.orig.wire_bytes + r.resp.wire_bytes,
        }
    }
}

/// A held record's place in the heap: its time, and the slot where the record and the rest of
/// its key wait. The heap moves these 24 bytes, never records (some 700 bytes) nor whole keys
/// (about 100), and looks a key up only when two times tie.
#[derive(Clone, Copy)]
struct Held {
    last: StreamTime,
    slot: u32,
}

/// Whether `a` comes before `b` in [`OrderKey`] order.
fn before(keys: &[OrderKey], a: Held, b: Held) -> bool {
    match a.last.cmp(&b.last) {
        Ordering::Equal => keys[a.slot as usize] < keys[b.slot as usize],
        o => o == Ordering::Less,
    }
}

/// What the buffer did that the order did not plan for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReorderStats {
    /// Most records held at once.
    pub peak_held: usize,
    /// Records released before every source had passed them, because the buffer was full
    /// (`limit`): their `ct_*` counts may differ from an unhurried run.
    pub released_early: u64,
    /// Records that came behind one already released (a source broke its low mark, or came
    /// after an early release): passed on at once, counted.
    pub late: u64,
}

/// Holds records from `sources` producers and releases them in [`OrderKey`] order, each once
/// every source's low mark is past it.
#[derive(Clone)]
pub struct Reorder<T> {
    /// A binary min-heap in [`OrderKey`] order.
    heap: Vec<Held>,
    /// The held records and their keys by slot (reused through `free`).
    items: Vec<Option<T>>,
    keys: Vec<OrderKey>,
    free: Vec<u32>,
    marks: Vec<StreamTime>,
    /// The least of `marks`: records strictly before it are final.
    floor: StreamTime,
    /// The key of the last record released.
    released: Option<OrderKey>,
    limit: usize,
    stats: ReorderStats,
}

impl<T> Reorder<T> {
    /// A buffer for `sources` producers holding at most `limit` records (memory stays bounded
    /// under a flood of short connections; past it the oldest record goes early, counted).
    pub fn new(sources: usize, limit: usize) -> Reorder<T> {
        Reorder {
            heap: Vec::new(),
            items: Vec::new(),
            keys: Vec::new(),
            free: Vec::new(),
            marks: vec![StreamTime::MIN; sources.max(1)],
            floor: StreamTime::MIN,
            released: None,
            limit: limit.max(1),
            stats: ReorderStats::default(),
        }
    }

    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Takes a record from a source.
    pub fn push(&mut self, key: OrderKey, item: T) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.items[s as usize] = Some(item);
                self.keys[s as usize] = key;
                s
            }
            None => {
                self.items.push(Some(item));
                self.keys.push(key);
                (self.items.len() - 1) as u32
            }
        };
        self.heap_push(Held { last: key.last, slot });
        self.stats.peak_held = self.stats.peak_held.max(self.heap.len());
    }

    /// Source `source` will produce no record whose time is before `mark` (its marks never go
    /// back; a smaller one is ignored).
    pub fn advance(&mut self, source: usize, mark: StreamTime) {
        let Some(m) = self.marks.get_mut(source) else { return };
        if mark <= *m {
            return;
        }
        let was_floor = *m == self.floor;
        *m = mark;
        if was_floor {
            self.floor = self.marks.iter().copied().min().unwrap_or(StreamTime::MAX);
        }
    }

    /// The next record whose turn has come, if any.
    pub fn pop_ready(&mut self) -> Option<T> {
        let slot = self.next_ready()?;
        self.take(slot)
    }

    /// Hands every record whose turn has come to `f`, in order, by reference: a flow record is
    /// some 600 bytes, and moving each out of the buffer showed in the flow-heavy profile.
    pub fn drain_ready(&mut self, mut f: impl FnMut(&T)) {
        while let Some(slot) = self.next_ready() {
            if let Some(item) = self.items.get_mut(slot as usize) {
                if let Some(item) = item.as_ref() {
                    f(item);
                }
                *item = None;
            }
            self.free.push(slot);
        }
    }

    /// Every held record in order, regardless of marks (all sources have ended).
    pub fn pop_any(&mut self) -> Option<T> {
        let slot = self.next_slot()?;
        self.take(slot)
    }

    /// The slot of the next record whose turn has come, taken off the heap.
    fn next_ready(&mut self) -> Option<u32> {
        let ready = match self.heap.first() {
            None => return None,
            Some(h) => h.last < self.floor,
        };
        if ready {
            return self.next_slot();
        }
        if self.heap.len() > self.limit {
            self.stats.released_early += 1;
            return self.next_slot();
        }
        None
    }

    /// The slot of the first record in order, taken off the heap.
    fn next_slot(&mut self) -> Option<u32> {
        let slot = self.heap_pop()?.slot;
        let key = self.keys[slot as usize];
        if self.released.is_some_and(|r| key < r) {
            self.stats.late += 1;
        } else {
            self.released = Some(key);
        }
        Some(slot)
    }

    fn heap_push(&mut self, h: Held) {
        let mut i = self.heap.len();
        self.heap.push(h);
        while i > 0 {
            let parent = (i - 1) / 2;
            if !before(&self.keys, h, self.heap[parent]) {
                break;
            }
            self.heap[i] = self.heap[parent];
            i = parent;
        }
        self.heap[i] = h;
    }

    fn heap_pop(&mut self) -> Option<Held> {
        let last = self.heap.pop()?;
        let Some(&top) = self.heap.first() else { return Some(last) };
        // `last` sinks from the root to its place.
        let n = self.heap.len();
        let mut i = 0;
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let right = left + 1;
            let child = if right < n && before(&self.keys, self.heap[right], self.heap[left]) {
                right
            } else {
                left
            };
            if !before(&self.keys, self.heap[child], last) {
                break;
            }
            self.heap[i] = self.heap[child];
            i = child;
        }
        self.heap[i] = last;
        Some(top)
    }

    fn take(&mut self, slot: u32) -> Option<T> {
        let item = self.items.get_mut(slot as usize)?.take();
        self.free.push(slot);
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(epoch: u32, t: i64, port: u16) -> OrderKey {
        OrderKey {
            last: StreamTime { epoch, clock: Timestamp(t) },
            first_ts: Timestamp(0),
            last_ts: Timestamp(t),
            proto: 6,
            orig_addr: IpAddr::from([10, 0, 0, 1]),
            orig_port: port,
            resp_addr: IpAddr::from([10, 0, 0, 2]),
            resp_port: 80,
            vlan: 0,
            pkts: 1,
            bytes: 60,
        }
    }

    fn at(epoch: u32, t: i64) -> StreamTime {
        StreamTime { epoch, clock: Timestamp(t) }
    }

    /// What `pop_ready` releases, checked against `drain_ready` on a copy of the buffer.
    fn drain(r: &mut Reorder<u32>) -> Vec<u32> {
        let mut by_ref = Vec::new();
        r.clone().drain_ready(|&x| by_ref.push(x));
        let popped: Vec<u32> = std::iter::from_fn(|| r.pop_ready()).collect();
        assert_eq!(by_ref, popped);
        popped
    }

    /// Nothing leaves before every source has passed it; then it leaves in key order, ties
    /// broken by the record, not by which source pushed first.
    #[test]
    fn releases_in_key_order_behind_the_slowest_source() {
        let mut r = Reorder::new(2, 1000);
        r.push(key(0, 20, 2), 20);
        r.push(key(0, 10, 1), 10);
        r.advance(0, at(0, 30));
        assert_eq!(drain(&mut r), Vec::<u32>::new(), "source 1 has said nothing yet");
        r.advance(1, at(0, 15));
        assert_eq!(drain(&mut r), vec![10]);
        r.push(key(0, 20, 1), 19);
        // A record exactly at the mark may still be followed by an equal-time one: held.
        r.advance(1, at(0, 20));
        assert_eq!(drain(&mut r), Vec::<u32>::new());
        r.advance(1, at(0, 21));
        assert_eq!(drain(&mut r), vec![19, 20], "port 1 sorts before port 2 at the same time");
        assert_eq!(r.stats().late, 0);
    }

    #[test]
    fn a_new_epoch_sorts_after_the_old_one() {
        let mut r = Reorder::new(1, 1000);
        r.push(key(1, 5, 1), 105);
        r.push(key(0, 900, 1), 900);
        r.advance(0, StreamTime::MAX);
        assert_eq!(drain(&mut r), vec![900, 105]);
    }

    /// A full buffer lets its oldest record go early, and says so.
    #[test]
    fn the_limit_bounds_memory_and_is_counted() {
        let mut r = Reorder::new(1, 2);
        for t in 0..5 {
            r.push(key(0, t, 1), t as u32);
        }
        assert_eq!(drain(&mut r), vec![0, 1, 2]);
        assert_eq!(r.stats().released_early, 3);
        assert_eq!(r.len(), 2);
        r.push(key(0, 1, 9), 99);
        r.advance(0, StreamTime::MAX);
        assert_eq!(drain(&mut r), vec![99, 3, 4]);
        assert_eq!(r.stats().late, 1, "a record behind one already released is counted");
    }

    /// Many records, times often tied, pushed in a scrambled order and taken out as they go:
    /// they leave in the order of their whole keys.
    #[test]
    fn the_heap_releases_in_whole_key_order() {
        let mut r = Reorder::new(1, usize::MAX);
        let mut state = 7u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let mut keys = Vec::new();
        let mut got = Vec::new();
        for round in 0..50 {
            for _ in 0..40 {
                let k = key(0, i64::from(next() % 8) + round * 4, (next() % 500) as u16);
                r.push(k, keys.len() as u32);
                keys.push(k);
            }
            r.advance(0, at(0, round * 4));
            got.extend(drain(&mut r));
        }
        r.advance(0, StreamTime::MAX);
        got.extend(drain(&mut r));
        assert_eq!(got.len(), keys.len());
        assert_eq!(r.stats().late, 0);
        let released: Vec<OrderKey> = got.iter().map(|&id| keys[id as usize]).collect();
        assert!(released.windows(2).all(|w| w[0] <= w[1]), "released out of key order");
    }

    /// Marks that go back are ignored, and a source out of range changes nothing.
    #[test]
    fn marks_only_move_forward() {
        let mut r = Reorder::new(1, 10);
        r.push(key(0, 5, 1), 5);
        r.advance(0, at(0, 10));
        r.advance(0, at(0, 1));
        r.advance(7, at(0, 1));
        assert_eq!(drain(&mut r), vec![5]);
    }
}
