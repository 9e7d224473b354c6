//! The replication policy and the recovery-point catalog: which points exist, which the policy
//! keeps, how a failover's choice of point resolves, and where the policy was not met.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::journal::{
    Consistency, Journal, PointId, UnavailablePoint, format_duration, format_time, parse_duration,
    parse_time, point_id,
};
use serde::{Deserialize, Serialize};

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;

/// A replication policy, as Site Recovery's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// How long recovery points are kept: 1 hour to 15 days (24 hours by default).
    pub retention_ms: u64,
    /// How often app-consistent points are taken: 1 to 12 hours (60 minutes by default), or 0
    /// for none.
    pub app_frequency_ms: u64,
    /// How often crash-consistent points are taken: 5 minutes.
    pub crash_interval_ms: u64,
    /// The RPO threshold that raises an alert: 15 minutes by default.
    pub rpo_threshold_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retention_ms: 24 * HOUR,
            app_frequency_ms: HOUR,
            crash_interval_ms: 5 * MINUTE,
            rpo_threshold_ms: 15 * MINUTE,
        }
    }
}

impl Policy {
    /// Checks the policy's limits.
    ///
    /// # Errors
    /// A value is outside what Site Recovery accepts.
    pub fn validate(&self) -> Result<()> {
        if !(HOUR..=15 * 24 * HOUR).contains(&self.retention_ms) {
            return Err(Error::argument(format!(
                "retention {}: expected 1h to 15d",
                format_duration(self.retention_ms)
            )));
        }
        if self.app_frequency_ms != 0 && !(HOUR..=12 * HOUR).contains(&self.app_frequency_ms) {
            return Err(Error::argument(format!(
                "app-consistent frequency {}: expected 1h to 12h (below 60 minutes is not \
                 accepted), or 0 for none",
                format_duration(self.app_frequency_ms)
            )));
        }
        if self.crash_interval_ms != 5 * MINUTE {
            return Err(Error::argument(format!(
                "crash-consistent interval {}: Site Recovery takes one every 5m",
                format_duration(self.crash_interval_ms)
            )));
        }
        if self.rpo_threshold_ms == 0 {
            return Err(Error::argument("RPO threshold: expected more than 0"));
        }
        Ok(())
    }

    /// A policy from the CLI's duration strings (`None` keeps the default).
    ///
    /// # Errors
    /// A duration does not parse or the policy is invalid.
    pub fn from_args(
        retention: Option<&str>,
        app_frequency: Option<&str>,
        rpo_threshold: Option<&str>,
    ) -> Result<Policy> {
        let mut p = Policy::default();
        let parse = |what: &str, s: &str| {
            if s == "0" || s == "off" {
                return Ok(0);
            }
            parse_duration(s).map_err(|e| Error::argument(format!("{what}: {}", e.message())))
        };
        if let Some(s) = retention {
            p.retention_ms = parse("retention", s)?;
        }
        if let Some(s) = app_frequency {
            p.app_frequency_ms = parse("app-consistent frequency", s)?;
        }
        if let Some(s) = rpo_threshold {
            p.rpo_threshold_ms = parse("RPO threshold", s)?;
        }
        p.validate()?;
        Ok(p)
    }
}

/// One recovery point as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointInfo {
    /// `rp-SEQ`.
    pub id: PointId,
    /// The marker's sequence number.
    pub seq: u64,
    /// RFC 3339 UTC.
    pub time: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Crash- or app-consistent.
    pub consistency: Consistency,
    /// Multi-VM point: `GROUP/TAG` in hex and decimal.
    pub multi_vm: Option<String>,
    /// The root digest the marker records, if any.
    pub digest: Option<Digest>,
    /// Whether the point lies within the processed horizon.
    pub processed: bool,
    /// The marker's label.
    pub label: String,
    #[serde(skip)]
    group: Option<([u8; 16], u64)>,
}

