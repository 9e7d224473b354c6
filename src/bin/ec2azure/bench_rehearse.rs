//! `ec2azure bench rehearse`: rehearsals timed — the three-tier example, and a generated estate
//! of N machines in P plans replicating for a simulated span, then a test failover, its
//! cleanup, a failover and a commit of every plan. Reports the wall time, the peak RSS, and the
//! share spent building the points' disks and uploading them (the real work of a failover)
//! beside the rest (replication, the simulator).

use crate::bench_replication::{peak_rss, reset_peak_rss};
use anyhow::Result;
use clap::Args;
use ec2azure::progress::NoProgress;
use ec2azure::site::Site;
use ec2azure::site::model::ItemHistory;
use ec2azure::site::rehearse::{RehearseOptions, rehearse};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct RehearseBench {
    /// Machines of the generated estate (0: only the three-tier example).
    #[arg(long, default_value_t = 50)]
    machines: usize,
    /// Recovery plans they are split into.
    #[arg(long, default_value_t = 5)]
    plans: usize,
    /// Simulated replication before the failovers.
    #[arg(long, default_value = "1d")]
    span: String,
    /// Each disk's write rate, bytes per second.
    #[arg(long, default_value = "1K", value_parser = crate::parse_size)]
    write_rate: u64,
    /// Skip the three-tier example.
    #[arg(long)]
    no_three_tier: bool,
    /// Keep the sites here (default: a temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A scenario of `n` machines in `plans` plans.
fn generated(n: usize, plans: usize, span: &str, rate: u64) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"[site]
seed = 50
[rehearsal]
name = "{n} machines in {plans} plans"
replicate_for = "{span}"
step = "1h"
manual_action_delay = "5m"
[aws]
vpc_cidr = "10.0.0.0/16"
[[aws.images]]
id = "ami-0a1b2c3d4e5f60001"
name = "Windows_Server-2012-R2_RTM-English-64Bit-Base"
platform = "windows"
[[aws.security_groups]]
name = "push"
ingress = [
  {{ protocol = "tcp", from_port = 135, to_port = 135, cidrs = ["10.0.0.0/16"] }},
  {{ protocol = "tcp", from_port = 445, to_port = 445, cidrs = ["10.0.0.0/16"] }},
]
[[aws.instances]]
name = "cs"
image = "ami-0a1b2c3d4e5f60001"
private_ip = "10.0.0.10"
[azure]
resource_groups = [{{ name = "rg", location = "westeurope" }}]
storage_accounts = [{{ name = "benchstore", resource_group = "rg" }}]
networks = [
  {{ name = "prod", resource_group = "rg", address_space = ["10.0.0.0/16"], subnets = [["default", "10.0.1.0/24"]] }},
  {{ name = "test", resource_group = "rg", address_space = ["10.9.0.0/16"], subnets = [["default", "10.9.1.0/24"]] }},
]
[vault]
name = "benchVault"
resource_group = "rg"
[config_server]
instance = "cs"
accounts = [{{ name = "WindowsAccount", user = "Administrator" }}]
[policy]
name = "pol"
"#
    );
    for i in 0..n {
        let _ = write!(
            s,
            r#"[[samples]]
file = "m{i}.raw"
size_gib = 2
seed = {i}
[[aws.instances]]
name = "m{i}"
image = "ami-0a1b2c3d4e5f60001"
private_ip = "10.0.1.{ip}"
security_groups = ["push"]
volumes = [{{ device = "/dev/sda1", size_gib = 2, data = "m{i}.raw" }}]
[[guests]]
instance = "m{i}"
os_name = "Windows Server 2012 R2 Datacenter"
local_account_token_filter_policy = true
workload = {{ write_rate = {rate} }}
[[replicate]]
machine = "m{i}"
account = "WindowsAccount"
resource_group = "rg"
storage_account = "benchstore"
network = "prod"
"#,
            ip = 20 + i
        );
    }
    let per = n.div_ceil(plans.max(1)).max(1);
    for (p, chunk) in (0..n).collect::<Vec<_>>().chunks(per).enumerate() {
        let names: Vec<String> = chunk.iter().map(|i| format!("\"m{i}\"")).collect();
        let _ = write!(
            s,
            "[[plans]]\nname = \"plan{p}\"\ngroups = [[{}]]\n",
            names.join(", ")
        );
    }
    for p in 0..n.div_ceil(per) {
        let _ = write!(
            s,
            r#"[[steps]]
action = "test-failover"
plan = "plan{p}"
network = "test"
[[steps]]
action = "cleanup"
plan = "plan{p}"
[[steps]]
action = "failover"
plan = "plan{p}"
point = "latest"
[[steps]]
action = "commit"
plan = "plan{p}"
"#
        );
    }
    s.push_str("[objectives]\nverified = true\n");
    s
}

