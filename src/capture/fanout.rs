//! Live capture fanned out across the flow workers (Linux, feature `live`): one AF_PACKET
//! socket per worker, all in one `PACKET_FANOUT` group in hash mode, as Zeek's and
//! Suricata's workers capture.
//!
//! The kernel hands each packet to one socket of the group by a symmetric hash of its flow
//! (addresses and ports, both directions alike, keyed by a secret chosen at boot), so each
//! worker sees whole conversations and no packet passes through a shared reader. A datagram's
//! fragments carry no ports and hash by their addresses alone: a conversation that mixes
//! fragmented and whole datagrams can be split between two workers (rare; `--capture pcap`
//! keeps every packet in one place).
//!
//! Each socket reads a `TPACKET_V3` ring mapped into our memory: the kernel fills blocks of
//! packets, and a block is read in place and given back only when the worker asks for the
//! packet after its last one, so a packet's bytes are never copied before the flow table
//! reads them, and there is no system call per packet (a `poll` only when the ring is empty).
//!
//! libpcap compiles the `--filter` expression on a handle of the same interface (so that
//! `vlan` tests read the tag where the kernel keeps it, as libpcap's own captures do); the
//! program is attached to every socket with its accept length set to the snap length.
//! Sockets start with a filter that takes nothing, join the group, and only then get the
//! real filter: a socket bound but not yet in the group would otherwise see every packet
//! that the group also sees, and a flow would be exported twice.
//!
//! Per-socket kernel drops come from `PACKET_STATISTICS`; the interface's own drops (the
//! driver's `rx_dropped` and `rx_missed_errors` since the sockets opened, as libpcap counts
//! them) are reported by the first socket only.
//!
//! The one module of the crate that is `unsafe` throughout: a packet ring shared with the
//! kernel has no safe interface. Every block says what it relies on.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::source::{LiveConfig, Next, PacketSource, SourceDrops};
use super::{LinkType, RawPacket, Timestamp};

/// Why the fanout sockets could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("interface {iface}: cannot capture: {message}")]
    Open { iface: String, message: String },
    #[error("interface {iface}: filter {filter:?} does not compile: {message}")]
    Filter { iface: String, filter: String, message: String },
    #[error(
        "interface {iface}: link type {arphrd} is not supported by fanout capture (Ethernet, loopback and raw IP are); use --capture pcap"
    )]
    LinkType { iface: String, arphrd: u32 },
}

/// Ring geometry: blocks of 1 MiB (room for the largest frame a driver's receive offload
/// builds, 64 KiB, many times over), enough of them for the configured buffer.
const BLOCK_SIZE: usize = 1 << 20;
/// A nominal frame size: TPACKET_V3 packs frames of any length into a block; the kernel only
/// checks that the counts agree.
const FRAME_SIZE: usize = 2048;
/// A block the kernel has started filling is handed to us after at most this long, so that
/// packets on a quiet network reach the flow table promptly.
const BLOCK_TIMEOUT_MS: u32 = 10;
/// How long a read waits for the kernel before it reports [`Next::Idle`].
const POLL_MS: i32 = 1;
/// Bytes of the source and destination MAC addresses, where a VLAN tag goes back in.
const MAC_PAIR: usize = 12;

/// The mapped ring, unmapped when dropped.
struct Ring {
    ptr: *mut u8,
    blocks: usize,
}

impl Ring {
    fn len(&self) -> usize {
        self.blocks * BLOCK_SIZE
    }

    fn block(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.blocks);
        // SAFETY: `i` is within the mapping of `blocks` blocks.
        unsafe { self.ptr.add(i * BLOCK_SIZE) }
    }

    /// The block's status word, shared with the kernel.
    fn status(&self, i: usize) -> &AtomicU32 {
        let desc = self.block(i).cast::<libc::tpacket_block_desc>();
        // SAFETY: the block starts with its descriptor, 8-byte aligned (blocks are page
        // aligned); the kernel and we hand the block to each other through this word only.
        unsafe {
            let status = std::ptr::addr_of_mut!((*desc).hdr.bh1.block_status);
            AtomicU32::from_ptr(status)
        }
    }

    /// Packets in a block the kernel has handed over, and the offset of the first.
    fn contents(&self, i: usize) -> (u32, usize) {
        let desc = self.block(i).cast::<libc::tpacket_block_desc>();
        // SAFETY: the block is ours (status USER, read with acquire ordering before this).
        unsafe {
            let h = &(*desc).hdr.bh1;
            (h.num_pkts, h.offset_to_first_pkt as usize)
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `mmap` with this length and is not used after.
        unsafe { libc::munmap(self.ptr.cast(), self.len()) };
    }
}

