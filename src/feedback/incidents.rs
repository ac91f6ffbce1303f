//! Incidents: the page's recent alerts grouped as an analyst thinks of them, so that one
//! verdict covers an attack of many flows.
//!
//! Two steps, over the alerts ordered by flow start:
//!
//! 1. **Pairs.** Alerts of the same source, destination, destination port and protocol are
//!    one group while each starts within [`WINDOW_SECS`] (10 minutes) of the previous one: an
//!    SSH brute force of 40 connections is one group.
//! 2. **Shapes across addresses.** Thin pairs (at most [`THIN_PAIR`] alerts each) with the
//!    group's last flow: those of one source, destination and protocol (a **scan** over ports,
//!    whatever their nearest prototypes: a scan's ports fall near several), then those left
//!    alone with the same nearest prototype and one destination, port and protocol (a
//!    **flood**: many sources, as spoofed ones are).
//!
//! An incident is named by its earliest flow's uid (`I` + uid), so its name holds while it
//! grows.

use std::collections::HashMap;

use serde::Serialize;

use super::web::AlertView;

/// Alerts further apart than this (seconds between flow starts) are not one incident.
pub const WINDOW_SECS: f64 = 600.0;
/// A pair of at most this many alerts may join a scan or a flood across addresses.
pub const THIN_PAIR: usize = 3;
/// A source's incident over at least this many ports (or hosts) is called a scan (a client
/// of a server's http and https is not).
pub const SCAN_PORTS: usize = 3;
/// Addresses, ports and services listed per incident (their counts are complete).
const LISTED: usize = 8;

/// What an incident looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// One alert.
    Single,
    /// Several flows of one source to one service (a brute force, a beacon).
    Repeated,
    /// One source, many ports or hosts ([`SCAN_PORTS`] or more).
    Scan,
    /// Many sources, one destination and port.
    Flood,
    /// Anything else.
    Mixed,
}

/// One incident and its member alerts.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    /// `I` + the uid of its earliest flow.
    pub id: String,
    pub shape: Shape,
    /// Member alerts (flows).
    pub flows: usize,
    /// First and last flow start, Unix seconds.
    pub first: f64,
    pub last: f64,
    pub peak_score: f32,
    pub median_score: f32,
    /// Sources, destinations, destination ports, services: the first few, and how many.
    pub sources: Vec<String>,
    pub n_sources: usize,
    pub destinations: Vec<String>,
    pub n_destinations: usize,
    pub ports: Vec<u16>,
    pub n_ports: usize,
    pub services: Vec<String>,
    /// The highest-scoring member: its uid, nearest prototype and reason.
    pub top: String,
    pub prototype: u32,
    pub reason: String,
    /// Member alerts by flow start.
    #[serde(skip)]
    pub members: Vec<AlertView>,
}