struct Row {
    name: String,
    machines: usize,
    wall_ms: u64,
    build_ms: u64,
    upload_ms: u64,
    failovers: usize,
    rss: u64,
    met: bool,
    replication_ms: u64,
    task_ms: u64,
}

fn one(name: &str, scenario: &Path, dir: &Path) -> Result<Row> {
    reset_peak_rss();
    let site_dir = dir.join(name);
    let t = std::time::Instant::now();
    let r = rehearse(
        scenario,
        &RehearseOptions {
            site_dir: site_dir.clone(),
            ..RehearseOptions::default()
        },
        &NoProgress,
    )?;
    let wall_ms = t.elapsed().as_millis() as u64;
    let rss = peak_rss();
    let mut site = Site::open(&site_dir)?;
    let hs = site.tx(|t| t.list::<ItemHistory>(None))?;
    let recs: Vec<_> = hs
        .iter()
        .flat_map(|h| h.properties.failovers.clone())
        .collect();
    Ok(Row {
        name: name.to_string(),
        machines: hs.len(),
        wall_ms,
        build_ms: recs.iter().map(|f| f.build_wall_ms).sum(),
        upload_ms: recs.iter().map(|f| f.upload_wall_ms).sum(),
        failovers: recs.len(),
        rss,
        met: r.met,
        replication_ms: r.replication_wall_ms,
        task_ms: r.task_wall_ms,
    })
}

pub fn run(b: RehearseBench, _quiet: bool) -> Result<ExitCode> {
    let tmp;
    let dir = match &b.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let mut rows = Vec::new();
    if !b.no_three_tier {
        let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three-tier.toml");
        rows.push(one("three-tier", &ex, &dir)?);
    }
    if b.machines > 0 {
        let scn = dir.join("generated.toml");
        std::fs::write(&scn, generated(b.machines, b.plans, &b.span, b.write_rate))?;
        rows.push(one(
            &format!("{}-machines-{}-plans-{}", b.machines, b.plans, b.span),
            &scn,
            &dir,
        )?);
    }
    println!(
        "{:<28} {:>8} {:>9} {:>9} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>7} {:>4}",
        "rehearsal",
        "machines",
        "failovers",
        "wall s",
        "build s",
        "upload s",
        "b+u %",
        "repl s",
        "tasks s",
        "other s",
        "RSS MB",
        "met"
    );
    for r in &rows {
        // The simulator's own time: what neither the replication engine nor a task's work
        // (which holds the builds and uploads) took.
        let other = r.wall_ms.saturating_sub(r.replication_ms + r.task_ms);
        println!(
            "{:<28} {:>8} {:>9} {:>9.1} {:>8.1} {:>8.1} {:>6.1}% {:>8.1} {:>8.1} {:>8.1} {:>7.0} {:>4}",
            r.name,
            r.machines,
            r.failovers,
            r.wall_ms as f64 / 1000.0,
            r.build_ms as f64 / 1000.0,
            r.upload_ms as f64 / 1000.0,
            100.0 * (r.build_ms + r.upload_ms) as f64 / r.wall_ms.max(1) as f64,
            r.replication_ms as f64 / 1000.0,
            r.task_ms as f64 / 1000.0,
            other as f64 / 1000.0,
            r.rss as f64 / 1e6,
            if r.met { "yes" } else { "NO" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
