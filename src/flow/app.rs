//! Application layer: which service a flow carries, and the few HTTP and FTP facts the
//! UNSW-NB15 features need (request depth, methods, response body length, FTP logins and
//! commands). Looks only at the first bytes of the first payloads; keeps a fixed-size state.
//!
//! The detector follows Zeek's: a protocol is named when its parser would accept what was
//! seen, either because the connection is on one of the protocol's registered ports (Zeek
//! attaches the analyzer by port; one side's message suffices) or, on any port, because both
//! sides showed the protocol's opening (Zeek's dynamic protocol detection: each
//! `base/protocols/*/dpd.sig` pairs a client pattern with the server's reply through
//! `requires-reverse-signature`). The same detector feeds both vocabularies.

use std::fmt;

use super::key::{IPPROTO_TCP, IPPROTO_UDP};

/// Services we recognise, named as UNSW-NB15 and Zeek name them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Service {
    #[default]
    None,
    Http,
    Ssl,
    Ssh,
    Dns,
    Ftp,
    FtpData,
    Smtp,
    Dhcp,
    Ntp,
    Irc,
    Pop3,
    Snmp,
    Radius,
    Telnet,
}

impl Service {
    /// The published name; `-` for none.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::None => "-",
            Service::Http => "http",
            Service::Ssl => "ssl",
            Service::Ssh => "ssh",
            Service::Dns => "dns",
            Service::Ftp => "ftp",
            Service::FtpData => "ftp-data",
            Service::Smtp => "smtp",
            Service::Dhcp => "dhcp",
            Service::Ntp => "ntp",
            Service::Irc => "irc",
            Service::Pop3 => "pop3",
            Service::Snmp => "snmp",
            Service::Radius => "radius",
            Service::Telnet => "telnet",
        }
    }

    /// The name Zeek's conn.log gives the service, as IoT-23's Zeek (2.6) wrote it: that
    /// version has no NTP analyzer, and no port or signature starts its Telnet analyzer, so
    /// both are unnamed (`-`) there, as the IoT-23 conn.logs show.
    pub fn zeek(self) -> Service {
        match self {
            Service::Ntp | Service::Telnet => Service::None,
            s => s,
        }
    }

    /// The service a well-known responder port suggests (UNSW-NB15 labels by port too).
    pub fn by_port(proto: u8, port: u16) -> Service {
        match (proto, port) {
            (6, 80 | 8080 | 8000) => Service::Http,
            (6, 443) => Service::Ssl,
            (6, 22) => Service::Ssh,
            (6 | 17, 53) => Service::Dns,
            (6, 21) => Service::Ftp,
            (6, 20) => Service::FtpData,
            (6, 25 | 587) => Service::Smtp,
            (17, 67 | 68) => Service::Dhcp,
            (17, 123) => Service::Ntp,
            (6, 6667) => Service::Irc,
            (6, 110) => Service::Pop3,
            (17, 161 | 162) => Service::Snmp,
            (17, 1812 | 1813) => Service::Radius,
            _ => Service::None,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const HTTP_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
    b"PATCH ",
];

fn is_http_request(p: &[u8]) -> bool {
    HTTP_METHODS.iter().any(|m| p.starts_with(m))
}

fn is_http_response(p: &[u8]) -> bool {
    p.starts_with(b"HTTP/1.") || p.starts_with(b"HTTP/2")
}

/// Content-Length of an HTTP response head, if present in the captured bytes.
fn content_length(p: &[u8]) -> Option<u64> {
    const NAME: &[u8] = b"content-length:";
    let head_end = p.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(p.len());
    let head = &p[..head_end];
    let mut i = 0;
    while i + NAME.len() <= head.len() {
        if head[i..i + NAME.len()].eq_ignore_ascii_case(NAME) && (i == 0 || head[i - 1] == b'\n') {
            let digits = head[i + NAME.len()..]
                .iter()
                .skip_while(|b| **b == b' ')
                .take_while(|b| b.is_ascii_digit());
            let mut v: u64 = 0;
            let mut any = false;
            for d in digits {
                v = v.saturating_mul(10).saturating_add((d - b'0') as u64);
                any = true;
            }
            return any.then_some(v);
        }
        i += 1;
    }
    None
}

/// A plausible DNS message header: QDCOUNT 1..=16, opcode 0..=5, sane counts.
fn looks_like_dns(p: &[u8]) -> bool {
    if p.len() < 12 {
        return false;
    }
    let opcode = (p[2] >> 3) & 0x0f;
    let qd = u16::from_be_bytes([p[4], p[5]]);
    let an = u16::from_be_bytes([p[6], p[7]]);
    opcode <= 5 && (1..=16).contains(&qd) && an <= 256
}

/// Payloads of each side looked at for service recognition. Zeek's signatures match the
/// first bytes of each direction's stream (`dpd_buffer_size`, 1 KB): an opening such as a
/// request line or a greeting is the side's first payload; line-based patterns (IRC, FTP and
/// SMTP client commands) may come a few payloads in. This also keeps unknown bulk flows off
/// the per-packet path.
const SNIFF_LIMIT: u8 = 4;

/// What a payload showed (bits of [`AppState`]'s evidence).
mod ev {
    pub const HTTP_REQUEST: u16 = 1;
    pub const HTTP_REPLY: u16 = 1 << 1;
    pub const TLS_CLIENT: u16 = 1 << 2;
    pub const TLS_SERVER: u16 = 1 << 3;
    pub const SSH_CLIENT: u16 = 1 << 4;
    pub const SSH_SERVER: u16 = 1 << 5;
    pub const GREETING_220: u16 = 1 << 6;
    pub const FTP_USER: u16 = 1 << 7;
    pub const SMTP_HELO: u16 = 1 << 8;
    pub const IRC_NICK: u16 = 1 << 9;
    pub const IRC_SERVER: u16 = 1 << 10;
    pub const TELNET: u16 = 1 << 11;
    pub const POP3_OK: u16 = 1 << 12;
    pub const DNS: u16 = 1 << 13;
    pub const IRC_USER: u16 = 1 << 14;
}

/// What a flow's application layer has shown so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppState {
    /// Service recognised from payload.
    pub sniffed: Service,
    /// Payloads examined per side (originator, responder) while no service was recognised;
    /// sniffing stops at `SNIFF_LIMIT`.
    sniff_tries: [u8; 2],
    /// What the examined payloads showed, per side ([`ev`]).
    evidence: u16,
    /// HTTP requests seen from the originator (UNSW trans_depth).
    pub http_requests: u32,
    /// HTTP requests carrying a method, GET/POST... (UNSW ct_flw_http_mthd).
    pub http_methods: u32,
    /// Sum of response Content-Length values (UNSW res_bdy_len / response_body_len).
    pub http_body_bytes: u64,
    pub ftp_user: bool,
    pub ftp_pass: bool,
    /// FTP commands from the client (UNSW ct_ftp_cmd).
    pub ftp_commands: u32,
}

