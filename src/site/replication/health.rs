//! Replication health as Site Recovery reports it for a replicated item: `replicationHealth`
//! (Normal, Warning, Critical), `healthErrors` with the service's error ids, `rpoInSeconds`,
//! `lastRpoCalculatedTime`, `lastRecoveryPointReceived`; and the churn limits (54 MB/s peak per
//! machine over all its disks, 2 TB a day per process server).
//!
//! Error ids (Microsoft's "Troubleshoot replication issues for VMware VMs and physical
//! servers"): the RPO alert "No crash-consistent recovery point available for the VM in the
//! last N minutes" is raised with its cause — **78174** the source machine sends nothing (no
//! heartbeat), **806** the process server has no heartbeat, **78188** high data change rate —
//! and **78144** "No app-consistent recovery point available for the VM in the last N minutes".
//! Two causes have no id of the service's: a corrupt replicated segment (`CorruptReplicationData`,
//! the points after it are lost; the service's remedy is a resync) and a breach with none of the
//! causes above (`RpoThresholdExceeded`). The process server's daily churn limit has no id
//! either (`ProcessServerChurnExceeded`).

use crate::clock::format_time;
use crate::recovery::{IntervalChurn, Policy, ReplicaStatus};
use serde::{Deserialize, Serialize};

/// Peak data change rate per machine over all its disks: 54 MB/s (decimal megabytes).
pub const MACHINE_PEAK_CHURN_BYTES_PER_SEC: u64 = 54_000_000;
/// Data change per process server and day: 2 TB (decimal).
pub const PROCESS_SERVER_DAILY_CHURN_BYTES: u64 = 2_000_000_000_000;
const DAY_MS: u64 = 86_400_000;

/// A replicated item's health, as `replicationHealth` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProtectionHealth {
    /// No error.
    Normal,
    /// Warnings only.
    Warning,
    /// At least one error.
    Critical,
}

/// A health error, with the field names of the service's `HealthError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthError {
    /// The error id (`"806"`, `"78144"`, ...).
    pub error_code: String,
    /// `Error` or `Warning`.
    pub error_level: String,
    /// The message.
    pub error_message: String,
    /// Why.
    pub possible_causes: String,
    /// What to do.
    pub recommended_action: String,
    /// When it was raised (RFC 3339, simulated time).
    pub creation_time_utc: String,
}

/// What the caller knows of the moment health is computed at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditions {
    /// The process server is down (no heartbeat).
    pub process_server_down: bool,
    /// The source machine sends nothing (stopped, Mobility service down).
    pub source_down: bool,
    /// The peak data change rate seen on the machine, bytes per second.
    pub peak_churn_bytes_per_sec: u64,
}

/// One disk's health at a moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskHealth {
    /// Normal, Warning or Critical.
    pub replication_health: ProtectionHealth,
    /// The errors.
    pub health_errors: Vec<HealthError>,
    /// Seconds since the newest processed recovery point (`None`: no point yet).
    pub rpo_in_seconds: Option<u64>,
    /// When the RPO was calculated (RFC 3339, simulated time).
    pub last_rpo_calculated_time: String,
    /// Milliseconds since the epoch of the above.
    pub last_rpo_calculated_ms: u64,
    /// The newest recovery point received (processed or not), RFC 3339.
    pub last_recovery_point_received: Option<String>,
    /// Its time in milliseconds.
    pub last_recovery_point_received_ms: Option<u64>,
    /// The newest processed point's time in milliseconds.
    pub latest_processed_ms: Option<u64>,
    /// The newest processed app-consistent point's time in milliseconds.
    pub latest_app_consistent_ms: Option<u64>,
    /// Points available (within retention, before any defect).
    pub points: usize,
    /// The defect that makes later points unavailable, if any.
    pub defect: Option<String>,
    /// Records received but not processed.
    pub pending_records: u64,
}

fn error(
    code: &str,
    level: &str,
    msg: String,
    causes: String,
    action: &str,
    now: u64,
) -> HealthError {
    HealthError {
        error_code: code.to_string(),
        error_level: level.to_string(),
        error_message: msg,
        possible_causes: causes,
        recommended_action: action.to_string(),
        creation_time_utc: format_time(now),
    }
}