/// A failover's choice of recovery point, as Site Recovery names them (the recovery-plan
/// `recoveryPointType` values `Latest`, `LatestProcessed`, `LatestApplicationConsistent`, the
/// multi-VM sync point, and a custom point of one item).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointChoice {
    /// The newest point, after processing everything received: lowest RPO, higher RTO.
    Latest,
    /// The newest processed point: no processing, lowest RTO.
    LatestProcessed,
    /// The newest processed app-consistent point.
    LatestApplicationConsistent,
    /// The newest processed multi-VM point common to every disk of the group.
    LatestMultiVmProcessed,
    /// The newest processed app-consistent multi-VM point common to every disk of the group.
    LatestMultiVmApplicationConsistent,
    /// A point by id.
    Custom(PointId),
    /// The newest processed point at or before a time (milliseconds since the Unix epoch).
    CustomTime(u64),
}

/// The CLI's spellings of the choices, each with Site Recovery's name.
const CHOICES: [(&str, &str, PointChoice); 5] = [
    ("latest", "Latest", PointChoice::Latest),
    (
        "latest-processed",
        "LatestProcessed",
        PointChoice::LatestProcessed,
    ),
    (
        "latest-app-consistent",
        "LatestApplicationConsistent",
        PointChoice::LatestApplicationConsistent,
    ),
    (
        "latest-multi-vm-processed",
        "LatestMultiVmProcessed",
        PointChoice::LatestMultiVmProcessed,
    ),
    (
        "latest-multi-vm-app-consistent",
        "LatestMultiVmApplicationConsistent",
        PointChoice::LatestMultiVmApplicationConsistent,
    ),
];

impl std::str::FromStr for PointChoice {
    type Err = Error;
    /// `latest`, `latest-processed`, `latest-app-consistent`, `latest-multi-vm-processed`,
    /// `latest-multi-vm-app-consistent` (or Site Recovery's names: `LatestProcessed`, ...), a
    /// point id (`rp-N`) or an RFC 3339 time.
    fn from_str(s: &str) -> Result<Self> {
        if let Some((_, _, c)) = CHOICES.iter().find(|(cli, asr, _)| s == *cli || s == *asr) {
            return Ok(*c);
        }
        if s.starts_with("rp-") {
            return s.parse().map(PointChoice::Custom);
        }
        match parse_time(s) {
            Ok(t) => Ok(PointChoice::CustomTime(t)),
            Err(e) if s.as_bytes().first().is_some_and(u8::is_ascii_digit) => Err(e),
            Err(_) => Err(Error::argument(format!(
                "point {s:?}: expected latest, latest-processed, latest-app-consistent, \
                 latest-multi-vm-processed, latest-multi-vm-app-consistent, a point id \
                 (rp-N) or a time (2026-11-22T06:00:00Z)"
            ))),
        }
    }
}

impl std::fmt::Display for PointChoice {
    /// Site Recovery's name of the choice (`Custom rp-N`, `Custom TIME` for custom points).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointChoice::Custom(id) => write!(f, "Custom {id}"),
            PointChoice::CustomTime(t) => write!(f, "Custom {}", format_time(*t)),
            c => {
                let name = CHOICES
                    .iter()
                    .find(|(_, _, x)| x == c)
                    .map_or("?", |(_, asr, _)| asr);
                f.write_str(name)
            }
        }
    }
}

impl Serialize for PointChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl PointChoice {
    /// `true` for the multi-VM choices.
    pub fn is_multi_vm(self) -> bool {
        matches!(
            self,
            PointChoice::LatestMultiVmProcessed | PointChoice::LatestMultiVmApplicationConsistent
        )
    }
}

/// The points of one disk's journal that the policy keeps.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    /// Available points within the retention window, oldest first.
    pub points: Vec<PointInfo>,
    /// Points older than the retention window (no longer offered).
    pub pruned: Vec<PointInfo>,
    /// Points after a defect: they cannot be built.
    pub unavailable: Vec<UnavailablePoint>,
    /// Why points are unavailable.
    pub defect: Option<String>,
    /// The last processed sequence number.
    pub processed_seq: u64,
    /// The last record's time: "now" for the journal (milliseconds since the Unix epoch).
    pub now_ms: u64,
    /// Records before this sequence number are in the base.
    pub start_seq: u64,
}

