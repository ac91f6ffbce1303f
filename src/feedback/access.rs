//! Who may use the analysts' page, and from where.
//!
//! Labels steer retraining (a benign label teaches the model to ignore a flow), so the page is
//! guarded like Jupyter guards its notebooks, on loopback too:
//!
//! - **A token on every request.** Generated at start-up unless one is given, printed once as
//!   the URL that opens the page, and kept in the data directory while the sensor runs
//!   ([`TOKEN_FILE`]) for the CLI and scripts. The first visit trades `?token=` for a cookie
//!   (`HttpOnly`, `SameSite=Strict`, named after the port, since cookies ignore ports) and a
//!   redirect that takes the token out of the address bar. A token may name its analyst
//!   (`NAME:SECRET`): that name is the label's `by`.
//! - **Host check** against DNS rebinding: a page whose name was rebound to our address
//!   sends its own name as `Host`. Only IP literals of the bound address, `localhost` (when
//!   bound to loopback or to every address) and names configured in `[feedback] hosts` pass.
//! - **Origin check and JSON only** for requests that change state, against cross-site
//!   request forgery: a foreign `Origin` (or `Referer`) is refused, and so is any body that
//!   is not `application/json`, which no cross-site form or "simple" request can send.
//! - **Headers** that forbid framing, sniffing and scripts from anywhere but the page itself.

use std::net::{IpAddr, SocketAddr};

/// The file in the data directory that holds the page's URL with its token while the sensor
/// runs (mode 0600, removed when it stops).
pub const TOKEN_FILE: &str = "feedback.url";

/// The name labels get from a token that names nobody, and in `--feedback-no-token` mode.
pub const DEFAULT_ANALYST: &str = "web";

/// Response headers every reply carries.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
];

/// Why the page's access rules cannot be set up. The messages never repeat a secret.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AccessError {
    #[error(
        "--feedback-no-token is for loopback only: {0} is reachable from other machines; give the page a token (--feedback-token, [feedback] token or $MNPFLOW_FEEDBACK_TOKEN), or let the sensor generate one"
    )]
    NoTokenOffLoopback(SocketAddr),
    #[error(
        "feedback token #{index} ({what}): expected SECRET or NAME:SECRET, a secret of 8 to 256 printable characters without spaces, quotes, commas, semicolons or backslashes, a name of letters, digits and . _ - @"
    )]
    BadToken { index: usize, what: String },
    #[error(
        "feedback tokens #{0} and #{1} have the same secret: each analyst needs their own, or labels cannot say who gave them"
    )]
    SharedSecret(usize, usize),
    #[error("[feedback] hosts: {0:?} is not a host name (letters, digits, dots and dashes)")]
    BadHost(String),
    #[error("cannot generate a feedback token: the operating system's random source failed: {0}")]
    Random(String),
}

/// One token and the analyst it names.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    name: String,
    secret: String,
}

/// The page's access rules.
#[derive(Debug, Clone)]
pub struct Access {
    /// Whether the (single) token was generated at start-up rather than given.
    generated: bool,
    /// Empty only in `--feedback-no-token` mode (loopback).
    tokens: Vec<Token>,
    bound: SocketAddr,
    /// Extra `Host` names (lower case), from `[feedback] hosts`.
    hosts: Vec<String>,
    cookie: String,
}