impl AppState {
    /// Looks at one payload of a flow whose responder port is `resp_port`.
    pub fn observe(&mut self, proto: u8, from_orig: bool, resp_port: u16, payload: &[u8]) {
        if payload.is_empty() {
            return;
        }
        let side = !from_orig as usize;
        if self.sniffed == Service::None && self.sniff_tries[side] < SNIFF_LIMIT {
            let first = self.sniff_tries[side] == 0;
            self.sniff_tries[side] += 1;
            self.sniffed = if proto == IPPROTO_TCP {
                self.evidence |= tcp_evidence(from_orig, first, resp_port, payload);
                tcp_service(resp_port, self.evidence)
            } else if proto == IPPROTO_UDP {
                udp_service(resp_port, payload)
            } else {
                Service::None
            };
        }
        match self.sniffed {
            Service::Http => {
                if from_orig && is_http_request(payload) {
                    self.http_requests += 1;
                    self.http_methods += 1;
                } else if !from_orig && is_http_response(payload) {
                    self.http_body_bytes += content_length(payload).unwrap_or(0);
                }
            }
            Service::Ftp if from_orig => {
                let word: &[u8] =
                    payload.split(|b| *b == b' ' || *b == b'\r').next().unwrap_or(&[]);
                if (3..=4).contains(&word.len()) && word.iter().all(u8::is_ascii_alphabetic) {
                    self.ftp_commands += 1;
                    self.ftp_user |= word.eq_ignore_ascii_case(b"USER");
                    self.ftp_pass |= word.eq_ignore_ascii_case(b"PASS");
                }
            }
            _ => {}
        }
    }

    /// The service to report: sniffed, else by the responder's well-known port.
    pub fn service(&self, proto: u8, resp_port: u16) -> Service {
        if self.sniffed != Service::None {
            self.sniffed
        } else {
            Service::by_port(proto, resp_port)
        }
    }
}

