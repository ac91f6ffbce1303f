//! Zeek's connection `history` string.
//!
//! Letters: S (SYN), H (SYN-ACK), A (pure ACK), D (payload), F (FIN), R (RST), I (FIN+RST),
//! Q (other multi-flag), T (retransmitted payload), G (content gap), W (zero window); upper
//! case from the originator, lower case from the responder; `^` first when we flipped the
//! direction (the first packet seen was a SYN-ACK). Repeat rules, as in Zeek: a, d, i, q once
//! per direction; f, h, r, s again when their sequence number differs from the last one of
//! the same kind; t, g, w logarithmically (again at 10, 100, 1000... occurrences).
//! The string is bounded: letters beyond `CAP` are dropped (and `truncated` says so).

use crate::decode::TcpFlags;

const CAP: usize = 32;

/// Per-direction history events with a bit in the seen mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Syn = 0,
    Fin,
    Rst,
    Ack,
    Data,
    FinRst,
    Multi,
}

/// Logarithmically recorded events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scaled {
    Retransmit = 0,
    Gap = 1,
    ZeroWindow = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    letters: [u8; CAP],
    len: u8,
    pub truncated: bool,
    /// Bit (event + 8 * dir) set once the event was recorded for that direction.
    seen: u32,
    /// Last SYN, FIN and RST sequence numbers per direction ([dir][0..3]), low 32 bits.
    last_seq: [[u32; 3]; 2],
    /// Occurrences of T, G, W per direction; a letter is written at 1, 10, 100...
    scaled: [[u32; 3]; 2],
}

impl Default for History {
    fn default() -> Self {
        History {
            letters: [0; CAP],
            len: 0,
            truncated: false,
            seen: 0,
            last_seq: [[u32::MAX; 3]; 2],
            scaled: [[0; 3]; 2],
        }
    }
}

impl History {
    pub fn as_str(&self) -> &str {
        // Only ASCII letters and '^' are ever pushed.
        std::str::from_utf8(&self.letters[..self.len as usize]).expect("history holds ASCII only")
    }

    fn push(&mut self, c: u8) {
        if (self.len as usize) < CAP {
            self.letters[self.len as usize] = c;
            self.len += 1;
        } else {
            self.truncated = true;
        }
    }

    fn letter(from_orig: bool, upper: u8) -> u8 {
        if from_orig { upper } else { upper.to_ascii_lowercase() }
    }

    /// Records `letter` if the event was not seen before in this direction; returns whether it
    /// was new (Zeek's CheckHistory).
    fn check(&mut self, from_orig: bool, ev: Event, upper: u8) -> bool {
        let bit = 1u32 << (ev as u32 + if from_orig { 0 } else { 8 });
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        self.push(Self::letter(from_orig, upper));
        true
    }

    /// Marks the connection as flipped (`^` first).
    pub fn flipped(&mut self) {
        if self.len == 0 {
            self.push(b'^');
        }
    }

    /// Records a scaled event (T, G, W) for one occurrence.
    pub fn scaled(&mut self, from_orig: bool, ev: Scaled) {
        let upper = match ev {
            Scaled::Retransmit => b'T',
            Scaled::Gap => b'G',
            Scaled::ZeroWindow => b'W',
        };
        let count = &mut self.scaled[!from_orig as usize][ev as usize];
        *count = count.saturating_add(1);
        if matches!(
            *count,
            1 | 10
                | 100
                | 1_000
                | 10_000
                | 100_000
                | 1_000_000
                | 10_000_000
                | 100_000_000
                | 1_000_000_000
        ) {
            self.push(Self::letter(from_orig, upper));
        }
    }

    /// Records the flag letters of one TCP packet. `rel_seq` is its sequence number relative
    /// to the direction's base, unwrapped.
    pub fn tcp_packet(&mut self, from_orig: bool, flags: TcpFlags, rel_seq: u64, payload_len: u32) {
        let d = !from_orig as usize;
        let bits = flags.syn() as u8 + flags.fin() as u8 + flags.rst() as u8;
        if bits > 1 {
            if flags.fin() && flags.rst() {
                self.check(from_orig, Event::FinRst, b'I');
            } else {
                self.check(from_orig, Event::Multi, b'Q');
            }
        } else if bits == 1 {
            let (ev, idx, upper, seq) = if flags.syn() {
                (Event::Syn, 0, if flags.ack() { b'H' } else { b'S' }, rel_seq)
            } else if flags.fin() {
                // A FIN's sequence number is the one after any data it carries.
                (Event::Fin, 1, b'F', rel_seq + payload_len as u64)
            } else {
                (Event::Rst, 2, b'R', rel_seq)
            };
            // SYN and SYN-ACK share the seen bit per direction, as in Zeek.
            let seq = seq as u32;
            if !self.check(from_orig, ev, upper) && seq != self.last_seq[d][idx] {
                self.push(Self::letter(from_orig, upper));
            }
            self.last_seq[d][idx] = seq;
        } else if payload_len > 0 {
            self.check(from_orig, Event::Data, b'D');
        } else if flags.ack() {
            self.check(from_orig, Event::Ack, b'A');
        }
    }

    /// Records a non-TCP packet: D/d when it carries payload.
    pub fn datagram(&mut self, from_orig: bool, payload_len: u32) {
        if payload_len > 0 {
            self.check(from_orig, Event::Data, b'D');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(bits: u8) -> TcpFlags {
        TcpFlags(bits)
    }

    #[test]
    fn handshake_data_close() {
        let mut h = History::default();
        h.tcp_packet(true, f(TcpFlags::SYN), 0, 0);
        h.tcp_packet(false, f(TcpFlags::SYN | TcpFlags::ACK), 0, 0);
        h.tcp_packet(true, f(TcpFlags::ACK), 1, 0);
        h.tcp_packet(true, f(TcpFlags::ACK | TcpFlags::PSH), 1, 100);
        h.tcp_packet(true, f(TcpFlags::ACK), 101, 0);
        h.tcp_packet(false, f(TcpFlags::ACK), 1, 50);
        h.tcp_packet(true, f(TcpFlags::FIN | TcpFlags::ACK), 101, 0);
        h.tcp_packet(false, f(TcpFlags::FIN | TcpFlags::ACK), 51, 0);
        assert_eq!(h.as_str(), "ShADdFf");
    }

    #[test]
    fn repeated_syn_with_same_seq_is_recorded_once_new_seq_again() {
        let mut h = History::default();
        h.tcp_packet(true, f(TcpFlags::SYN), 0, 0);
        h.tcp_packet(true, f(TcpFlags::SYN), 0, 0);
        assert_eq!(h.as_str(), "S");
        h.tcp_packet(true, f(TcpFlags::SYN), 7, 0);
        assert_eq!(h.as_str(), "SS");
    }

    #[test]
    fn multi_flag_and_fin_rst() {
        let mut h = History::default();
        h.tcp_packet(true, f(TcpFlags::SYN | TcpFlags::FIN), 0, 0);
        h.tcp_packet(false, f(TcpFlags::FIN | TcpFlags::RST), 0, 0);
        assert_eq!(h.as_str(), "Qi");
    }

    #[test]
    fn scaled_letters_are_logarithmic() {
        let mut h = History::default();
        for _ in 0..150 {
            h.scaled(true, Scaled::Retransmit);
        }
        assert_eq!(h.as_str(), "TTT");
    }

    #[test]
    fn bounded_length() {
        let mut h = History::default();
        for i in 0..100u64 {
            h.tcp_packet(true, f(TcpFlags::SYN), i, 0);
        }
        assert_eq!(h.as_str().len(), CAP);
        assert!(h.truncated);
    }
}