/// The causes of a breach, as health errors carrying `message`.
fn causes(
    message: &str,
    level: &str,
    cond: &Conditions,
    defect: Option<&str>,
    now: u64,
) -> Vec<HealthError> {
    let mut out = Vec::new();
    if cond.source_down {
        out.push(error(
            "78174",
            level,
            message.to_string(),
            "The source machine sends no data: it is stopped, or its Mobility service has no \
             heartbeat."
                .into(),
            "Start the machine, or check that its Mobility service runs and reaches the \
             process server.",
            now,
        ));
    }
    if cond.process_server_down {
        out.push(error(
            "806",
            level,
            message.to_string(),
            "The process server has no heartbeat: replicated data piles up on the source and \
             is neither received nor processed."
                .into(),
            "Bring the process server back; the data that piled up is received and processed \
             then.",
            now,
        ));
    }
    if cond.peak_churn_bytes_per_sec > MACHINE_PEAK_CHURN_BYTES_PER_SEC {
        out.push(error(
            "78188",
            level,
            message.to_string(),
            format!(
                "High data change rate: {:.1} MB/s peak, above the {} MB/s a machine supports.",
                cond.peak_churn_bytes_per_sec as f64 / 1e6,
                MACHINE_PEAK_CHURN_BYTES_PER_SEC / 1_000_000
            ),
            "Reduce the churn, or spread the disks over more machines.",
            now,
        ));
    }
    if let Some(d) = defect {
        out.push(error(
            "CorruptReplicationData",
            level,
            message.to_string(),
            format!("Replicated data is corrupt; the points after it are lost: {d}"),
            "Resynchronize the disk (repair replication).",
            now,
        ));
    }
    if out.is_empty() {
        out.push(error(
            "RpoThresholdExceeded",
            level,
            message.to_string(),
            "Recovery points are not being created as often as the policy's RPO threshold asks."
                .into(),
            "Check the replication's throughput and the process server's load.",
            now,
        ));
    }
    out
}

/// The health of one disk at `now_ms`, from its replica's status (`status`), the policy, the
/// time replication started (`origin_ms`: alerts wait for a whole threshold after it), and
/// what the caller knows of the moment.
pub fn disk_health(
    status: &ReplicaStatus,
    newest_app_ms: Option<u64>,
    policy: &Policy,
    origin_ms: u64,
    now_ms: u64,
    cond: &Conditions,
) -> DiskHealth {
    let latest_processed_ms = status.latest_processed.as_ref().map(|p| p.time_ms);
    let received_ms = status.latest.as_ref().map(|p| p.time_ms);
    let defect = status.defect.clone();
    let mut errors = Vec::new();
    let since = latest_processed_ms.unwrap_or(origin_ms);
    if now_ms.saturating_sub(since) > policy.rpo_threshold_ms {
        let msg = format!(
            "No crash-consistent recovery point available for the VM in the last {} minutes",
            policy.rpo_threshold_ms / 60_000
        );
        errors.extend(causes(&msg, "Error", cond, defect.as_deref(), now_ms));
    }
    if policy.app_frequency_ms > 0 {
        // One crash interval of slack: the app tag lands on the next crash-consistent point.
        let limit = policy.app_frequency_ms + policy.crash_interval_ms;
        let since = newest_app_ms.unwrap_or(origin_ms);
        if now_ms.saturating_sub(since) > limit {
            let msg = format!(
                "No app-consistent recovery point available for the VM in the last {} minutes",
                policy.app_frequency_ms / 60_000
            );
            let mut why = causes(&msg, "Warning", cond, defect.as_deref(), now_ms);
            let reasons: Vec<String> = why
                .drain(..)
                .filter(|e| e.error_code != "RpoThresholdExceeded")
                .map(|e| format!("{} ({})", e.possible_causes, e.error_code))
                .collect();
            errors.push(error(
                "78144",
                "Warning",
                msg,
                if reasons.is_empty() {
                    "The app-consistent snapshot (VSS) failed on the source machine.".into()
                } else {
                    reasons.join(" ")
                },
                "Check the source machine's VSS writers and provider, and the replication's \
                 health.",
                now_ms,
            ));
        }
    }
    if cond.peak_churn_bytes_per_sec > MACHINE_PEAK_CHURN_BYTES_PER_SEC
        && !errors.iter().any(|e| e.error_code == "78188")
    {
        errors.push(churn_error(cond.peak_churn_bytes_per_sec, now_ms));
    }
    DiskHealth {
        replication_health: health_of(&errors),
        health_errors: errors,
        rpo_in_seconds: latest_processed_ms.map(|t| now_ms.saturating_sub(t) / 1000),
        last_rpo_calculated_time: format_time(now_ms),
        last_rpo_calculated_ms: now_ms,
        last_recovery_point_received: received_ms.map(format_time),
        last_recovery_point_received_ms: received_ms,
        latest_processed_ms,
        latest_app_consistent_ms: newest_app_ms,
        points: status.points,
        defect,
        pending_records: status.pending_records,
    }
}