fn secret_ok(s: &str) -> bool {
    (8..=256).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'))
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// Splits a list of tokens as `[feedback] token` and `$MNPFLOW_FEEDBACK_TOKEN` hold them:
/// separated by commas (which no secret or name contains), blanks ignored.
pub fn split_tokens(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

impl Access {
    /// Rules for a page bound to `bound`. `tokens` as the user gave them (`SECRET` or
    /// `NAME:SECRET`); none and not `no_token`: one is generated (see [`Access::generated`]).
    /// `no_token` drops every token and is refused off loopback.
    pub fn new(
        bound: SocketAddr,
        tokens: &[String],
        no_token: bool,
        hosts: &[String],
    ) -> Result<Access, AccessError> {
        let mut parsed: Vec<Token> = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            let (name, secret) = match t.split_once(':') {
                Some((n, s)) if name_ok(n) => (n.to_string(), s.to_string()),
                _ => (DEFAULT_ANALYST.to_string(), t.clone()),
            };
            if !secret_ok(&secret) {
                let what = if name == DEFAULT_ANALYST {
                    format!("a secret of {} characters", secret.chars().count())
                } else {
                    format!("analyst {name:?}, a secret of {} characters", secret.chars().count())
                };
                return Err(AccessError::BadToken { index: i + 1, what });
            }
            if let Some(j) = parsed.iter().position(|p| p.secret == secret) {
                return Err(AccessError::SharedSecret(j + 1, i + 1));
            }
            parsed.push(Token { name, secret });
        }
        let mut generated = false;
        if no_token {
            if !bound.ip().is_loopback() {
                return Err(AccessError::NoTokenOffLoopback(bound));
            }
            parsed.clear();
        } else if parsed.is_empty() {
            parsed.push(Token { name: DEFAULT_ANALYST.into(), secret: random_secret()? });
            generated = true;
        }
        let mut names = Vec::new();
        for h in hosts {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty()
                || !h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
            {
                return Err(AccessError::BadHost(h));
            }
            names.push(h);
        }
        Ok(Access { generated, tokens: parsed, bound, hosts: names, cookie: cookie_name(bound) })
    }

    /// The same rules for the address the server actually bound (port 0 becomes a real port,
    /// which the cookie's name and the printed URL need).
    pub fn bound_to(mut self, bound: SocketAddr) -> Access {
        self.bound = bound;
        self.cookie = cookie_name(bound);
        self
    }

    /// Whether the token was generated at start-up (then the printed URL carries it: nobody
    /// else knows it); a token the user gave is not printed.
    pub fn generated(&self) -> bool {
        self.generated
    }

    /// The analysts the tokens name, in order.
    pub fn analysts(&self) -> Vec<&str> {
        self.tokens.iter().map(|t| t.name.as_str()).collect()
    }

    /// Whether requests need a token (false only with `--feedback-no-token`).
    pub fn needs_token(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The page's URL with the first token (what opens the page in a browser), or without
    /// one in no-token mode. Bound to every address, it names loopback.
    pub fn page_url(&self) -> String {
        let host = match self.bound.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        match self.tokens.first() {
            Some(t) => {
                format!("http://{host}:{}/?token={}", self.bound.port(), percent_encode(&t.secret))
            }
            None => format!("http://{host}:{}/", self.bound.port()),
        }
    }

    /// The analyst a secret belongs to.
    fn analyst(&self, given: &str) -> Option<&str> {
        // Every token is compared, without an early exit, so timing says nothing.
        let mut found = None;
        for t in &self.tokens {
            if same_secret(given, &t.secret) && found.is_none() {
                found = Some(t.name.as_str());
            }
        }
        found
    }

    /// Who sent the request: the analyst of its bearer token, cookie or `?token=`; `None` when
    /// it carries no valid token. In no-token mode everyone is [`DEFAULT_ANALYST`].
    pub fn who(
        &self,
        authorization: Option<&str>,
        cookie: Option<&str>,
        query_token: Option<&str>,
    ) -> Option<&str> {
        if !self.needs_token() {
            return Some(DEFAULT_ANALYST);
        }
        let bearer = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
        let from_cookie = cookie.and_then(|c| {
            c.split(';').find_map(|kv| kv.trim().strip_prefix(&self.cookie)?.strip_prefix('='))
        });
        [bearer, from_cookie, query_token].into_iter().flatten().find_map(|g| self.analyst(g))
    }

    /// The `Set-Cookie` value that keeps `secret` for later requests of the page.
    pub fn cookie_for(&self, secret: &str) -> String {
        format!("{}={secret}; Path=/; HttpOnly; SameSite=Strict", self.cookie)
    }

    /// Whether a `Host` header names this page (DNS rebinding sends the attacker's name).
    pub fn host_ok(&self, host: Option<&str>) -> bool {
        let Some(host) = host.map(str::trim) else { return false };
        let name = match host.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((inside, after)) if after.is_empty() || after.starts_with(':') => inside,
                _ => return false,
            },
            None => match host.rsplit_once(':') {
                Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
                Some(_) => return false,
                None => host,
            },
        };
        let name = name.to_ascii_lowercase();
        let bound = self.bound.ip();
        if let Ok(ip) = name.parse::<IpAddr>() {
            return bound.is_unspecified() || ip == bound;
        }
        (name == "localhost" && (bound.is_loopback() || bound.is_unspecified()))
            || self.hosts.contains(&name)
    }

    /// Whether a state-changing request comes from the page itself: its `Origin`, or without
    /// one its `Referer`, must be this page's own (`http://` and the request's `Host`, which
    /// [`Access::host_ok`] checked); `Origin: null` (sandboxed frames, `no-referrer` pages) is
    /// not. Requests with neither come from no web page (curl, scripts) and pass: browsers send
    /// `Origin` with every POST, and were one not to, the JSON-only rule still holds, since no
    /// other origin can send `application/json` without a preflight that finds no CORS header.
    pub fn origin_ok(
        &self,
        host: Option<&str>,
        origin: Option<&str>,
        referer: Option<&str>,
    ) -> bool {
        let own = match host {
            Some(h) => format!("http://{}", h.trim().to_ascii_lowercase()),
            None => return false,
        };
        match (origin, referer) {
            (Some(o), _) => o.trim().to_ascii_lowercase() == own,
            (None, Some(r)) => {
                let r = r.trim().to_ascii_lowercase();
                r == own || r.starts_with(&(own + "/"))
            }
            (None, None) => true,
        }
    }
}

