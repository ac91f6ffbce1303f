//! Application layer: which service a flow carries, and the few HTTP and FTP facts the
//! UNSW-NB15 features need (request depth, methods, response body length, FTP logins and
//! commands). Looks only at the first bytes of each payload; keeps a fixed-size state.

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

/// Payloads of a flow looked at for service recognition: every protocol we know shows itself
/// in its first exchanges, and this keeps unknown bulk flows off the per-packet path.
const SNIFF_LIMIT: u8 = 4;

/// What the application layer of a flow has shown so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppState {
    /// Service confirmed from payload (what Zeek would log).
    pub sniffed: Service,
    /// Payloads examined while no service was recognised; sniffing stops at `SNIFF_LIMIT`.
    sniff_tries: u8,
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
        if self.sniffed == Service::None && self.sniff_tries < SNIFF_LIMIT {
            self.sniff_tries += 1;
            self.sniffed = sniff(proto, from_orig, resp_port, payload);
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

/// Recognises a service from the first payload bytes.
fn sniff(proto: u8, from_orig: bool, resp_port: u16, p: &[u8]) -> Service {
    if proto == IPPROTO_TCP {
        if is_http_request(p) || is_http_response(p) {
            return Service::Http;
        }
        if p.starts_with(b"SSH-") {
            return Service::Ssh;
        }
        // TLS record: handshake (22), version 3.x.
        if p.len() >= 3 && p[0] == 0x16 && p[1] == 3 && p[2] <= 4 {
            return Service::Ssl;
        }
        if !from_orig && p.starts_with(b"220") {
            let line_end = p.iter().position(|b| *b == b'\n').unwrap_or(p.len());
            let line = &p[..line_end];
            let has = |w: &[u8]| line.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w));
            if has(b"smtp") || has(b"mail") || resp_port == 25 || resp_port == 587 {
                return Service::Smtp;
            }
            if has(b"ftp") || resp_port == 21 {
                return Service::Ftp;
            }
        }
        if from_orig && (p.starts_with(b"EHLO ") || p.starts_with(b"HELO ")) {
            return Service::Smtp;
        }
        if from_orig && p.starts_with(b"USER ") && resp_port == 21 {
            return Service::Ftp;
        }
        if resp_port == 53 && p.len() > 2 && looks_like_dns(&p[2..]) {
            return Service::Dns;
        }
    } else if proto == IPPROTO_UDP {
        if (resp_port == 53 || resp_port == 5353) && looks_like_dns(p) {
            return Service::Dns;
        }
        if resp_port == 123 && p.len() >= 48 && matches!((p[0] >> 3) & 7, 1..=4) {
            return Service::Ntp;
        }
        if matches!(resp_port, 67 | 68) && p.len() >= 240 && p[236..240] == [99, 130, 83, 99] {
            return Service::Dhcp;
        }
    }
    Service::None
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
        assert_eq!(a.service(6, 8443), Service::Ssh);
        let b = AppState::default();
        assert_eq!(b.service(6, 443), Service::Ssl);
        assert_eq!(b.service(6, 9999), Service::None);
        let mut d = AppState::default();
        d.observe(17, true, 53, &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w']);
        assert_eq!(d.sniffed, Service::Dns);
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