/// Where the reader is in the block it holds.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    left: u32,
    offset: usize,
}

/// One socket of the fanout group: the packets the kernel gives one flow worker.
pub struct FanoutSocket {
    // The ring is declared before the socket so that it is unmapped before the socket closes.
    ring: Ring,
    fd: OwnedFd,
    link: LinkType,
    iface: String,
    /// The block being read (held back from the kernel while any of its packets is in use).
    block: usize,
    cursor: Option<Cursor>,
    /// A frame whose VLAN tag the kernel had taken out, with the tag put back.
    tagged: Vec<u8>,
    /// Kernel drops read so far (`PACKET_STATISTICS` resets on every read).
    kernel_drops: u64,
    /// The interface's drop counters when the group opened; `None` on every socket but the
    /// first, so that the interface's drops are counted once.
    interface_base: Option<u64>,
    /// Time spent in `poll` so far ([`PacketSource::take_waited`]).
    waited: std::time::Duration,
    warnings: Vec<String>,
    ended: bool,
}

// SAFETY: the ring pointer is owned by this value alone (no other handle to the mapping
// exists in the process), so the socket can move to its worker's thread.
unsafe impl Send for FanoutSocket {}

fn os_error(what: &str) -> String {
    let e = io::Error::last_os_error();
    let mut m = format!("{what}: {e}");
    if e.raw_os_error() == Some(libc::EPERM) {
        m.push_str(" (no permission: capturing needs root or the CAP_NET_RAW capability)");
    }
    m
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T, what: &str) -> Result<(), String> {
    // SAFETY: `value` points to a live `T` of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(os_error(what)) }
}

/// A classic BPF program, as the kernel takes it.
fn attach_filter(fd: &OwnedFd, prog: &[libc::sock_filter]) -> Result<(), String> {
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr().cast_mut() };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog, "attaching the filter")
}

const BPF_RET_K: u16 = 0x06;

fn ret(k: u32) -> libc::sock_filter {
    libc::sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k }
}

/// The filter every socket gets: `filter` compiled by libpcap on a handle of the interface
/// itself, or all packets; either way cut to `snaplen` bytes. A live handle, not a dead one:
/// on Linux the kernel takes an 802.1Q tag out of the frame before any packet socket's filter
/// runs, and libpcap compiles `vlan` tests for a live handle to read the tag where the kernel
/// keeps it (an ancillary load), as it does for its own captures.
fn compile_filter(
    filter: Option<&str>,
    snaplen: u32,
    iface: &str,
) -> Result<Vec<libc::sock_filter>, FanoutError> {
    let snaplen = snaplen.max(1);
    let Some(f) = filter else { return Ok(vec![ret(snaplen)]) };
    let err =
        |message: String| FanoutError::Filter { iface: iface.into(), filter: f.into(), message };
    // A small buffer, no promiscuous mode: the handle only compiles, and closes at once.
    let handle = pcap::Capture::from_device(iface)
        .and_then(|c| {
            c.snaplen(i32::try_from(snaplen).unwrap_or(i32::MAX))
                .buffer_size(1 << 16)
                .promisc(false)
                .open()
        })
        .map_err(|e| FanoutError::Open { iface: iface.into(), message: e.to_string() })?;
    let program = handle.compile(f, true).map_err(|e| err(e.to_string()))?;
    let insns = program.get_instructions();
    if insns.is_empty() || insns.len() > u16::MAX as usize {
        return Err(err(format!("{} instructions", insns.len())));
    }
    // SAFETY: `BpfInstruction` is a transparent wrapper of libpcap's `struct bpf_insn`
    // (u16 code, u8 jt, u8 jf, u32 k), which has the layout of the kernel's `sock_filter`.
    let insns: &[libc::sock_filter] =
        unsafe { std::slice::from_raw_parts(insns.as_ptr().cast(), insns.len()) };
    // Accept `snaplen` bytes (libpcap may have capped the handle's own snap length).
    Ok(insns
        .iter()
        .map(|i| if i.code == BPF_RET_K && i.k != 0 { ret(snaplen) } else { *i })
        .collect())
}