impl Catalog {
    /// The catalog of `journal` under `policy`; records up to `processed_seq` count as
    /// processed (`None`: all). The retention window ends at the newest point.
    pub fn new(journal: &Journal, policy: &Policy, processed_seq: Option<u64>) -> Catalog {
        let processed_seq = processed_seq.unwrap_or(journal.last_seq());
        let all: Vec<PointInfo> = journal
            .points()
            .iter()
            .map(|p| PointInfo {
                id: PointId(p.seq),
                seq: p.seq,
                time: format_time(p.time_ms),
                time_ms: p.time_ms,
                consistency: p.marker.consistency,
                multi_vm: p
                    .marker
                    .group
                    .map(|(g, t)| format!("{}/{t}", hex::encode(g))),
                digest: p.marker.digest,
                processed: p.seq <= processed_seq,
                label: p.marker.label.clone(),
                group: p.marker.group,
            })
            .collect();
        // The window ends at the newest processed point: received data becomes points only
        // when processed, so it never pushes processed points out of the window.
        let newest = all.last().map_or(0, |p| p.time_ms);
        let newest_processed = all
            .iter()
            .rev()
            .find(|p| p.processed)
            .map_or(newest, |p| p.time_ms);
        let cutoff = newest_processed.saturating_sub(policy.retention_ms);
        let (pruned, points) = all.into_iter().partition(|p| p.time_ms < cutoff);
        Catalog {
            points,
            pruned,
            unavailable: journal.unavailable().to_vec(),
            defect: journal.defect().map(|d| d.to_string()),
            processed_seq,
            now_ms: journal
                .records()
                .last()
                .map_or(newest, |r| r.time_ms)
                .max(journal.last_time_seen()),
            start_seq: journal.start_seq(),
        }
    }

    /// Points after record `seq` are unavailable because of `defect` (found by processing: a
    /// lazily read journal does not see a corrupt payload until it reads it).
    pub fn cap(&mut self, seq: u64, defect: &str) {
        let (keep, lost): (Vec<PointInfo>, Vec<PointInfo>) =
            self.points.drain(..).partition(|p| p.seq <= seq);
        self.points = keep;
        self.unavailable
            .extend(lost.into_iter().map(|p| UnavailablePoint {
                seq: p.seq,
                time_ms: p.time_ms,
                consistency: p.consistency,
            }));
        self.unavailable.sort_by_key(|p| p.seq);
        self.unavailable.dedup_by_key(|p| p.seq);
        if self.defect.is_none() {
            self.defect = Some(defect.to_string());
        }
    }