/// Cookies ignore ports: two sensors on one host need two names, or the second page's
/// cookie would replace the first's.
fn cookie_name(bound: SocketAddr) -> String {
    format!("mnpflow_token_{}", bound.port())
}

/// Query-string encoding of a secret (`+`, `&`, `%`, `#` and the like would change its
/// meaning in a URL).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 hex digits (128 bits) from the operating system's random source (`rand`'s `OsRng`:
/// getrandom on Linux), not a seeded generator: the token is a credential.
fn random_secret() -> Result<String, AccessError> {
    use rand::TryRngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(|e| AccessError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The secret in the page's URL.
    fn url_secret(a: &Access) -> String {
        a.page_url().split_once("?token=").map(|(_, s)| s.to_string()).unwrap_or_default()
    }

    #[test]
    fn a_token_is_generated_unless_given_or_refused() {
        let a = Access::new(at("127.0.0.1:8090"), &[], false, &[]).unwrap();
        assert!(a.generated() && a.needs_token());
        let secret = url_secret(&a);
        assert!(secret.len() == 32 && secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
        assert_eq!(a.page_url(), format!("http://127.0.0.1:8090/?token={secret}"));
        assert_eq!(a.who(Some(&format!("Bearer {secret}")), None, None), Some("web"));
        let b = Access::new(at("127.0.0.1:8090"), &[], false, &[]).unwrap();
        assert_ne!(url_secret(&b), secret, "a fresh secret per start");
        assert_eq!(b.who(Some(&format!("Bearer {secret}")), None, None), None);
        let c = Access::new(at("127.0.0.1:8090"), &["given-secret".into()], true, &[]).unwrap();
        assert!(!c.needs_token() && !c.generated(), "--feedback-no-token drops every token");
        assert_eq!(c.who(None, None, None), Some("web"));
        assert_eq!(c.page_url(), "http://127.0.0.1:8090/");
        assert_eq!(
            Access::new(at("0.0.0.0:8090"), &[], true, &[]).unwrap_err(),
            AccessError::NoTokenOffLoopback(at("0.0.0.0:8090"))
        );
        assert_eq!(
            Access::new(at("[::1]:8090"), &[], true, &[]).unwrap().page_url(),
            "http://[::1]:8090/"
        );
        assert_eq!(
            Access::new(at("0.0.0.0:0"), &[], false, &[])
                .unwrap()
                .bound_to(at("0.0.0.0:4242"))
                .page_url()
                .split('?')
                .next(),
            Some("http://127.0.0.1:4242/")
        );
        for bad in [
            "short",
            "has space in it",
            "semi;colon;x",
            "alice:",
            "x".repeat(300).as_str(),
            "quote\"quote\"",
        ] {
            let e = Access::new(at("127.0.0.1:1"), &[bad.to_string()], false, &[]).unwrap_err();
            assert!(matches!(e, AccessError::BadToken { index: 1, .. }), "{bad}: {e}");
            assert!(
                bad.len() < 6 || !e.to_string().contains(bad),
                "the message repeats the secret: {e}"
            );
        }
        let twice = ["alice:same-secret".to_string(), "bob:same-secret".to_string()];
        assert_eq!(
            Access::new(at("127.0.0.1:1"), &twice, false, &[]).unwrap_err(),
            AccessError::SharedSecret(1, 2)
        );
    }

    #[test]
    fn named_tokens_say_who_from_header_cookie_or_query() {
        let tokens = split_tokens("alice:a1ice-secret, bob:b0b-secret!,,plain+secret%");
        assert_eq!(tokens.len(), 3);
        let a = Access::new(at("127.0.0.1:8090"), &tokens, false, &[]).unwrap();
        assert!(!a.generated());
        assert_eq!(a.analysts(), ["alice", "bob", "web"]);
        assert_eq!(a.who(Some("Bearer a1ice-secret"), None, None), Some("alice"));
        assert_eq!(a.who(None, Some("other=1; mnpflow_token_8090=b0b-secret!"), None), Some("bob"));
        assert_eq!(
            a.who(None, Some("mnpflow_token_9999=b0b-secret!"), None),
            None,
            "another port's cookie"
        );
        assert_eq!(
            a.who(None, Some("mnpflow_token_80900=b0b-secret!"), None),
            None,
            "a longer name"
        );
        assert_eq!(a.who(None, None, Some("plain+secret%")), Some("web"));
        assert_eq!(a.who(Some("Bearer nope-nope"), None, None), None);
        assert_eq!(a.who(Some("Bearer "), Some(""), Some("")), None);
        assert_eq!(a.who(None, None, None), None);
        assert!(
            a.cookie_for("x").contains("HttpOnly") && a.cookie_for("x").contains("SameSite=Strict")
        );
        let b = Access::new(at("127.0.0.1:8090"), &["plain+secret%&#".to_string()], false, &[])
            .unwrap();
        assert_eq!(
            b.page_url(),
            "http://127.0.0.1:8090/?token=plain%2Bsecret%25%26%23",
            "the URL carries the secret intact"
        );
    }

    #[test]
    fn host_must_be_ours() {
        let lo = Access::new(at("127.0.0.1:8090"), &[], false, &["Sensor.Lab".into()]).unwrap();
        for ok in ["127.0.0.1:8090", "127.0.0.1", "localhost:8090", "LOCALHOST", "sensor.lab:8090"]
        {
            assert!(lo.host_ok(Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example:8090",
            "evil.example",
            "10.0.0.1:8090",
            "[::1]:8090",
            "127.0.0.1:80x",
            "",
            "[::1",
        ] {
            assert!(!lo.host_ok(Some(bad)), "{bad}");
        }
        assert!(!lo.host_ok(None));
        let any = Access::new(at("[::]:8090"), &[], false, &[]).unwrap();
        assert!(
            any.host_ok(Some("[fe80::1]:8090"))
                && any.host_ok(Some("192.0.2.7:8090"))
                && any.host_ok(Some("localhost:8090"))
        );
        assert!(!any.host_ok(Some("rebound.example:8090")));
        let public = Access::new(at("192.0.2.7:8090"), &[], false, &[]).unwrap();
        assert!(
            public.host_ok(Some("192.0.2.7:8090"))
                && !public.host_ok(Some("localhost:8090"))
                && !public.host_ok(Some("127.0.0.1:8090"))
        );
        assert_eq!(
            Access::new(at("127.0.0.1:1"), &[], false, &["evil example".into()]).unwrap_err(),
            AccessError::BadHost("evil example".into())
        );
    }

    #[test]
    fn origin_must_be_the_page_itself() {
        let a = Access::new(at("127.0.0.1:8090"), &[], false, &[]).unwrap();
        let h = Some("127.0.0.1:8090");
        assert!(a.origin_ok(h, Some("http://127.0.0.1:8090"), None));
        assert!(!a.origin_ok(h, Some("http://evil.example"), None));
        assert!(!a.origin_ok(h, Some("null"), None));
        assert!(
            !a.origin_ok(h, Some("http://127.0.0.1:9999"), None),
            "another port is another origin"
        );
        assert!(a.origin_ok(h, None, Some("http://127.0.0.1:8090/")));
        assert!(!a.origin_ok(h, None, Some("http://127.0.0.1:8090.evil.example/")));
        assert!(a.origin_ok(h, None, None), "curl and the CLI send neither");
    }
}