/// Whether `line` begins, after optional blanks, with `word` in any case, followed by a blank.
fn command(p: &[u8], word: &[u8]) -> bool {
    let p = &p[p.iter().take_while(|b| **b == b' ' || **b == b'\t').count()..];
    p.len() > word.len()
        && p[..word.len()].eq_ignore_ascii_case(word)
        && matches!(p[word.len()], b' ' | b'\t')
}

/// The lines of a payload (split at CR and LF), as IRC's DPD patterns look at any line.
fn lines(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.split(|b| *b == b'\r' || *b == b'\n').filter(|l| !l.is_empty())
}

/// A line of an IRC server's numeric reply (Zeek's `irc_server_reply` signature):
/// `[:prefix ]NNN ` at the start of a line.
fn irc_numeric_reply(line: &[u8]) -> bool {
    let rest = match line.strip_prefix(b":") {
        Some(r) => match r.iter().position(|b| *b == b' ') {
            Some(i) if i > 0 => &r[i + 1..],
            _ => return false,
        },
        None => line,
    };
    rest.len() > 3 && rest[..3].iter().all(u8::is_ascii_digit) && rest[3] == b' '
}

/// What one TCP payload shows, by side, as the opening patterns of Zeek's DPD signatures.
/// `first`: the side's first payload, where the anchored openings are looked for.
fn tcp_evidence(from_orig: bool, first: bool, port: u16, p: &[u8]) -> u16 {
    let mut e = 0;
    match p.first() {
        // DNS over TCP: a length prefix, then the header (Zeek's DNS analyzer on 53/tcp).
        _ if first && port == 53 && p.len() > 2 && looks_like_dns(&p[2..]) => e |= ev::DNS,
        // A TLS handshake record, version 3.x.
        Some(0x16) if first && p.len() >= 3 && p[1] == 3 && p[2] <= 4 => {
            e |= if from_orig { ev::TLS_CLIENT } else { ev::TLS_SERVER };
        }
        // Telnet option negotiation: IAC (255) then WILL/WONT/DO/DONT.
        Some(0xff) if first && p.len() >= 3 && (0xfb..=0xfe).contains(&p[1]) => e |= ev::TELNET,
        // The rest are text protocols: nothing more to look for in binary payloads.
        Some(b) if (0x20..0x7f).contains(b) || matches!(b, b'\t' | b'\r' | b'\n') => {
            e |= text_evidence(from_orig, first, p);
        }
        _ => {}
    }
    e
}

/// Payload bytes the text patterns look at: Zeek's signatures match the first bytes of each
/// direction, and this bounds the work per payload.
const TEXT_PREFIX: usize = 512;

fn text_evidence(from_orig: bool, first: bool, p: &[u8]) -> u16 {
    let p = &p[..p.len().min(TEXT_PREFIX)];
    let mut e = 0;
    if first && p.len() >= 6 && p[..4].eq_ignore_ascii_case(b"SSH-") && matches!(p[4], b'1' | b'2')
    {
        e |= if from_orig { ev::SSH_CLIENT } else { ev::SSH_SERVER };
    }
    if from_orig {
        if first && is_http_request(p) {
            e |= ev::HTTP_REQUEST;
        }
        // Client commands on any line (Zeek's dpd_ftp_client, dpd_smtp_client, and
        // irc_client1/irc_client2: a USER and a NICK command, in either order).
        for l in lines(p) {
            if command(l, b"USER") {
                e |= ev::FTP_USER | ev::IRC_USER;
            }
            if command(l, b"NICK") {
                e |= ev::IRC_NICK;
            }
            if command(l, b"EHLO") || command(l, b"HELO") {
                e |= ev::SMTP_HELO;
            }
        }
    } else {
        if first {
            if is_http_response(p) {
                e |= ev::HTTP_REPLY;
            }
            if p.len() >= 4 && p.starts_with(b"220") && matches!(p[3], b' ' | b'-') {
                e |= ev::GREETING_220;
            }
            if p.starts_with(b"+OK") {
                e |= ev::POP3_OK;
            }
        }
        if lines(p).any(irc_numeric_reply) {
            e |= ev::IRC_SERVER;
        }
    }
    e
}