    /// The point `spec` names (multi-VM choices need [`resolve_multi_vm`]).
    /// Custom choices (by id or time) and the "latest processed" ones pick among processed
    /// points; `Latest` picks the newest of all (the caller processes first).
    ///
    /// # Errors
    /// No point matches; the error says why.
    pub fn resolve(&self, spec: PointChoice) -> Result<&PointInfo> {
        let mut processed = self.points.iter().filter(|p| p.processed);
        let found = match spec {
            PointChoice::Latest => self.points.last(),
            PointChoice::LatestProcessed => processed.next_back(),
            PointChoice::LatestApplicationConsistent => {
                processed.rfind(|p| p.consistency == Consistency::App)
            }
            PointChoice::LatestMultiVmProcessed
            | PointChoice::LatestMultiVmApplicationConsistent => {
                return Err(Error::argument(
                    "multi-VM points are chosen across the disks of a replication group: \
                     give every disk's replica",
                ));
            }
            PointChoice::Custom(PointId(seq)) => {
                if let Some(p) = self.points.iter().find(|p| p.seq == seq) {
                    if !p.processed {
                        return Err(Error::argument(format!(
                            "point {}: received but not processed yet: run `ec2azure replica \
                             process` first (or choose latest, which processes first)",
                            point_id(seq)
                        )));
                    }
                    return Ok(p);
                }
                let why = if self.pruned.iter().any(|p| p.seq == seq) {
                    "it is older than the retention window".to_string()
                } else if seq < self.start_seq {
                    format!(
                        "it is older than the replica's base (records before {} were folded \
                         into it when they left the retention window)",
                        self.start_seq
                    )
                } else if self.unavailable.iter().any(|p| p.seq == seq) {
                    format!(
                        "it lies after a defect: {}",
                        self.defect.as_deref().unwrap_or("?")
                    )
                } else {
                    "there is no such point".to_string()
                };
                return Err(Error::argument(format!(
                    "point {}: not available: {why}",
                    point_id(seq)
                )));
            }
            PointChoice::CustomTime(t) => processed.rfind(|p| p.time_ms <= t),
        };
        found.ok_or_else(|| {
            let what = match spec {
                PointChoice::CustomTime(t) => format!(
                    "no processed point at or before {}{}",
                    format_time(t),
                    if self.pruned.iter().any(|p| p.time_ms <= t) {
                        " in the retention window (older points were pruned)"
                    } else {
                        ""
                    }
                ),
                _ => format!("no point matches {spec}"),
            };
            let mut msg = what;
            if self.points.is_empty() {
                msg.push_str(": the journal has no available point in the retention window");
            }
            if let Some(d) = &self.defect {
                msg.push_str(&format!("; points after a defect are unavailable: {d}"));
            }
            Error::argument(msg)
        })
    }

    /// Where the policy was not met.
    pub fn check(&self, policy: &Policy) -> PolicyReport {
        let mut rpo_breaches = Vec::new();
        for w in self.points.windows(2) {
            let gap = w[1].time_ms - w[0].time_ms;
            if gap > policy.rpo_threshold_ms {
                rpo_breaches.push(Gap::new(w[0].time_ms, w[1].time_ms));
            }
        }
        if let Some(last) = self.points.last()
            && self.now_ms - last.time_ms > policy.rpo_threshold_ms
        {
            rpo_breaches.push(Gap::new(last.time_ms, self.now_ms));
        }
        let mut app_gaps = Vec::new();
        if policy.app_frequency_ms > 0 {
            // One crash interval of slack: the tag lands on the next crash-consistent point.
            let limit = policy.app_frequency_ms + policy.crash_interval_ms;
            let app: Vec<u64> = self
                .points
                .iter()
                .filter(|p| p.consistency == Consistency::App)
                .map(|p| p.time_ms)
                .collect();
            let start = self.points.first().map_or(0, |p| p.time_ms);
            let mut prev = start;
            for &t in app.iter().chain(std::iter::once(&self.now_ms)) {
                if t - prev > limit {
                    app_gaps.push(Gap::new(prev, t));
                }
                prev = t;
            }
        }
        let span = match (self.points.first(), self.points.last()) {
            (Some(a), Some(b)) => b.time_ms - a.time_ms,
            _ => 0,
        };
        PolicyReport {
            points: self.points.len(),
            app_consistent_points: self
                .points
                .iter()
                .filter(|p| p.consistency == Consistency::App)
                .count(),
            pruned: self.pruned.len(),
            unavailable: self.unavailable.len(),
            defect: self.defect.clone(),
            span: format_duration(span),
            retention: format_duration(policy.retention_ms),
            rpo_breaches,
            app_gaps,
        }
    }
}

/// A stretch of time without a point (or without an app-consistent one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// RFC 3339 start.
    pub from: String,
    /// RFC 3339 end.
    pub to: String,
    /// Its length.
    pub length: String,
    /// Its length in milliseconds.
    pub length_ms: u64,
}

impl Gap {
    fn new(from: u64, to: u64) -> Gap {
        Gap {
            from: format_time(from),
            to: format_time(to),
            length: format_duration(to - from),
            length_ms: to - from,
        }
    }
}

