//! Rules: the repository's `rules/` folder, one or more TOML files of two kinds of rule.
//!
//! ```toml
//! [[suppress]]
//! reason = "backup server's nightly upload"   # required: why, for whoever reads the counts
//! cidr = "10.0.0.0/24"        # either endpoint in this network
//! src_cidr = "10.0.0.5/32"    # the originator in this network
//! dest_cidr = "192.0.2.0/24"  # the responder in this network
//! port = 443                  # either port
//! dest_port = 22              # the responder's port
//! proto = "tcp"               # tcp, udp, icmp, ipv6-icmp, or a protocol number
//! community_id = "1:..."      # exactly this conversation
//!
//! [[indicator]]               # same conditions: a known-bad address, network, port...
//! reason = "C2 server from the incident of 2026-11-02"
//! dest_cidr = "203.0.113.7"
//! ```
//!
//! A rule matches when every condition it states holds. An alert matching a `suppress` rule
//! is not written; a flow matching an `indicator` is an alert whatever its score, and is
//! labeled an attack by the rule (a weak label beside the analysts' for the learning loop).
//! Each rule counts its matches. Unknown keys and bad values are errors that name the file
//! and line, so a typo cannot silently disable a rule; a sensor that reloads its rules keeps
//! the ones in force when a new file is refused.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    mask: u128,
    v4: bool,
}

fn bits(a: IpAddr) -> (u128, bool) {
    match a {
        IpAddr::V4(v4) => (u32::from(v4) as u128, true),
        IpAddr::V6(v6) => (u128::from(v6), false),
    }
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a.trim().parse::<IpAddr>().ok()?, Some(l.trim().parse::<u32>().ok()?)),
            None => (s.trim().parse::<IpAddr>().ok()?, None),
        };
        let (b, v4) = bits(addr);
        let width = if v4 { 32 } else { 128 };
        let len = len.unwrap_or(width);
        if len > width {
            return None;
        }
        let mask = if len == 0 {
            0
        } else {
            (u128::MAX << (width - len)) & if v4 { u32::MAX as u128 } else { u128::MAX }
        };
        Some(Cidr { net: b & mask, mask, v4 })
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        let (b, v4) = bits(a);
        v4 == self.v4 && b & self.mask == self.net
    }
}

/// One rule as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    reason: String,
    cidr: Option<String>,
    src_cidr: Option<String>,
    dest_cidr: Option<String>,
    port: Option<u16>,
    src_port: Option<u16>,
    dest_port: Option<u16>,
    proto: Option<toml::Value>,
    community_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    suppress: Vec<toml::Spanned<RawRule>>,
    #[serde(default)]
    indicator: Vec<toml::Spanned<RawRule>>,
}

/// One rule (suppression or indicator).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `file:line` for reports.
    pub origin: String,
    pub reason: String,
    pub cidr: Option<Cidr>,
    pub src_cidr: Option<Cidr>,
    pub dest_cidr: Option<Cidr>,
    pub port: Option<u16>,
    pub src_port: Option<u16>,
    pub dest_port: Option<u16>,
    pub proto: Option<u8>,
    pub community_id: Option<String>,
}

/// What a rule is matched against.
#[derive(Debug, Clone, Copy)]
pub struct FlowIdentity<'a> {
    pub src: IpAddr,
    pub src_port: u16,
    pub dest: IpAddr,
    pub dest_port: u16,
    pub proto: u8,
    /// Computed only when some rule names a community ID.
    pub community_id: Option<&'a str>,
}

impl Rule {
    pub fn matches(&self, f: &FlowIdentity<'_>) -> bool {
        self.cidr.is_none_or(|c| c.contains(f.src) || c.contains(f.dest))
            && self.src_cidr.is_none_or(|c| c.contains(f.src))
            && self.dest_cidr.is_none_or(|c| c.contains(f.dest))
            && self.port.is_none_or(|p| p == f.src_port || p == f.dest_port)
            && self.src_port.is_none_or(|p| p == f.src_port)
            && self.dest_port.is_none_or(|p| p == f.dest_port)
            && self.proto.is_none_or(|p| p == f.proto)
            && self.community_id.as_deref().is_none_or(|c| Some(c) == f.community_id)
    }
}

/// Why the rules could not be loaded. Names the file (and line, from the TOML parser).
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Toml { path: PathBuf, source: toml::de::Error },
    #[error("{path}:{line}: {problem}")]
    Invalid { path: PathBuf, line: usize, problem: String },
}

