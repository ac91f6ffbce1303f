//! Live capture from a network interface through libpcap (feature `live`).
//!
//! Read `../shared/spec/stack.md` first: a blocking libpcap capture on Linux never returns
//! once traffic stops, even with a read timeout, so the handle is put in non-blocking mode and
//! an empty read becomes [`Next::Idle`] after a short sleep. The pipeline then moves the flow
//! clock on the wall clock, so idle flows end and are scored on a quiet network.
//!
//! Errors are one line naming the interface and what libpcap said: an interface that does not
//! exist, a filter that does not compile, or no permission to capture (needs root or
//! CAP_NET_RAW).

use std::time::Duration;

use super::source::{LiveConfig, Next, PacketSource, SourceDrops};
use super::{LinkType, RawPacket, Timestamp, link_type_name};

/// Why an interface could not be captured from.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("interface {iface}: cannot capture: {message}")]
    Open { iface: String, message: String },
    #[error("interface {iface}: filter {filter:?} does not compile: {message}")]
    Filter { iface: String, filter: String, message: String },
    #[error("interface {iface}: link type {code} ({name}) is not supported")]
    LinkType { iface: String, code: i32, name: &'static str },
}

/// An open interface.
pub struct LiveSource {
    cap: pcap::Capture<pcap::Active>,
    link: LinkType,
    iface: String,
    warnings: Vec<String>,
    ended: bool,
    /// How long to sleep when no packet is waiting.
    idle_sleep: Duration,
    /// Time slept so far ([`PacketSource::take_waited`]).
    waited: Duration,
}

impl LiveSource {
    pub fn open(
        iface: &str,
        filter: Option<&str>,
        cfg: &LiveConfig,
    ) -> Result<LiveSource, LiveError> {
        let open_err = |e: pcap::Error| {
            let mut message = e.to_string();
            if message.contains("not permitted") || message.to_lowercase().contains("permission") {
                message.push_str(
                    " (no permission: capturing needs root or the CAP_NET_RAW capability)",
                );
            }
            LiveError::Open { iface: iface.into(), message }
        };
        // libpcap accepts any name until activation; check existence first for a clear error.
        let devices = pcap::Device::list().map_err(open_err)?;
        if !devices.iter().any(|d| d.name == iface) {
            let names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
            return Err(LiveError::Open {
                iface: iface.into(),
                message: format!("no such interface (have: {})", names.join(", ")),
            });
        }
        let cap = pcap::Capture::from_device(iface)
            .map_err(open_err)?
            .snaplen(i32::try_from(cfg.snaplen).unwrap_or(i32::MAX))
            .promisc(cfg.promisc)
            .buffer_size(i32::try_from(cfg.buffer_size).unwrap_or(i32::MAX))
            .immediate_mode(true)
            .open()
            .map_err(open_err)?;
        let mut cap = cap.setnonblock().map_err(open_err)?;
        if let Some(f) = filter {
            cap.filter(f, true).map_err(|e| LiveError::Filter {
                iface: iface.into(),
                filter: f.into(),
                message: e.to_string(),
            })?;
        }
        let code = cap.get_datalink().0;
        let link =
            u32::try_from(code).ok().and_then(LinkType::from_code).ok_or(LiveError::LinkType {
                iface: iface.into(),
                code,
                name: link_type_name(code as u32),
            })?;
        Ok(LiveSource {
            cap,
            link,
            iface: iface.into(),
            warnings: Vec::new(),
            ended: false,
            idle_sleep: Duration::from_millis(1),
            waited: Duration::ZERO,
        })
    }
}

impl PacketSource for LiveSource {
    fn next_packet(&mut self) -> Next<'_> {
        if self.ended {
            return Next::End;
        }
        // Borrow the fields apart: the packet borrows the handle, the error path the rest.
        let LiveSource { cap, link, iface, warnings, ended, idle_sleep, waited } = self;
        match cap.next_packet() {
            Ok(p) => {
                #[allow(clippy::unnecessary_cast)]
                // time_t and suseconds_t are i64 here, not everywhere
                let ts = Timestamp(
                    p.header.ts.tv_sec as i64 * 1_000_000_000 + p.header.ts.tv_usec as i64 * 1000,
                );
                Next::Packet(RawPacket {
                    ts,
                    link: *link,
                    wire_len: p.header.len.max(p.data.len() as u32),
                    data: p.data,
                })
            }
            Err(pcap::Error::TimeoutExpired) | Err(pcap::Error::NoMorePackets) => {
                std::thread::sleep(*idle_sleep);
                *waited += *idle_sleep;
                Next::Idle
            }
            Err(e) => {
                warnings.push(format!("interface {iface}: capture stopped: {e}"));
                *ended = true;
                Next::End
            }
        }
    }

    fn is_live(&self) -> bool {
        true
    }

    fn take_waited(&mut self) -> Duration {
        std::mem::take(&mut self.waited)
    }

    fn drops(&mut self) -> SourceDrops {
        match self.cap.stats() {
            Ok(s) => SourceDrops { kernel: s.dropped as u64, interface: s.if_dropped as u64 },
            Err(_) => SourceDrops::default(),
        }
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}