/// What `points check` reports.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    /// Points in the retention window.
    pub points: usize,
    /// Of which app-consistent.
    pub app_consistent_points: usize,
    /// Points older than the window.
    pub pruned: usize,
    /// Points lost to a defect.
    pub unavailable: usize,
    /// The defect, if any.
    pub defect: Option<String>,
    /// Time from the oldest to the newest point kept.
    pub span: String,
    /// The policy's retention.
    pub retention: String,
    /// Stretches longer than the RPO threshold without a point.
    pub rpo_breaches: Vec<Gap>,
    /// Stretches longer than the app-consistent frequency without an app-consistent point.
    pub app_gaps: Vec<Gap>,
}

impl PolicyReport {
    /// `true` when the policy was met and no point was lost.
    pub fn ok(&self) -> bool {
        self.rpo_breaches.is_empty()
            && self.app_gaps.is_empty()
            && self.unavailable == 0
            && self.defect.is_none()
    }
}

/// The newest processed multi-VM point present in every catalog (app-consistent only when
/// `app_only`): one point per disk, in the catalogs' order.
///
/// # Errors
/// The catalogs belong to different groups, or no point is common to all of them.
pub fn resolve_multi_vm<'a>(
    catalogs: &[&'a Catalog],
    app_only: bool,
) -> Result<Vec<&'a PointInfo>> {
    let Some(first) = catalogs.first() else {
        return Err(Error::argument("no replicas given"));
    };
    let eligible = |p: &PointInfo| {
        p.processed && p.group.is_some() && (!app_only || p.consistency == Consistency::App)
    };
    for cand in first.points.iter().rev().filter(|p| eligible(p)) {
        let key = cand.group;
        let picks: Vec<&PointInfo> = catalogs
            .iter()
            .filter_map(|c| {
                c.points
                    .iter()
                    .rev()
                    .find(|p| eligible(p) && p.group == key)
            })
            .collect();
        if picks.len() == catalogs.len() {
            return Ok(picks);
        }
    }
    Err(Error::argument(format!(
        "no processed {}multi-VM point is common to all {} disks",
        if app_only { "app-consistent " } else { "" },
        catalogs.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_limits() {
        assert!(Policy::default().validate().is_ok());
        assert!(Policy::from_args(None, Some("30m"), None).is_err());
        assert!(Policy::from_args(None, Some("13h"), None).is_err());
        assert!(Policy::from_args(None, Some("0"), None).is_ok());
        assert!(Policy::from_args(Some("16d"), None, None).is_err());
        // Durations that parse but fall outside the policy's ranges, and ones that do not parse.
        for (r, a, t, says) in [
            (Some("59m"), None, None, "retention 59m: expected 1h to 15d"),
            (Some("15d1s"), None, None, "expected 1h to 15d"),
            (None, Some("59m59s"), None, "below 60 minutes"),
            (None, Some("12h1m"), None, "expected 1h to 12h"),
            (None, None, Some("0s"), "RPO threshold"),
            (Some("24"), None, None, "retention: duration \"24\""),
            (None, Some("2w"), None, "weeks, months and years"),
            (None, None, Some("-15m"), "negative"),
        ] {
            let e = Policy::from_args(r, a, t).unwrap_err();
            assert!(e.to_string().contains(says), "{r:?} {a:?} {t:?}: {e}");
        }
        assert_eq!(
            Policy::from_args(Some("24h"), Some("12h"), Some("1m"))
                .unwrap()
                .app_frequency_ms,
            12 * HOUR
        );
        assert_eq!(
            Policy::from_args(Some("15d"), Some("12h"), Some("30m"))
                .unwrap()
                .retention_ms,
            15 * 24 * HOUR
        );
    }

    #[test]
    fn point_specs_parse() {
        use std::str::FromStr;
        assert_eq!(
            PointChoice::from_str("latest").unwrap(),
            PointChoice::Latest
        );
        assert_eq!(
            PointChoice::from_str("rp-42").unwrap(),
            PointChoice::Custom(PointId(42))
        );
        assert_eq!(
            PointChoice::from_str("1970-01-01T00:01:00Z").unwrap(),
            PointChoice::CustomTime(60_000)
        );
        assert!(PointChoice::from_str("rp-x").is_err());
    }
}