/// The kernel's hardware type of the interface (`/sys/class/net/IFACE/type`), as a link type.
fn link_of(iface: &str) -> Result<LinkType, FanoutError> {
    let path = format!("/sys/class/net/{iface}/type");
    let arphrd: u32 =
        std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(
            || FanoutError::Open { iface: iface.into(), message: format!("cannot read {path}") },
        )?;
    match arphrd as u16 {
        libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK => Ok(LinkType::Ethernet),
        libc::ARPHRD_NONE => Ok(LinkType::Raw),
        _ => Err(FanoutError::LinkType { iface: iface.into(), arphrd }),
    }
}

/// The interface's receive drops (driver and missed), as libpcap's `ps_ifdrop` counts them.
fn interface_drops(iface: &str) -> u64 {
    ["rx_dropped", "rx_missed_errors"]
        .iter()
        .filter_map(|c| {
            std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/{c}")).ok()
        })
        .filter_map(|s| s.trim().parse::<u64>().ok())
        .sum()
}

fn interfaces() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Opens `n` sockets on `iface` in one new fanout group (hash mode). Each gets
/// `cfg.buffer_size` bytes of ring (at least four blocks).
pub fn open_group(
    iface: &str,
    filter: Option<&str>,
    cfg: &LiveConfig,
    n: usize,
) -> Result<Vec<FanoutSocket>, FanoutError> {
    let open = |message: String| FanoutError::Open { iface: iface.into(), message };
    let c_iface = CString::new(iface).map_err(|_| open("the name holds a NUL byte".into()))?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
    if ifindex == 0 && iface == "any" {
        return Err(open(
            "fanout capture reads one interface; --capture pcap reads libpcap's \"any\"".into(),
        ));
    }
    if ifindex == 0 {
        return Err(open(format!("no such interface (have: {})", interfaces().join(", "))));
    }
    let link = link_of(iface)?;
    let program = compile_filter(filter, cfg.snaplen, iface)?;
    let blocks = (cfg.buffer_size as usize / BLOCK_SIZE).max(4);
    let base = interface_drops(iface);
    let mut sockets = Vec::with_capacity(n);
    let mut group: Option<u16> = None;
    // Said with every failure to set the group up: the other way in.
    let open = |m: String| open(format!("{m}; --capture pcap reads through libpcap instead"));
    for i in 0..n.max(1) {
        let s = open_socket(iface, ifindex, link, blocks, cfg.promisc && i == 0, &mut group)
            .map_err(open)?;
        sockets.push(FanoutSocket { interface_base: (i == 0).then_some(base), ..s });
    }
    // Every socket is in the group: now let packets in.
    for s in &sockets {
        attach_filter(&s.fd, &program).map_err(open)?;
    }
    Ok(sockets)
}

fn open_socket(
    iface: &str,
    ifindex: u32,
    link: LinkType,
    blocks: usize,
    promisc: bool,
    group: &mut Option<u16>,
) -> Result<FanoutSocket, String> {
    // Protocol 0: no packets until bound.
    // SAFETY: plain socket creation; the descriptor is owned below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(os_error("opening a packet socket"));
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    attach_filter(&fd, &[ret(0)])?;
    // Time-stamp packets as they arrive (once per packet, whichever socket takes it).
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &1i32, "asking for time stamps")?;
    let v3 = libc::tpacket_versions::TPACKET_V3 as i32;
    setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &v3, "choosing TPACKET_V3")?;
    let req = libc::tpacket_req3 {
        tp_block_size: BLOCK_SIZE as u32,
        tp_block_nr: blocks as u32,
        tp_frame_size: FRAME_SIZE as u32,
        tp_frame_nr: (BLOCK_SIZE / FRAME_SIZE * blocks) as u32,
        tp_retire_blk_tov: BLOCK_TIMEOUT_MS,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    };
    setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req, "setting up the ring")?;
    let len = blocks * BLOCK_SIZE;
    // SAFETY: maps the ring just set up on this socket; checked for failure below. (The
    // ring's pages are the kernel's and never swapped: no MAP_LOCKED needed.)
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(os_error("mapping the ring"));
    }
    let ring = Ring { ptr: ptr.cast(), blocks };
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(os_error("binding to the interface"));
    }
    if promisc {
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as i32,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        // Undone by the kernel when the socket closes.
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq, "promiscuous mode")?;
    }
    join_group(&fd, group)?;
    Ok(FanoutSocket {
        ring,
        fd,
        link,
        iface: iface.into(),
        block: 0,
        cursor: None,
        tagged: Vec::new(),
        kernel_drops: 0,
        interface_base: None,
        waited: std::time::Duration::ZERO,
        warnings: Vec::new(),
        ended: false,
    })
}

