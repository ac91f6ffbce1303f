//! TCP endpoint state and Zeek's `conn_state`.
//!
//! Read first: Zeek's `scripts/base/protocols/conn/main.zeek` (the `conn_state` codes and the
//! function that derives them) and `src/analyzer/protocol/tcp/TCP_Endpoint.h` (the seven
//! endpoint states). We keep Zeek's per-endpoint states and derive the connection state when a
//! flow is exported, never storing it.

use std::fmt;

use crate::decode::TcpFlags;

/// The state of one side of a TCP connection, with Zeek's meanings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum EndpointState {
    /// Nothing seen from this side yet.
    #[default]
    Inactive,
    /// Sent a SYN (without ACK).
    SynSent,
    /// Sent a SYN-ACK.
    SynAckSent,
    /// Seen mid-stream: data or ACKs without the handshake.
    Partial,
    /// Completed the three-way handshake.
    Established,
    /// Sent a FIN.
    Closed,
    /// Sent a RST.
    Reset,
}

/// Both endpoints of a TCP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpEndpoints {
    pub orig: EndpointState,
    pub resp: EndpointState,
}

impl TcpEndpoints {
    /// Every state change goes through here, so a trace shows old and new.
    fn set_state(&mut self, from_orig: bool, new: EndpointState) {
        let slot = if from_orig { &mut self.orig } else { &mut self.resp };
        if *slot != new {
            tracing::trace!(side = if from_orig { "orig" } else { "resp" }, old = ?*slot, ?new, "tcp endpoint state");
            *slot = new;
        }
    }

    /// Advances the sender's state for one packet (and the peer's, on handshake completion).
    pub fn update(&mut self, from_orig: bool, flags: TcpFlags, payload_len: u32) {
        let (me, peer) = if from_orig { (self.orig, self.resp) } else { (self.resp, self.orig) };
        use EndpointState::*;
        if flags.rst() {
            self.set_state(from_orig, Reset);
            return;
        }
        if flags.fin() {
            if me != Reset {
                self.set_state(from_orig, Closed);
            }
            return;
        }
        if flags.syn() {
            let next = match (me, flags.ack()) {
                (Inactive, false) => SynSent,
                (Inactive | SynSent | Partial, true) => SynAckSent,
                (state, _) => state,
            };
            self.set_state(from_orig, next);
            return;
        }
        // Neither SYN, FIN nor RST.
        let active = flags.ack() || payload_len > 0;
        match me {
            Inactive if active => self.set_state(from_orig, Partial),
            // The originator's ACK of the responder's SYN-ACK completes the handshake.
            SynSent if flags.ack() && peer == SynAckSent => {
                self.set_state(from_orig, Established);
                self.set_state(!from_orig, Established);
            }
            Inactive | SynSent | SynAckSent | Partial | Established | Closed | Reset => {}
        }
    }
}

/// Zeek's connection state codes (`Conn::Info$conn_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// Connection attempt seen, no reply.
    S0,
    /// Connection established, not terminated.
    S1,
    /// Normal establishment and termination.
    Sf,
    /// Connection attempt rejected.
    Rej,
    /// Established, close attempt by the originator seen (no reply from the responder).
    S2,
    /// Established, close attempt by the responder seen (no reply from the originator).
    S3,
    /// Established, the originator aborted (sent a RST).
    Rsto,
    /// Responder sent a RST.
    Rstr,
    /// Originator sent a SYN followed by a RST; no SYN-ACK from the responder.
    Rstos0,
    /// Responder sent a SYN-ACK followed by a RST; no SYN from the (purported) originator.
    Rstrh,
    /// Originator sent a SYN followed by a FIN; no SYN-ACK from the responder (half-open).
    Sh,
    /// Responder sent a SYN-ACK followed by a FIN; no SYN from the originator.
    Shr,
    /// No SYN seen, just midstream traffic (or anything else).
    Oth,
}

