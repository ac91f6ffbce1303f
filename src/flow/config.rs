//! Flow table settings. Defaults follow Argus 3's `argus.conf` where we claim Argus semantics
//! (idle timeouts), and UNSW-NB15's capture set-up for the active timeout (its durations
//! never reach 60 s: records were cut at a 60 s status interval). The Zeek vocabulary cuts
//! connections by Zeek's own rules instead ([`CutPolicy::Zeek`], timers in [`ZeekTimers`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Serde for durations written as seconds (`tcp_idle = 60`, `close_linger = 0.5`).
pub mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v)
            .map_err(|_| D::Error::custom(format!("{v} is not a valid number of seconds")))
    }
}

/// Whose rules decide where one flow ends and the next begins. One flow table runs either; the
/// record vocabulary (`--schema`) chooses, so that each vocabulary's records are cut the way the
/// data set it describes was cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CutPolicy {
    /// Argus 3 as UNSW-NB15 ran it: idle timeouts per protocol from `argus.conf`, the 60 s
    /// active timeout, TCP closed by FIN both ways or a RST plus `close_linger`.
    #[default]
    Argus,
    /// Zeek as IoT-23 ran it: the connection timers of `init-bare.zeek` ([`ZeekTimers`]), no
    /// active timeout, unanswered attempts ended by `tcp_attempt_delay`, closed connections
    /// removed `tcp_close_delay` after the close, a SYN with a new sequence number on a known
    /// 5-tuple starting a new connection (the TCP analyzer's `IsReuse`), and the originator
    /// guessed from `likely_server_ports` when the first packet is not a SYN.
    Zeek,
}

/// Zeek's connection timers, named and defaulted as in Zeek's `scripts/base/init-bare.zeek`
/// (and `dns_session_timeout` of the DNS analyzer). Used by [`CutPolicy::Zeek`] only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZeekTimers {
    /// `tcp_inactivity_timeout` (5 min): a TCP connection past its handshake with no packet
    /// this long is removed.
    #[serde(with = "secs")]
    pub tcp_inactivity_timeout: Duration,
    /// `udp_inactivity_timeout` (1 min).
    #[serde(with = "secs")]
    pub udp_inactivity_timeout: Duration,
    /// `icmp_inactivity_timeout` (1 min).
    #[serde(with = "secs")]
    pub icmp_inactivity_timeout: Duration,
    /// `unknown_ip_inactivity_timeout` (1 min), for other IP protocols.
    #[serde(with = "secs")]
    pub unknown_ip_inactivity_timeout: Duration,
    /// `tcp_attempt_delay` (5 s): this long after the originator's first SYN, a connection
    /// whose responder has sent nothing is removed (`connection_attempt`, conn_state S0).
    #[serde(with = "secs")]
    pub tcp_attempt_delay: Duration,
    /// `tcp_close_delay` (5 s): a connection closed (FIN both ways, a RST, or a FIN with a
    /// silent peer) is removed this long after the packet that closed it.
    #[serde(with = "secs")]
    pub tcp_close_delay: Duration,
    /// `dns_session_timeout` (10 s): a UDP connection given to the DNS analyzer (by its port)
    /// is checked this long after it began, then every such interval, and removed once it has
    /// been idle for this less one second.
    #[serde(with = "secs")]
    pub dns_session_timeout: Duration,
}

impl Default for ZeekTimers {
    fn default() -> Self {
        ZeekTimers {
            tcp_inactivity_timeout: Duration::from_secs(300),
            udp_inactivity_timeout: Duration::from_secs(60),
            icmp_inactivity_timeout: Duration::from_secs(60),
            unknown_ip_inactivity_timeout: Duration::from_secs(60),
            tcp_attempt_delay: Duration::from_secs(5),
            tcp_close_delay: Duration::from_secs(5),
            dns_session_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Idle timeout of TCP flows (ARGUS_TCP_TIMEOUT, 60 s).
    #[serde(with = "secs")]
    pub tcp_idle: Duration,
    /// Idle timeout of UDP flows (ARGUS_IP_TIMEOUT, 30 s).
    #[serde(with = "secs")]
    pub udp_idle: Duration,
    /// Idle timeout of ICMP flows (ARGUS_ICMP_TIMEOUT, 5 s).
    #[serde(with = "secs")]
    pub icmp_idle: Duration,
    /// Idle timeout of other IP protocols (ARGUS_OTHER_TIMEOUT, 30 s).
    #[serde(with = "secs")]
    pub other_idle: Duration,
    /// A flow active this long is exported and continues as a new record (60 s, as the
    /// UNSW-NB15 records). Zero disables the active timeout.
    #[serde(with = "secs")]
    pub active_timeout: Duration,
    /// After a TCP connection ends (FIN both ways, or RST), packets within this time still
    /// belong to it (the last ACK, retransmitted FINs); then it is exported. Zeek waits 5 s
    /// (tcp_close_delay); 2 s keeps alerts prompt and catches the closing ACK.
    #[serde(with = "secs")]
    pub close_linger: Duration,
    /// Most flows held at once; when full, the least recently active flow is exported early
    /// ("evicted", counted).
    pub max_flows: usize,
    /// How long the ports of a first IP fragment are remembered for later fragments
    /// (ARGUS_FRAG_TIMEOUT, 5 s).
    #[serde(with = "secs")]
    pub fragment_timeout: Duration,
    /// Most fragmented datagrams remembered at once.
    pub max_fragments: usize,
    /// A timestamp this far behind the capture clock is taken as a new capture (concatenated
    /// files): every open flow is exported ("clock_reset") and the clock restarts. Smaller
    /// steps back are reordering: counted, and the clock holds.
    #[serde(with = "secs")]
    pub max_time_regression: Duration,
    /// Most ended flows held back to put them in window order ([`super::order`]): a record
    /// waits until no open flow can still end before it, up to the longest idle timeout. Past
    /// this many the oldest goes early and is counted (1,048,576: about 300 MB at worst).
    pub max_held_records: usize,
    /// Seed of the community ID (0 unless every tool in the deployment uses another).
    pub community_id_seed: u16,
    /// Zeek's timers, for records in the Zeek vocabulary.
    pub zeek: ZeekTimers,
    /// Whose cut rules apply: set from the record vocabulary ([`FlowConfig::for_cut`]), not
    /// from the configuration file. The Argus timeouts above apply to [`CutPolicy::Argus`].
    #[serde(skip)]
    pub cut: CutPolicy,
}

impl FlowConfig {
    /// This configuration with `cut` as the cut policy.
    pub fn for_cut(&self, cut: CutPolicy) -> FlowConfig {
        FlowConfig { cut, ..self.clone() }
    }
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            tcp_idle: Duration::from_secs(60),
            udp_idle: Duration::from_secs(30),
            icmp_idle: Duration::from_secs(5),
            other_idle: Duration::from_secs(30),
            active_timeout: Duration::from_secs(60),
            close_linger: Duration::from_secs(2),
            max_flows: 1_000_000,
            fragment_timeout: Duration::from_secs(5),
            max_fragments: 65_536,
            max_time_regression: Duration::from_secs(300),
            max_held_records: 1 << 20,
            community_id_seed: 0,
            zeek: ZeekTimers::default(),
            cut: CutPolicy::Argus,
        }
    }
}