/// A TCP service from the evidence so far: by the protocol's registered ports (Zeek's
/// `Analyzer::register_for_ports` in each `base/protocols/*/main.zeek`) one side suffices
/// (for FTP and IRC the client's: their analyzers confirm on a client command); elsewhere
/// both sides must have shown it (DPD's client and server signatures).
fn tcp_service(port: u16, e: u16) -> Service {
    let both = |c: u16, s: u16| e & c != 0 && e & s != 0;
    let any = |bits: u16| e & bits != 0;
    if both(ev::SSH_CLIENT, ev::SSH_SERVER) || port == 22 && any(ev::SSH_CLIENT | ev::SSH_SERVER) {
        Service::Ssh
    } else if both(ev::HTTP_REQUEST, ev::HTTP_REPLY)
        || matches!(port, 80 | 81 | 631 | 1080 | 3128 | 8000 | 8080 | 8888)
            && any(ev::HTTP_REQUEST | ev::HTTP_REPLY)
    {
        Service::Http
    } else if both(ev::TLS_CLIENT, ev::TLS_SERVER)
        || matches!(port, 443 | 563 | 585 | 614 | 636 | 989 | 990 | 992 | 993 | 995 | 5223)
            && any(ev::TLS_CLIENT | ev::TLS_SERVER)
    {
        Service::Ssl
    } else if both(ev::SMTP_HELO, ev::GREETING_220)
        || matches!(port, 25 | 587) && any(ev::SMTP_HELO | ev::GREETING_220)
    {
        Service::Smtp
    } else if both(ev::FTP_USER, ev::GREETING_220) || matches!(port, 21 | 2811) && any(ev::FTP_USER)
    {
        Service::Ftp
    } else if both(ev::IRC_NICK, ev::IRC_USER) && any(ev::IRC_SERVER)
        || (6666..=6669).contains(&port) && any(ev::IRC_NICK | ev::IRC_USER)
    {
        Service::Irc
    } else if any(ev::DNS) {
        Service::Dns
    } else if port == 110 && any(ev::POP3_OK) {
        Service::Pop3
    } else if any(ev::TELNET) {
        Service::Telnet
    } else {
        Service::None
    }
}