/// The first socket asks the kernel for a group id no one else uses; the others join it.
fn join_group(fd: &OwnedFd, group: &mut Option<u16>) -> Result<(), String> {
    let mode = libc::PACKET_FANOUT_HASH;
    match *group {
        Some(id) => {
            let v: u32 = id as u32 | (mode << 16);
            setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &v, "joining the fanout group")
        }
        None => {
            let v: u32 = (mode | libc::PACKET_FANOUT_FLAG_UNIQUEID) << 16;
            setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &v, "creating the fanout group")?;
            let mut got: u32 = 0;
            let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
            // SAFETY: `got` is a u32 of the length passed.
            let r = unsafe {
                libc::getsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_FANOUT,
                    (&mut got as *mut u32).cast(),
                    &mut len,
                )
            };
            if r != 0 {
                return Err(os_error("reading the fanout group's id"));
            }
            *group = Some(got as u16);
            Ok(())
        }
    }
}

/// Waits up to [`POLL_MS`] for any of `fds` to have a block ready; the sockets with an error
/// (the interface went down or away: ENETDOWN, ENXIO, ENODEV) are returned with it.
fn wait_any(fds: &[i32]) -> Result<Vec<(usize, String)>, String> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd { fd, events: libc::POLLIN | libc::POLLERR, revents: 0 })
        .collect();
    // SAFETY: `pfds` holds `pfds.len()` pollfds.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, POLL_MS) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Vec::new())
        } else {
            Err(e.to_string())
        };
    }
    let mut failed = Vec::new();
    for (i, p) in pfds.iter().enumerate() {
        if p.revents & (libc::POLLERR | libc::POLLNVAL | libc::POLLHUP) != 0 {
            let mut err: i32 = 0;
            let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
            // SAFETY: `err` is an i32 of the length passed.
            unsafe {
                libc::getsockopt(
                    p.fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut i32).cast(),
                    &mut len,
                )
            };
            if err != 0 {
                failed.push((i, io::Error::from_raw_os_error(err).to_string()));
            }
        }
    }
    Ok(failed)
}

