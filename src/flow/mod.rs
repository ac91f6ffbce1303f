//! Flow: packets become bidirectional flow records.
//!
//! The table ([`table::FlowTable`]) keys flows by (addresses, ports, protocol, VLAN) in both
//! directions, lets the first packet decide the originator (a leading SYN-ACK flips it, as
//! in Zeek), and exports each flow exactly once with an [`EndReason`]: idle timeout per
//! protocol, active timeout, TCP close (FIN both ways or RST, after a short linger), eviction
//! when the table is full, clock reset, or end of input. The flow stage sees only
//! [`crate::decode::PacketMeta`], never packet bytes, except the payload prefix handed to
//! [`app`] for service detection.

pub mod app;
pub mod config;
pub mod history;
pub mod key;
pub mod order;
pub mod record;
pub mod short_text;
pub mod table;
pub mod tcp_state;

pub use app::Service;
pub use config::{CutPolicy, FlowConfig, ZeekTimers};
pub use key::{FlowKey, community_id};
pub use order::{OrderKey, Reorder, StreamTime};
pub use record::{EndReason, FlowRecord};
pub use short_text::ShortText;
pub use table::{FlowStats, FlowTable};
pub use tcp_state::{ConnState, EndpointState};