/// A UDP service from one datagram. Zeek finds these by port only (no DPD signatures for
/// them): DNS on the DNS analyzer's ports (DNS, NetBIOS name service, mDNS, LLMNR) when the
/// header parses, DHCP with its magic cookie, NTP with a sane header, SNMP with a BER
/// sequence.
fn udp_service(port: u16, p: &[u8]) -> Service {
    match port {
        53 | 137 | 5353 | 5355 if looks_like_dns(p) => Service::Dns,
        123 if p.len() >= 48 && matches!((p[0] >> 3) & 7, 1..=4) => Service::Ntp,
        67 | 68 if p.len() >= 240 && p[236..240] == [99, 130, 83, 99] => Service::Dhcp,
        161 | 162 if p.first() == Some(&0x30) => Service::Snmp,
        _ => Service::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_depth_methods_and_body() {
        let mut a = AppState::default();
        a.observe(6, true, 80, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        a.observe(
            6,
            false,
            80,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1234\r\n\r\n<html>",
        );
        a.observe(6, true, 80, b"POST /f HTTP/1.1\r\n\r\n");
        a.observe(6, false, 80, b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(a.sniffed, Service::Http);
        assert_eq!((a.http_requests, a.http_methods, a.http_body_bytes), (2, 2, 1234));
    }

    #[test]
    fn ftp_login_and_commands() {
        let mut a = AppState::default();
        a.observe(6, false, 21, b"220 ProFTPD Server ready\r\n");
        for c in [&b"USER anonymous\r\n"[..], b"PASS x@y\r\n", b"SYST\r\n", b"LIST\r\n"] {
            a.observe(6, true, 21, c);
        }
        assert_eq!(a.sniffed, Service::Ftp);
        assert!(a.ftp_user && a.ftp_pass);
        assert_eq!(a.ftp_commands, 4);
    }

    #[test]
    fn sniffing_beats_ports_and_ports_fill_in() {
        let mut a = AppState::default();
        a.observe(6, true, 8443, b"SSH-2.0-OpenSSH_9.0\r\n");
        assert_eq!(a.sniffed, Service::None, "off its port, one side is not enough");
        a.observe(6, false, 8443, b"SSH-2.0-dropbear\r\n");
        assert_eq!(a.service(6, 8443), Service::Ssh);
        let b = AppState::default();
        assert_eq!(b.service(6, 443), Service::Ssl);
        assert_eq!(b.service(6, 9999), Service::None);
        let mut d = AppState::default();
        d.observe(17, true, 53, &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w']);
        assert_eq!(d.sniffed, Service::Dns);
    }

    #[test]
    fn irc_by_payload_whatever_the_port() {
        // A bot's C&C on an unregistered port: the client's NICK/USER and the server's
        // numeric reply (Zeek's dpd_irc_client / dpd_irc_server_reply).
        let mut a = AppState::default();
        a.observe(6, true, 2323, b"NICK bot123\r\nUSER bot 0 * :bot\r\n");
        assert_eq!(a.sniffed, Service::None);
        a.observe(6, false, 2323, b":irc.example.net 001 bot123 :Welcome\r\n");
        assert_eq!(a.sniffed, Service::Irc);
        // On IRC's registered ports, the client's command suffices (Zeek's IRC analyzer
        // confirms on a line from the originator), a server line alone does not.
        let mut b = AppState::default();
        b.observe(6, false, 6667, b":srv 433 * bot :Nickname is already in use\r\n");
        assert_eq!(b.sniffed, Service::None);
        b.observe(6, true, 6667, b"NICK bot2\r\n");
        assert_eq!(b.sniffed, Service::Irc);
        // A server that only sends NOTICE, PING and ERROR (a refused bot, as on the shared
        // IoT-23 capture's port 4975) never matches Zeek's server signature.
        let mut d = AppState::default();
        d.observe(6, false, 4975, b":irc.x NOTICE AUTH :*** Looking up your hostname...\r\n");
        d.observe(6, true, 4975, b"NICK MYDWOA\nUSER PUFS localhost localhost :W\n");
        d.observe(6, false, 4975, b"PING :B31EBA19\r\nERROR :Closing Link\r\n");
        assert_eq!(d.sniffed, Service::None);
        // A plain USER on another port is not IRC without the server's reply.
        let mut c = AppState::default();
        c.observe(6, true, 4975, b"USER x\r\n");
        c.observe(6, false, 4975, b"\x00\x01binary");
        assert_eq!(c.sniffed, Service::None);
    }

    #[test]
    fn http_tls_smtp_ftp_telnet_off_their_ports() {
        let run = |pairs: &[(bool, &[u8])]| {
            let mut a = AppState::default();
            for (o, p) in pairs {
                a.observe(6, *o, 40000, p);
            }
            a.sniffed
        };
        assert_eq!(
            run(&[(true, b"GET / HTTP/1.1\r\n\r\n"), (false, b"HTTP/1.1 200 OK\r\n\r\n")]),
            Service::Http
        );
        assert_eq!(run(&[(true, b"GET / HTTP/1.1\r\n\r\n")]), Service::None);
        assert_eq!(run(&[(true, &[0x16, 3, 1, 0, 5]), (false, &[0x16, 3, 3, 0, 9])]), Service::Ssl);
        assert_eq!(run(&[(false, b"220 mx ESMTP\r\n"), (true, b"EHLO me\r\n")]), Service::Smtp);
        assert_eq!(
            run(&[(false, b"220 ftpd ready\r\n"), (true, b"USER anonymous\r\n")]),
            Service::Ftp
        );
        assert_eq!(run(&[(false, &[0xff, 0xfd, 0x18, 0xff, 0xfd, 0x20])]), Service::Telnet);
        // Telnet and NTP are recognised, but IoT-23's Zeek names neither.
        assert_eq!(Service::Telnet.zeek(), Service::None);
        assert_eq!(Service::Ntp.zeek(), Service::None);
        assert_eq!(Service::Irc.zeek(), Service::Irc);
    }

    #[test]
    fn udp_services_by_their_ports() {
        let mut ntp = [0u8; 48];
        ntp[0] = 0x23; // version 4, mode 3
        assert_eq!(udp_service(123, &ntp), Service::Ntp);
        assert_eq!(udp_service(9999, &ntp), Service::None);
        let dns = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w'];
        assert_eq!(udp_service(5353, &dns), Service::Dns);
        assert_eq!(udp_service(161, &[0x30, 0x26, 2, 1, 1]), Service::Snmp);
    }

    #[test]
    fn content_length_edge_cases() {
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\ncontent-length:   42\r\n\r\n"), Some(42));
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\nX-Content-Length: 5\r\n\r\n"), None);
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n"),
            Some(u64::MAX)
        );
    }
}