fn churn_error(peak: u64, now_ms: u64) -> HealthError {
    error(
        "78188",
        "Error",
        "The data change rate on the source machine is beyond what Site Recovery supports".into(),
        format!(
            "{:.1} MB/s peak over all the machine's disks, above the {} MB/s limit.",
            peak as f64 / 1e6,
            MACHINE_PEAK_CHURN_BYTES_PER_SEC / 1_000_000
        ),
        "Reduce the churn, or spread the disks over more machines.",
        now_ms,
    )
}

fn health_of(errors: &[HealthError]) -> ProtectionHealth {
    if errors.iter().any(|e| e.error_level == "Error") {
        ProtectionHealth::Critical
    } else if errors.is_empty() {
        ProtectionHealth::Normal
    } else {
        ProtectionHealth::Warning
    }
}

/// The peak data change rate over the disks of one machine: per crash interval, the bytes of
/// all its disks summed, over the part of the interval the span covered. Bytes per second.
pub fn machine_peak_churn(disks: &[&[IntervalChurn]]) -> u64 {
    let mut per: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    for d in disks {
        for c in *d {
            let e = per.entry(c.end_ms).or_default();
            e.0 += c.bytes;
            e.1 = e.1.max(c.covered_ms);
        }
    }
    per.values()
        .filter(|(_, ms)| *ms > 0)
        .map(|(b, ms)| b.saturating_mul(1000) / ms)
        .max()
        .unwrap_or(0)
}

/// A machine's health: the worst of its disks', their errors once each, the largest RPO, and
/// 78188 when the disks' summed churn (`churn`, each disk's samples of the span) passes
/// 54 MB/s.
pub fn machine_health(
    disks: &[DiskHealth],
    churn: &[&[IntervalChurn]],
    now_ms: u64,
) -> MachineHealth {
    let mut errors: Vec<HealthError> = Vec::new();
    for d in disks {
        for e in &d.health_errors {
            if !errors
                .iter()
                .any(|x| x.error_code == e.error_code && x.error_message == e.error_message)
            {
                errors.push(e.clone());
            }
        }
    }
    let peak = machine_peak_churn(churn);
    if peak > MACHINE_PEAK_CHURN_BYTES_PER_SEC && !errors.iter().any(|e| e.error_code == "78188") {
        errors.push(churn_error(peak, now_ms));
    }
    MachineHealth {
        replication_health: health_of(&errors),
        rpo_in_seconds: disks
            .iter()
            .map(|d| d.rpo_in_seconds)
            .try_fold(0u64, |a, r| r.map(|r| a.max(r))),
        last_rpo_calculated_time: format_time(now_ms),
        last_recovery_point_received: disks
            .iter()
            .map(|d| d.last_recovery_point_received_ms)
            .try_fold(u64::MAX, |a, r| r.map(|r| a.min(r)))
            .filter(|&t| t != u64::MAX)
            .map(format_time),
        peak_churn_bytes_per_sec: peak,
        health_errors: errors,
    }
}

/// A replicated item's (machine's) health.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineHealth {
    /// Normal, Warning or Critical.
    pub replication_health: ProtectionHealth,
    /// Errors of all disks, once each.
    pub health_errors: Vec<HealthError>,
    /// The largest of the disks' RPOs (`None` when a disk has no point yet).
    pub rpo_in_seconds: Option<u64>,
    /// When it was calculated.
    pub last_rpo_calculated_time: String,
    /// The oldest of the disks' newest received points (the newest point every disk has).
    pub last_recovery_point_received: Option<String>,
    /// The machine's peak data change rate in the span, bytes per second.
    pub peak_churn_bytes_per_sec: u64,
}

/// The process server's churn check: `total_bytes` written by all the machines it serves over
/// `window_ms`, scaled to a day, against 2 TB a day.
pub fn process_server_churn(total_bytes: u64, window_ms: u64, now_ms: u64) -> Option<HealthError> {
    if window_ms == 0 {
        return None;
    }
    let per_day = (u128::from(total_bytes) * u128::from(DAY_MS) / u128::from(window_ms)) as u64;
    (per_day > PROCESS_SERVER_DAILY_CHURN_BYTES).then(|| {
        error(
            "ProcessServerChurnExceeded",
            "Error",
            "The process server's data change rate is beyond what it supports".into(),
            format!(
                "{:.2} TB/day over its machines, above the 2 TB/day a process server handles.",
                per_day as f64 / 1e12
            ),
            "Add a scale-out process server and move machines to it.",
            now_ms,
        )
    })
}