/// A service's name by protocol and port: the common ones by name, else `tcp/PORT`.
pub fn service(proto: u8, port: u16) -> String {
    let name = match (proto, port) {
        (6, 21) => "ftp",
        (6, 22) => "ssh",
        (6, 23) => "telnet",
        (6, 25) => "smtp",
        (6 | 17, 53) => "dns",
        (6, 80) => "http",
        (17, 123) => "ntp",
        (6, 443) => "https",
        (6, 445) => "smb",
        (6, 3389) => "rdp",
        (6, 8883) => "mqtt",
        (1 | 58, _) => "icmp",
        _ => "",
    };
    if !name.is_empty() {
        return name.to_owned();
    }
    let p = match proto {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        132 => "sctp".to_owned(),
        p => p.to_string(),
    };
    format!("{p}/{port}")
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Joins `group`'s pairs by `key`, chaining within the window; returns how many pairs each
/// pair's new group holds.
fn join_by<K: std::hash::Hash + Eq>(
    pairs: &[Vec<usize>],
    alerts: &[AlertView],
    candidates: &[usize],
    parent: &mut [usize],
    key: impl Fn(usize) -> K,
) {
    let mut open: HashMap<K, (usize, f64)> = HashMap::new();
    for &p in candidates {
        let first = alerts[pairs[p][0]].flow.ts;
        let last = alerts[*pairs[p].last().unwrap_or(&pairs[p][0])].flow.ts;
        match open.get_mut(&key(p)) {
            Some((root, end)) if first - *end <= WINDOW_SECS => {
                let (a, b) = (find(parent, *root), find(parent, p));
                parent[b] = a;
                *end = end.max(last);
            }
            _ => {
                open.insert(key(p), (p, last));
            }
        }
    }
}

/// Groups `alerts` into incidents, the most recently active first.
pub fn incidents(alerts: &[AlertView]) -> Vec<Incident> {
    let mut order: Vec<usize> = (0..alerts.len()).collect();
    order.sort_by(|&a, &b| {
        alerts[a].flow.ts.total_cmp(&alerts[b].flow.ts).then(alerts[a].seq.cmp(&alerts[b].seq))
    });
    // 1. Pairs: source, destination, port, protocol, chained within the window.
    let mut pairs: Vec<Vec<usize>> = Vec::new();
    let mut open: HashMap<(&str, &str, u16, u8), (usize, f64)> = HashMap::new();
    for &i in &order {
        let f = &alerts[i].flow;
        let key = (f.orig_h.as_str(), f.resp_h.as_str(), f.resp_p, f.proto);
        match open.get_mut(&key) {
            Some((p, last)) if f.ts - *last <= WINDOW_SECS => {
                pairs[*p].push(i);
                *last = f.ts;
            }
            _ => {
                open.insert(key, (pairs.len(), f.ts));
                pairs.push(vec![i]);
            }
        }
    }
    // Each pair's prototype: its highest-scoring alert's.
    let top_of = |p: &Vec<usize>| {
        p.iter().copied().max_by(|&a, &b| alerts[a].flow.score.total_cmp(&alerts[b].flow.score))
    };
    let proto_of: Vec<u32> =
        pairs.iter().map(|p| top_of(p).map_or(0, |i| alerts[i].prototype)).collect();
    // 2. Thin pairs across addresses, by first flow start: scans, then floods.
    let mut parent: Vec<usize> = (0..pairs.len()).collect();
    let mut thin: Vec<usize> = (0..pairs.len()).filter(|&p| pairs[p].len() <= THIN_PAIR).collect();
    thin.sort_by(|&a, &b| alerts[pairs[a][0]].flow.ts.total_cmp(&alerts[pairs[b][0]].flow.ts));
    join_by(&pairs, alerts, &thin, &mut parent, |p| {
        let f = &alerts[pairs[p][0]].flow;
        (f.orig_h.clone(), f.resp_h.clone(), f.proto)
    });
    let mut size = vec![0usize; pairs.len()];
    for p in 0..pairs.len() {
        size[find(&mut parent, p)] += 1;
    }
    let alone: Vec<usize> =
        thin.iter().copied().filter(|&p| size[find(&mut parent, p)] == 1).collect();
    join_by(&pairs, alerts, &alone, &mut parent, |p| {
        let f = &alerts[pairs[p][0]].flow;
        (f.resp_h.clone(), f.resp_p, f.proto, proto_of[p])
    });
    // Collect each group's alerts.
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (p, members) in pairs.iter().enumerate() {
        groups.entry(find(&mut parent, p)).or_default().extend(members);
    }
    let mut out: Vec<Incident> =
        groups.into_values().map(|mut m| summarize(alerts, &mut m, &pairs)).collect();
    out.sort_by(|a, b| b.last.total_cmp(&a.last).then_with(|| a.id.cmp(&b.id)));
    out
}

/// Distinct values in order of first appearance: the first [`LISTED`], and how many.
fn distinct<T: PartialEq + Clone>(it: impl Iterator<Item = T>) -> (Vec<T>, usize) {
    let mut all: Vec<T> = Vec::new();
    for v in it {
        if !all.contains(&v) {
            all.push(v);
        }
    }
    let n = all.len();
    all.truncate(LISTED);
    (all, n)
}

fn summarize(alerts: &[AlertView], m: &mut [usize], pairs: &[Vec<usize>]) -> Incident {
    m.sort_by(|&a, &b| {
        alerts[a].flow.ts.total_cmp(&alerts[b].flow.ts).then(alerts[a].seq.cmp(&alerts[b].seq))
    });
    let members: Vec<AlertView> = m.iter().map(|&i| alerts[i].clone()).collect();
    let mut scores: Vec<f32> = members.iter().map(|a| a.flow.score).collect();
    scores.sort_by(f32::total_cmp);
    let n = scores.len();
    let median = if n % 2 == 1 { scores[n / 2] } else { (scores[n / 2 - 1] + scores[n / 2]) / 2.0 };
    let top =
        members.iter().max_by(|a, b| a.flow.score.total_cmp(&b.flow.score)).unwrap_or(&members[0]);
    let (sources, n_sources) = distinct(members.iter().map(|a| a.flow.orig_h.clone()));
    let (destinations, n_destinations) = distinct(members.iter().map(|a| a.flow.resp_h.clone()));
    let (ports, n_ports) = distinct(members.iter().map(|a| a.flow.resp_p));
    let (services, _) = distinct(members.iter().map(|a| service(a.flow.proto, a.flow.resp_p)));
    let one_pair = pairs.iter().any(|p| p.len() == n && p.contains(&m[0]));
    let shape = if n == 1 {
        Shape::Single
    } else if one_pair {
        Shape::Repeated
    } else if n_sources == 1 && n_ports.max(n_destinations) >= SCAN_PORTS {
        Shape::Scan
    } else if n_destinations == 1 && n_ports == 1 {
        Shape::Flood
    } else {
        Shape::Mixed
    };
    let reason = match &top.indicator {
        Some(r) => format!("indicator {r}"),
        None if !top.reason.is_empty() => top.reason.clone(),
        None => format!(
            "reconstruction {:.4}, prototype {} (similarity {:.3})",
            top.recon_error, top.prototype, top.similarity
        ),
    };
    Incident {
        id: format!("I{}", members[0].flow.uid),
        shape,
        flows: n,
        first: members[0].flow.ts,
        last: members[n - 1].flow.ts,
        peak_score: scores[n - 1],
        median_score: median,
        sources,
        n_sources,
        destinations,
        n_destinations,
        ports,
        n_ports,
        services,
        top: top.flow.uid.clone(),
        prototype: top.prototype,
        reason,
        members,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::ScoredFlow;

    fn alert(n: u64, src: &str, dst: &str, port: u16, ts: f64, prototype: u32) -> AlertView {
        AlertView {
            seq: n,
            time: String::new(),
            flow_id: n,
            flow: ScoredFlow {
                uid: format!("C{n}"),
                community_id: format!("1:C{n}="),
                ts,
                orig_h: src.into(),
                orig_p: 40000 + n as u16,
                resp_h: dst.into(),
                resp_p: port,
                proto: 6,
                schema: "fp".into(),
                features: vec![0.5; 3],
                score: 0.6 + (n % 10) as f32 / 100.0,
            },
            threshold: 0.5,
            model: "sha1:00".into(),
            recon_error: 0.1,
            prototype,
            similarity: 0.2,
            reason: format!("reason of C{n}"),
            reasons: Vec::new(),
            indicator: None,
            label: None,
        }
    }

    fn uids(i: &Incident) -> Vec<String> {
        i.members.iter().map(|a| a.flow.uid.clone()).collect()
    }

    #[test]
    fn a_brute_force_a_scan_and_a_flood_are_one_incident_each() {
        let mut alerts = Vec::new();
        let mut n = 0u64;
        let mut next = |src: &str, dst: &str, port: u16, ts: f64, prototype: u32| {
            n += 1;
            alert(n, src, dst, port, ts, prototype)
        };
        // An SSH brute force: 40 connections, one every 5 s, from one source to dest:22.
        for k in 0..40 {
            alerts.push(next("203.0.113.9", "10.0.1.22", 22, 1000.0 + 5.0 * k as f64, 1));
        }
        // A port scan: one source over 100 ports of one host, within a minute, its ports near
        // two prototypes.
        for k in 0..100 {
            let prototype = 2 + (k % 2) as u32;
            alerts.push(next(
                "10.0.0.66",
                "10.0.1.80",
                1 + k as u16,
                1100.0 + 0.5 * k as f64,
                prototype,
            ));
        }
        // A SYN flood: 200 spoofed sources, one packet each, to 10.0.1.80:80.
        for k in 0..200 {
            let src = format!("198.51.{}.{}", 100 + k / 250, k % 250);
            alerts.push(next(&src, "10.0.1.80", 80, 1200.0 + 0.1 * k as f64, 3));
        }
        // Unrelated: the same pair an hour later, another source to the same SSH server
        // (another prototype), a lone exfiltration.
        let late = next("203.0.113.9", "10.0.1.22", 22, 1000.0 + 3600.0, 1);
        let other = next("10.0.0.5", "10.0.1.22", 22, 1010.0, 4);
        let exfil = next("10.0.0.31", "203.0.113.50", 8443, 1300.0, 5);
        alerts.extend([late.clone(), other.clone(), exfil.clone()]);
        // The feed's order (newest first) does not matter.
        alerts.reverse();
        let inc = incidents(&alerts);
        assert_eq!(inc.len(), 6, "{:?}", inc.iter().map(|i| (&i.id, i.flows)).collect::<Vec<_>>());
        assert_eq!(inc.iter().map(|i| i.flows).sum::<usize>(), alerts.len());
        let of = |uid: &str| inc.iter().find(|i| uids(i).iter().any(|u| u == uid)).unwrap();

        let ssh = of("C1");
        assert_eq!((ssh.flows, ssh.shape, ssh.id.as_str()), (40, Shape::Repeated, "IC1"));
        assert_eq!((ssh.first, ssh.last), (1000.0, 1195.0));
        assert_eq!(
            (ssh.sources.clone(), ssh.destinations.clone()),
            (vec!["203.0.113.9".to_string()], vec!["10.0.1.22".to_string()])
        );
        assert_eq!((ssh.ports.clone(), ssh.services.clone()), (vec![22], vec!["ssh".to_string()]));
        assert!((ssh.peak_score - 0.69).abs() < 1e-6, "{}", ssh.peak_score);
        assert!((ssh.median_score - 0.645).abs() < 1e-6, "{}", ssh.median_score);
        assert_eq!(ssh.reason, format!("reason of {}", ssh.top));

        let scan = of("C41");
        assert_eq!(
            (scan.flows, scan.shape, scan.n_ports, scan.ports.len()),
            (100, Shape::Scan, 100, 8)
        );
        assert_eq!((scan.n_sources, scan.n_destinations), (1, 1));

        let flood = of("C141");
        assert_eq!((flood.flows, flood.shape, flood.n_sources), (200, Shape::Flood, 200));
        assert_eq!(
            (flood.ports.clone(), flood.services.clone()),
            (vec![80], vec!["http".to_string()])
        );

        for lone in [&late, &other, &exfil] {
            let i = of(&lone.flow.uid);
            assert_eq!((i.flows, i.shape), (1, Shape::Single), "{}", lone.flow.uid);
        }
        assert_eq!(of(&exfil.flow.uid).services, ["tcp/8443"]);
        // Most recently active first.
        assert_eq!(inc[0].id, format!("I{}", late.flow.uid));
    }

    #[test]
    fn a_gap_longer_than_the_window_splits_a_pair() {
        let alerts = vec![
            alert(1, "10.0.0.1", "10.0.0.2", 22, 0.0, 1),
            alert(2, "10.0.0.1", "10.0.0.2", 22, 500.0, 1),
            alert(3, "10.0.0.1", "10.0.0.2", 22, 1000.0, 1),
            alert(4, "10.0.0.1", "10.0.0.2", 22, 1000.0 + WINDOW_SECS + 1.0, 1),
        ];
        let inc = incidents(&alerts);
        let sizes: Vec<usize> = inc.iter().map(|i| i.flows).collect();
        assert_eq!(sizes, [1, 3], "a chain within the window, then a new incident");
        assert!(incidents(&[]).is_empty());
        // A client of a server's http and https: one incident, not called a scan.
        let two = [
            alert(1, "10.0.0.9", "10.0.1.80", 80, 0.0, 1),
            alert(2, "10.0.0.9", "10.0.1.80", 443, 1.0, 2),
        ];
        let inc = incidents(&two);
        assert_eq!((inc.len(), inc[0].shape), (1, Shape::Mixed));
    }
}
