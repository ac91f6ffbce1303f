//! Which flow worker a packet goes to: a keyed hash of the unordered address pair, the
//! protocol and the VLAN.
//!
//! Symmetric (both directions of a conversation hash alike), and deliberately blind to ports:
//! a later IP fragment carries no ports, and its flow is found through the first fragment's
//! memory in the flow table, which only exists in the worker that saw the first fragment.
//! Hashing on addresses keeps a datagram's fragments, and so every packet of a flow, in one
//! worker. The cost is coarser balance when few host pairs carry most of the traffic.

use std::hash::BuildHasher;
use std::net::IpAddr;

use crate::decode::PacketMeta;

/// The shard hash, keyed by a seed.
#[derive(Debug, Clone)]
pub struct Sharder {
    state: foldhash::quality::FixedState,
}

impl Sharder {
    /// `None`: a random seed per run.
    pub fn new(seed: Option<u64>) -> Sharder {
        let seed = seed.unwrap_or_else(rand::random);
        Sharder { state: foldhash::quality::FixedState::with_seed(seed) }
    }

    /// The worker (of `n`) for a packet between `a` and `b`.
    pub fn worker_of(&self, a: IpAddr, b: IpAddr, proto: u8, vlan: u32, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let h = self.state.hash_one((lo, hi, proto, vlan));
        // Multiply-shift onto 0..n: uses the high bits, which a folded hash mixes best.
        ((h as u128 * n as u128) >> 64) as usize
    }

    pub fn worker(&self, m: &PacketMeta<'_>, n: usize) -> usize {
        self.worker_of(m.src, m.dst, m.proto, m.vlan, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_meet_and_load_spreads() {
        let s = Sharder::new(Some(7));
        let mut counts = [0usize; 4];
        for i in 0..4000u32 {
            let a = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            let b = IpAddr::from([192, 0, 2, (i % 7) as u8]);
            let w = s.worker_of(a, b, 6, 0, 4);
            assert_eq!(w, s.worker_of(b, a, 6, 0, 4));
            counts[w] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(s.worker_of(IpAddr::from([1, 1, 1, 1]), IpAddr::from([2, 2, 2, 2]), 6, 0, 1), 0);
    }
}