impl ConnState {
    pub const ALL: [ConnState; 13] = [
        ConnState::S0,
        ConnState::S1,
        ConnState::Sf,
        ConnState::Rej,
        ConnState::S2,
        ConnState::S3,
        ConnState::Rsto,
        ConnState::Rstr,
        ConnState::Rstos0,
        ConnState::Rstrh,
        ConnState::Sh,
        ConnState::Shr,
        ConnState::Oth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::S0 => "S0",
            ConnState::S1 => "S1",
            ConnState::Sf => "SF",
            ConnState::Rej => "REJ",
            ConnState::S2 => "S2",
            ConnState::S3 => "S3",
            ConnState::Rsto => "RSTO",
            ConnState::Rstr => "RSTR",
            ConnState::Rstos0 => "RSTOS0",
            ConnState::Rstrh => "RSTRH",
            ConnState::Sh => "SH",
            ConnState::Shr => "SHR",
            ConnState::Oth => "OTH",
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Zeek's `conn_state` for a TCP connection, from the endpoint states, the payload sizes and
/// the history string (for RSTOS0), as `main.zeek` derives it.
pub fn tcp_conn_state(
    ep: TcpEndpoints,
    orig_size: u64,
    resp_size: u64,
    history: &str,
) -> ConnState {
    use EndpointState::*;
    let (os, rs) = (ep.orig, ep.resp);
    let o_inactive = matches!(os, Inactive | Partial);
    let r_inactive = matches!(rs, Inactive | Partial);
    if rs == Reset {
        if matches!(os, SynSent | SynAckSent) || (os == Reset && orig_size == 0 && resp_size == 0) {
            ConnState::Rej
        } else if o_inactive {
            ConnState::Rstrh
        } else {
            ConnState::Rstr
        }
    } else if os == Reset {
        if r_inactive {
            if rstos0_history(history) { ConnState::Rstos0 } else { ConnState::Oth }
        } else {
            ConnState::Rsto
        }
    } else if rs == Closed && os == Closed {
        ConnState::Sf
    } else if os == Closed {
        if r_inactive { ConnState::Sh } else { ConnState::S2 }
    } else if rs == Closed {
        if o_inactive { ConnState::Shr } else { ConnState::S3 }
    } else if os == SynSent && rs == Inactive {
        ConnState::S0
    } else if os == Established && rs == Established {
        ConnState::S1
    } else {
        ConnState::Oth
    }
}

/// Zeek's pattern `/^\^?S[^HAFGIQ]*R.*/` on the history string.
fn rstos0_history(history: &str) -> bool {
    let h = history.strip_prefix('^').unwrap_or(history);
    let Some(rest) = h.strip_prefix('S') else { return false };
    for c in rest.chars() {
        match c {
            'R' => return true,
            'H' | 'A' | 'F' | 'G' | 'I' | 'Q' => return false,
            _ => {}
        }
    }
    false
}

/// Zeek's `conn_state` for UDP: each side is active once it sent a packet.
pub fn udp_conn_state(orig_active: bool, resp_active: bool) -> ConnState {
    match (orig_active, resp_active) {
        (true, true) => ConnState::Sf,
        (true, false) => ConnState::S0,
        (false, true) => ConnState::Shr,
        (false, false) => ConnState::Oth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u8 = TcpFlags::SYN;
    const A: u8 = TcpFlags::ACK;
    const F: u8 = TcpFlags::FIN;
    const R: u8 = TcpFlags::RST;

    /// Runs (from_orig, flags, payload) packets and returns the conn_state.
    fn run(pkts: &[(bool, u8, u32)], history: &str) -> ConnState {
        let mut ep = TcpEndpoints::default();
        let (mut o, mut r) = (0, 0);
        for &(from_orig, flags, len) in pkts {
            ep.update(from_orig, TcpFlags(flags), len);
            if from_orig { o += len as u64 } else { r += len as u64 }
        }
        tcp_conn_state(ep, o, r, history)
    }

    // ---- Tests from a closed (inactive) start, one line per Zeek code ----
    #[test]
    fn conn_state_table() {
        type Packets<'a> = &'a [(bool, u8, u32)];
        let cases: &[(Packets, &str, ConnState)] = &[
            (&[(true, S, 0)], "S", ConnState::S0),
            (&[(true, S, 0), (false, S | A, 0), (true, A, 0)], "ShA", ConnState::S1),
            (
                &[
                    (true, S, 0),
                    (false, S | A, 0),
                    (true, A, 0),
                    (true, A, 10),
                    (true, F | A, 0),
                    (false, F | A, 0),
                ],
                "ShADFf",
                ConnState::Sf,
            ),
            (&[(true, S, 0), (false, R | A, 0)], "Sr", ConnState::Rej),
            (
                &[(true, S, 0), (false, S | A, 0), (true, A, 0), (true, F | A, 0)],
                "ShAF",
                ConnState::S2,
            ),
            (
                &[(true, S, 0), (false, S | A, 0), (true, A, 0), (false, F | A, 0)],
                "ShAf",
                ConnState::S3,
            ),
            (
                &[(true, S, 0), (false, S | A, 0), (true, A, 0), (true, R, 0)],
                "ShAR",
                ConnState::Rsto,
            ),
            (
                &[(true, S, 0), (false, S | A, 0), (true, A, 0), (false, R, 0)],
                "ShAr",
                ConnState::Rstr,
            ),
            (&[(true, S, 0), (true, R, 0)], "SR", ConnState::Rstos0),
            (&[(false, S | A, 0), (false, R, 0)], "hr", ConnState::Rstrh),
            (&[(true, S, 0), (true, F, 0)], "SF", ConnState::Sh),
            (&[(false, S | A, 0), (false, F, 0)], "hf", ConnState::Shr),
            (&[(true, A, 5), (false, A, 5)], "Dd", ConnState::Oth),
        ];
        for (pkts, hist, want) in cases {
            assert_eq!(run(pkts, hist), *want, "{hist}");
        }
    }

    #[test]
    fn syn_sent_rst_from_resp_is_rej() {
        assert_eq!(run(&[(true, S, 0), (false, R, 0)], "Sr"), ConnState::Rej);
    }

    #[test]
    fn reset_after_data_from_orig_without_reply_is_oth() {
        assert_eq!(run(&[(true, A, 10), (true, R, 0)], "DR"), ConnState::Oth);
    }

    #[test]
    fn udp_states() {
        assert_eq!(udp_conn_state(true, true), ConnState::Sf);
        assert_eq!(udp_conn_state(true, false), ConnState::S0);
        assert_eq!(udp_conn_state(false, true), ConnState::Shr);
    }

    #[test]
    fn every_code_has_a_distinct_name() {
        let names: std::collections::HashSet<_> =
            ConnState::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), 13);
    }
}
