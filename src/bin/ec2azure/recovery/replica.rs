//! `replica init|receive|process|status`: the process server's replica from the CLI.

use super::*;

#[derive(Subcommand)]
pub enum ReplicaCommand {
    /// Make a replica of a base image (the base is copied in as sparse raw).
    Init(ReplicaInitArgs),
    /// Copy a journal's new segments into the replica.
    Receive(ReplicaReceiveArgs),
    /// Check and index what was received, move the processed horizon, fold points that left
    /// the retention window into the base.
    Process(ReplicaArgs),
    /// Show the replica: processed horizon, latest and latest processed points, pending data.
    Status(ReplicaArgs),
}

#[derive(Args)]
pub struct PolicyArgs {
    /// Recovery point retention: 1h to 15d (default 24h).
    #[arg(long)]
    retention: Option<String>,
    /// App-consistent snapshot frequency: 1h to 12h, or 0 for none (default 1h).
    #[arg(long)]
    app_frequency: Option<String>,
    /// RPO alert threshold (default 15m).
    #[arg(long)]
    rpo_threshold: Option<String>,
}

impl PolicyArgs {
    pub(crate) fn over(&self, base: Policy) -> Result<Policy> {
        let mut p = Policy::from_args(
            self.retention.as_deref(),
            self.app_frequency.as_deref(),
            self.rpo_threshold.as_deref(),
        )?;
        if self.retention.is_none() {
            p.retention_ms = base.retention_ms;
        }
        if self.app_frequency.is_none() {
            p.app_frequency_ms = base.app_frequency_ms;
        }
        if self.rpo_threshold.is_none() {
            p.rpo_threshold_ms = base.rpo_threshold_ms;
        }
        p.validate()?;
        Ok(p)
    }
}

#[derive(Args)]
pub struct ReplicaInitArgs {
    /// The base image (any format ec2azure reads).
    #[arg(long)]
    base: PathBuf,
    #[command(flatten)]
    policy: PolicyArgs,
    /// The replica directory to make.
    replica: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReplicaReceiveArgs {
    /// The journal directory to take segments from.
    journal: PathBuf,
    /// The replica directory.
    replica: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReplicaArgs {
    /// The replica directory.
    replica: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn replica(cmd: ReplicaCommand, quiet: bool) -> Result<ExitCode> {
    term::install_interrupt_handler();
    match cmd {
        ReplicaCommand::Init(a) => {
            let base = ec2azure::open(&a.base, None)?;
            let policy = a.policy.over(Policy::default())?;
            let progress = term::progress(quiet || a.json);
            let r = Replica::init(&a.replica, &*base, policy, &progress)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(r.state())?);
            } else if !quiet {
                println!(
                    "replica {}: {} disk, base root {}",
                    a.replica.display(),
                    human(r.state().disk_size),
                    r.state().origin_root
                );
            }
        }
        ReplicaCommand::Receive(a) => {
            let mut r = Replica::open(&a.replica)?;
            let rep = r.receive(&a.journal)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else if !quiet {
                println!(
                    "received {} segment(s), {} ({} already held)",
                    rep.received,
                    human(rep.bytes),
                    rep.already_had
                );
            }
        }
        ReplicaCommand::Process(a) => {
            let mut r = Replica::open(&a.replica)?;
            let progress = term::progress(quiet || a.json);
            let rep = r.process(&progress)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else if !quiet {
                println!(
                    "processed {} in {} segment(s) in {} ms: horizon record {} -> {}, {} new point(s)",
                    human(rep.bytes_checked),
                    rep.segments,
                    rep.elapsed_ms,
                    rep.processed_seq_before,
                    rep.processed_seq,
                    rep.new_points
                );
                if let Some(s) = rep.compacted_to {
                    println!(
                        "folded {} point(s) older than the retention window into the base (base now at record {s})",
                        rep.folded_points
                    );
                }
                print_damage(rep.torn.as_deref(), rep.defect.as_deref());
            }
        }
        ReplicaCommand::Status(a) => {
            let r = Replica::open(&a.replica)?;
            let s = r.status()?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else if !quiet {
                println!("replica     {}", a.replica.display());
                println!(
                    "disk        {} ({})",
                    s.state
                        .disk_id
                        .as_deref()
                        .unwrap_or("no segment received yet"),
                    human(s.state.disk_size)
                );
                println!(
                    "base        {} (records before {} folded in, {} point(s))",
                    s.state.base_file, s.state.base_seq, s.state.folded_points
                );
                println!(
                    "received    {} segment(s), {}, up to record {}",
                    s.segments,
                    human(s.segment_bytes),
                    s.received_seq
                );
                println!(
                    "processed   up to record {} ({} record(s) pending)",
                    s.state.processed_seq, s.pending_records
                );
                println!(
                    "points      {} in the retention window ({})",
                    s.points,
                    format_duration(s.state.policy.retention_ms)
                );
                if let Some(p) = &s.latest {
                    println!("latest      {} at {} (after processing)", p.id, p.time);
                }
                if let Some(p) = &s.latest_processed {
                    println!(
                        "processed   {} at {} (no processing; {} older)",
                        p.id,
                        p.time,
                        s.processed_lag.as_deref().unwrap_or("0s")
                    );
                }
                print_damage(s.torn.as_deref(), s.defect.as_deref());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