impl FanoutSocket {
    /// The ring position of the next packet's header, if the kernel has handed one over.
    /// A block whose packets were all used is given back first (the caller asks for the next
    /// packet only when done with the last).
    fn advance(&mut self) -> Option<usize> {
        loop {
            if let Some(c) = &mut self.cursor {
                if c.left > 0 {
                    let at = self.block * BLOCK_SIZE + c.offset;
                    // SAFETY: the kernel wrote a tpacket3_hdr at this offset of a block it
                    // handed over (16-byte aligned, within the block).
                    let next = unsafe {
                        (*self.ring.ptr.add(at).cast::<libc::tpacket3_hdr>()).tp_next_offset
                    };
                    c.left -= 1;
                    c.offset += next as usize;
                    return Some(at);
                }
                self.ring.status(self.block).store(libc::TP_STATUS_KERNEL, Ordering::Release);
                self.cursor = None;
                self.block = (self.block + 1) % self.ring.blocks;
            }
            if self.ring.status(self.block).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                return None;
            }
            let (n, first) = self.ring.contents(self.block);
            self.cursor = Some(Cursor { left: n, offset: first });
        }
    }

    /// Whether the block being read has no packet left (a group moves to its next socket).
    fn block_done(&self) -> bool {
        self.cursor.is_none_or(|c| c.left == 0)
    }

    /// Waits for a block, counting the time waited; false when none came.
    fn wait(&mut self) -> Result<bool, String> {
        let t0 = std::time::Instant::now();
        let failed = wait_any(&[self.fd.as_raw_fd()]);
        self.waited += t0.elapsed();
        match failed?.pop() {
            Some((_, e)) => Err(e),
            None => {
                Ok(self.ring.status(self.block).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0)
            }
        }
    }

    fn stop(&mut self, why: &str) {
        self.warnings.push(format!("interface {}: capture stopped: {why}", self.iface));
        self.ended = true;
    }

    /// The packet whose header is at `at` (from [`Self::advance`]).
    fn packet(&mut self, at: usize) -> RawPacket<'_> {
        // SAFETY: the kernel wrote a tpacket3_hdr at `at`, and the packet's bytes follow at
        // `tp_mac`, in a block handed over; the block stays ours until it is given back, on a
        // later call (which needs `&mut self`, so the packet returned here cannot outlive it).
        let (h, frame) = unsafe {
            let h = &*self.ring.ptr.add(at).cast::<libc::tpacket3_hdr>();
            let frame = std::slice::from_raw_parts(
                self.ring.ptr.add(at + h.tp_mac as usize),
                h.tp_snaplen as usize,
            );
            (h, frame)
        };
        let ts = Timestamp(h.tp_sec as i64 * 1_000_000_000 + h.tp_nsec as i64);
        let mut wire_len = h.tp_len.max(h.tp_snaplen);
        let data = if h.tp_status & libc::TP_STATUS_VLAN_VALID != 0
            && self.link == LinkType::Ethernet
            && frame.len() >= MAC_PAIR
        {
            // The kernel took the 802.1Q tag out of the frame before any packet socket saw
            // it: put it back, as libpcap does, so that the VLAN is part of the flow key.
            let tpid = if h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                h.hv1.tp_vlan_tpid
            } else {
                0x8100
            };
            let tci = h.hv1.tp_vlan_tci as u16;
            self.tagged.clear();
            self.tagged.extend_from_slice(&frame[..MAC_PAIR]);
            self.tagged.extend_from_slice(&tpid.to_be_bytes());
            self.tagged.extend_from_slice(&tci.to_be_bytes());
            self.tagged.extend_from_slice(&frame[MAC_PAIR..]);
            wire_len += 4;
            &self.tagged[..]
        } else {
            frame
        };
        RawPacket { ts, link: self.link, wire_len, data }
    }

    fn read_drops(&mut self) -> SourceDrops {
        // SAFETY: plain data.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` has the length passed.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.kernel_drops += st.tp_drops as u64;
        }
        let interface = self
            .interface_base
            .map(|b| interface_drops(&self.iface).saturating_sub(b))
            .unwrap_or(0);
        SourceDrops { kernel: self.kernel_drops, interface }
    }
}

impl PacketSource for FanoutSocket {
    fn next_packet(&mut self) -> Next<'_> {
        if self.ended {
            return Next::End;
        }
        let at = match self.advance() {
            Some(at) => at,
            None => match self.wait() {
                Ok(true) => match self.advance() {
                    Some(at) => at,
                    None => return Next::Idle,
                },
                Ok(false) => return Next::Idle,
                Err(e) => {
                    self.stop(&e);
                    return Next::End;
                }
            },
        };
        Next::Packet(self.packet(at))
    }

    fn is_live(&self) -> bool {
        true
    }

    fn take_waited(&mut self) -> std::time::Duration {
        std::mem::take(&mut self.waited)
    }

    fn drops(&mut self) -> SourceDrops {
        self.read_drops()
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}

/// A whole fanout group read as one source, for a live cold start: the warm-up's single flow
/// table reads every socket, a block at a time from each in turn, and the recording keeps
/// which socket each packet came from ([`PacketSource::origin`]), so that afterwards each
/// flow worker replays exactly the packets the kernel gave its socket before reading on.
/// Blocks of different sockets interleave, so packets can arrive up to a block's time out of
/// order (the flow table counts them, `packets older than the clock`); within a socket, and so
/// within a flow, the order is the kernel's.
pub struct FanoutGroup {
    sockets: Vec<FanoutSocket>,
    /// The socket to read first next time.
    current: usize,
    /// The socket the last packet came from.
    current_packet: usize,
    waited: std::time::Duration,
}