fn proto_number(v: &toml::Value) -> Option<u8> {
    match v {
        toml::Value::Integer(i) => u8::try_from(*i).ok(),
        toml::Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(6),
            "udp" => Some(17),
            "icmp" => Some(1),
            "ipv6-icmp" | "icmpv6" | "icmp6" => Some(58),
            "sctp" => Some(132),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

/// Every rule of a folder, with a match counter per rule.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// Suppression rules and their hits.
    pub rules: Vec<Rule>,
    pub hits: Vec<u64>,
    /// Indicators and their hits.
    pub indicators: Vec<Rule>,
    pub indicator_hits: Vec<u64>,
}

impl RuleSet {
    /// Reads `*.toml` in `dir` (sorted by name). A missing folder is an empty set.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet::default();
        if !dir.is_dir() {
            return Ok(set);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| RuleError::Io { path: dir.to_owned(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|source| RuleError::Io { path: f.clone(), source })?;
            set.add_toml(&f, &text)?;
        }
        Ok(set)
    }

    /// Adds the rules of one file's text; on an error nothing of the file is added.
    pub fn add_toml(&mut self, path: &Path, text: &str) -> Result<(), RuleError> {
        let file: RuleFile = toml::from_str(text)
            .map_err(|source| RuleError::Toml { path: path.to_owned(), source })?;
        let line_of =
            |at: usize| text[..at.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1;
        let parsed = |raw: Vec<toml::Spanned<RawRule>>| -> Result<Vec<Rule>, RuleError> {
            raw.into_iter()
                .map(|r| Self::rule(path, line_of(r.span().start), r.into_inner()))
                .collect()
        };
        let suppress = parsed(file.suppress)?;
        let indicators = parsed(file.indicator)?;
        self.hits.extend(suppress.iter().map(|_| 0));
        self.rules.extend(suppress);
        self.indicator_hits.extend(indicators.iter().map(|_| 0));
        self.indicators.extend(indicators);
        Ok(())
    }

    fn rule(path: &Path, line: usize, r: RawRule) -> Result<Rule, RuleError> {
        let invalid = |problem: String| RuleError::Invalid { path: path.to_owned(), line, problem };
        let cidr = |s: &Option<String>, key: &str| -> Result<Option<Cidr>, RuleError> {
            match s {
                None => Ok(None),
                Some(s) => Cidr::parse(s).map(Some).ok_or_else(|| {
                    invalid(format!("{key} = {s:?} is not an address or CIDR block"))
                }),
            }
        };
        let proto =
            match &r.proto {
                None => None,
                Some(v) => Some(proto_number(v).ok_or_else(|| {
                    invalid(format!("proto = {v} is not a protocol name or number"))
                })?),
            };
        let rule = Rule {
            origin: format!("{}:{}", path.display(), line),
            cidr: cidr(&r.cidr, "cidr")?,
            src_cidr: cidr(&r.src_cidr, "src_cidr")?,
            dest_cidr: cidr(&r.dest_cidr, "dest_cidr")?,
            port: r.port,
            src_port: r.src_port,
            dest_port: r.dest_port,
            proto,
            community_id: r.community_id.clone(),
            reason: r.reason,
        };
        if rule.cidr.is_none()
            && rule.src_cidr.is_none()
            && rule.dest_cidr.is_none()
            && rule.port.is_none()
            && rule.src_port.is_none()
            && rule.dest_port.is_none()
            && rule.proto.is_none()
            && rule.community_id.is_none()
        {
            return Err(invalid("no condition: the rule would match every flow".into()));
        }
        Ok(rule)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.indicators.is_empty()
    }

    /// Whether some rule needs the community ID.
    pub fn needs_community_id(&self) -> bool {
        self.rules.iter().chain(&self.indicators).any(|r| r.community_id.is_some())
    }

    /// The first matching indicator, counted.
    pub fn indicate(&mut self, f: &FlowIdentity<'_>) -> Option<usize> {
        let i = self.indicators.iter().position(|r| r.matches(f))?;
        self.indicator_hits[i] += 1;
        Some(i)
    }

    /// Takes the hit counts of `old` for the rules that are still here (same file, line and
    /// conditions), so a reload does not reset the counts of unchanged rules.
    pub fn carry_hits_from(&mut self, old: &RuleSet) {
        for (r, h) in self.rules.iter().zip(self.hits.iter_mut()) {
            if let Some(i) = old.rules.iter().position(|o| o == r) {
                *h = old.hits[i];
            }
        }
        for (r, h) in self.indicators.iter().zip(self.indicator_hits.iter_mut()) {
            if let Some(i) = old.indicators.iter().position(|o| o == r) {
                *h = old.indicator_hits[i];
            }
        }
    }

    /// The first matching rule, counted.
    pub fn suppress(&mut self, f: &FlowIdentity<'_>) -> Option<usize> {
        let i = self.rules.iter().position(|r| r.matches(f))?;
        self.hits[i] += 1;
        Some(i)
    }

    pub fn suppressed_total(&self) -> u64 {
        self.hits.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(src: &str, sp: u16, dst: &str, dp: u16, proto: u8) -> FlowIdentity<'static> {
        FlowIdentity {
            src: src.parse().unwrap(),
            src_port: sp,
            dest: dst.parse().unwrap(),
            dest_port: dp,
            proto,
            community_id: None,
        }
    }

    #[test]
    fn cidr_blocks() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/32").unwrap().contains("2001:db8:1::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.1").unwrap().contains("10.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "x/8", "10.0.0/8", ""] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn every_condition_must_hold_and_hits_count() {
        let mut set = RuleSet::default();
        set.add_toml(Path::new("t.toml"), "[[suppress]]\nreason = \"ntp\"\ndest_port = 123\nproto = \"udp\"\n\n[[suppress]]\nreason = \"lab\"\ncidr = \"192.168.0.0/16\"\n").unwrap();
        assert_eq!(set.suppress(&id("10.0.0.1", 5000, "10.0.0.2", 123, 17)), Some(0));
        assert_eq!(set.suppress(&id("10.0.0.1", 5000, "10.0.0.2", 123, 6)), None);
        assert_eq!(set.suppress(&id("10.0.0.1", 5000, "192.168.3.2", 80, 6)), Some(1));
        assert_eq!(set.hits, vec![1, 1]);
    }

    #[test]
    fn mistakes_name_file_and_rule() {
        let mut set = RuleSet::default();
        let e = set
            .add_toml(Path::new("r.toml"), "[[suppress]]\nreason = \"x\"\ncdir = \"10.0.0.0/8\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.toml") && e.contains("cdir"), "{e}");
        let e = set
            .add_toml(Path::new("r.toml"), "[[suppress]]\nreason = \"x\"\ncidr = \"10.0.0.0/40\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.toml:1:") && e.contains("CIDR"), "{e}");
        let e = set
            .add_toml(Path::new("r.toml"), "[[suppress]]\nreason = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no condition"), "{e}");
        // The line of the offending rule, also for an indicator further down.
        let text = "# comment\n[[suppress]]\nreason = \"ok\"\nport = 53\n\n[[indicator]]\nreason = \"bad\"\nsrc_cidr = \"10.0.0.999\"\n";
        let e = set.add_toml(Path::new("r.toml"), text).unwrap_err().to_string();
        assert!(e.starts_with("r.toml:6:") && e.contains("10.0.0.999"), "{e}");
        let e = set
            .add_toml(Path::new("r.toml"), "[[indicator]]\nreason = \"x\"\nport = \"http\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.toml") && e.contains("line 3"), "{e}");
        assert!(set.is_empty(), "a refused file adds nothing");
    }

    #[test]
    fn indicators_match_and_reloads_keep_counts() {
        let text = "[[suppress]]\nreason = \"dns\"\nport = 53\n\n[[indicator]]\nreason = \"c2\"\ndest_cidr = \"203.0.113.0/24\"\n";
        let mut set = RuleSet::default();
        set.add_toml(Path::new("r.toml"), text).unwrap();
        assert_eq!(set.indicators[0].origin, "r.toml:5");
        assert_eq!(set.indicate(&id("10.0.0.1", 4000, "203.0.113.9", 443, 6)), Some(0));
        assert_eq!(set.indicate(&id("10.0.0.1", 4000, "198.51.100.9", 443, 6)), None);
        assert_eq!(set.suppress(&id("10.0.0.1", 4000, "10.0.0.2", 53, 17)), Some(0));
        let mut again = RuleSet::default();
        again.add_toml(Path::new("r.toml"), text).unwrap();
        again
            .add_toml(Path::new("s.toml"), "[[indicator]]\nreason = \"new\"\nport = 4444\n")
            .unwrap();
        again.carry_hits_from(&set);
        assert_eq!((again.hits.clone(), again.indicator_hits.clone()), (vec![1], vec![1, 0]));
    }
}