impl FanoutGroup {
    pub fn new(sockets: Vec<FanoutSocket>) -> FanoutGroup {
        FanoutGroup { sockets, current: 0, current_packet: 0, waited: std::time::Duration::ZERO }
    }

    /// The sockets, for one flow worker each.
    pub fn into_sockets(self) -> Vec<FanoutSocket> {
        self.sockets
    }
}

impl PacketSource for FanoutGroup {
    fn next_packet(&mut self) -> Next<'_> {
        let n = self.sockets.len();
        for waited in [false, true] {
            for k in 0..n {
                let i = (self.current + k) % n;
                if self.sockets[i].ended {
                    continue;
                }
                if let Some(at) = self.sockets[i].advance() {
                    // Stay on this socket to the end of its block, then move on.
                    self.current = if self.sockets[i].block_done() { (i + 1) % n } else { i };
                    self.current_packet = i;
                    return Next::Packet(self.sockets[i].packet(at));
                }
            }
            if self.sockets.iter().all(|s| s.ended) {
                return Next::End;
            }
            if waited {
                break;
            }
            let fds: Vec<i32> = self.sockets.iter().map(|s| s.fd.as_raw_fd()).collect();
            let t0 = std::time::Instant::now();
            let failed = wait_any(&fds);
            self.waited += t0.elapsed();
            match failed {
                Ok(failed) => {
                    for (i, e) in failed {
                        self.sockets[i].stop(&e);
                    }
                }
                Err(e) => {
                    for s in &mut self.sockets {
                        s.stop(&e);
                    }
                    return Next::End;
                }
            }
        }
        Next::Idle
    }

    fn origin(&self) -> usize {
        self.current_packet
    }

    fn is_live(&self) -> bool {
        true
    }

    fn take_waited(&mut self) -> std::time::Duration {
        std::mem::take(&mut self.waited)
    }

    fn drops(&mut self) -> SourceDrops {
        let mut d = SourceDrops::default();
        for s in &mut self.sockets {
            let one = s.read_drops();
            d.kernel += one.kernel;
            d.interface += one.interface;
        }
        d
    }

    fn take_warnings(&mut self) -> Vec<String> {
        self.sockets.iter_mut().flat_map(|s| s.take_warnings()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run as root (the live stage): libpcap compiles on a live handle of `lo`.
    #[test]
    fn filters_compile_for_the_interface_with_the_snap_length() {
        let all = compile_filter(None, 200, "lo").unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].code, all[0].k), (BPF_RET_K, 200));
        let tcp = compile_filter(Some("tcp port 80"), 300, "lo").unwrap();
        assert!(tcp.len() > 4);
        let rets: Vec<u32> = tcp.iter().filter(|i| i.code == BPF_RET_K).map(|i| i.k).collect();
        assert!(rets.contains(&300) && rets.contains(&0), "{rets:?}");
        assert!(rets.iter().all(|&k| k == 0 || k == 300), "{rets:?}");
        // `vlan` reads the tag where the kernel keeps it: an ancillary load (SKF_AD_OFF).
        let vlan = compile_filter(Some("vlan 10"), 300, "lo").unwrap();
        assert!(vlan.iter().any(|i| i.k >= 0xffff_f000 && i.code & 0x07 == 0x00), "{vlan:?}");
        let e = compile_filter(Some("tcp prot 80"), 300, "lo").unwrap_err();
        assert!(e.to_string().contains("lo") && e.to_string().contains("tcp prot 80"), "{e}");
    }

    #[test]
    fn a_missing_interface_is_named_with_the_ones_there_are() {
        let e = match open_group("nosuch0", None, &LiveConfig::default(), 2) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened a missing interface"),
        };
        assert!(
            e.contains("nosuch0") && e.contains("no such interface") && e.contains("lo"),
            "{e}"
        );
        let e = match open_group("any", None, &LiveConfig::default(), 2) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("fanout on any"),
        };
        assert!(e.contains("--capture pcap"), "{e}");
    }
}
