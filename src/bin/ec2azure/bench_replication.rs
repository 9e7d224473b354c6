//! `bench replication`: a site with N machines (one disk each), all protected, then a simulated
//! day of replication at a modest churn: wall time, peak RSS and site size per machine, and how
//! they grow with N (the target: linear in the data written, RSS bounded independent of N).

use anyhow::{Context, Result};
use clap::Args;
use ec2azure::NoProgress;
use ec2azure::clock::parse_duration;
use ec2azure::site::estate::AwsMode;
use ec2azure::site::protect::EnableRequest;
use ec2azure::site::scenario::{Scenario, init_site};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct ReplicationBench {
    /// Folder for the sites (one per machine count; removed after each).
    #[arg(long, default_value = "target/bench-replication")]
    dir: PathBuf,
    /// Machine counts, comma-separated.
    #[arg(long, default_value = "10,50,200", value_delimiter = ',')]
    machines: Vec<usize>,
    /// Each machine's disk (whole GiB; Site Recovery protects disks larger than 1,024 MiB, so
    /// at least 2 GiB).
    #[arg(long, default_value = "2G", value_parser = crate::parse_size)]
    disk_size: u64,
    /// What each disk writes per second, on average.
    #[arg(long, default_value = "1K", value_parser = crate::parse_size)]
    write_rate: u64,
    /// The simulated span.
    #[arg(long, default_value = "1d")]
    span: String,
}

/// Peak RSS of this process since the last reset, bytes (VmHWM).
pub(crate) fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resets the peak RSS to the current RSS (Linux: `5` into clear_refs).
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Bytes the files under `dir` take on disk.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// A sparse disk with an MBR (boot signature) and 4 MiB of data.
fn disk(path: &Path, size: u64) -> Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(size)?;
    let mut mbr = vec![0u8; 512];
    mbr[446] = 0x80;
    mbr[450] = 0x07;
    mbr[454..458].copy_from_slice(&2048u32.to_le_bytes());
    mbr[458..462].copy_from_slice(&((size / 512 - 2048) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    f.write_all_at(&mbr, 0)?;
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 | 1)
        .collect();
    f.write_all_at(&data, 1 << 20)?;
    Ok(())
}

fn scenario(n: usize, gib: u64, rate: u64) -> String {
    let mut s = String::from(
        "[site]\nseed = 3\n[aws]\nvpc_cidr = \"10.0.0.0/16\"\n[[aws.images]]\nid = \"ami-00000000000000001\"\n\
         name = \"Windows_Server-2012-R2_RTM-English-64Bit-Base\"\nplatform = \"windows\"\n\
         [[aws.security_groups]]\nname = \"push\"\ningress = [{ protocol = \"tcp\", from_port = 135, \
         to_port = 135, cidrs = [\"10.0.0.0/16\"] }, { protocol = \"tcp\", from_port = 445, to_port = 445, \
         cidrs = [\"10.0.0.0/16\"] }]\n[[aws.instances]]\nname = \"cs\"\nimage = \"ami-00000000000000001\"\n\
         private_ip = \"10.0.0.5\"\n",
    );
    for i in 0..n {
        s += &format!(
            "[[aws.instances]]\nname = \"vm{i:03}\"\nimage = \"ami-00000000000000001\"\nprivate_ip = \"10.0.{}.{}\"\n\
             security_groups = [\"push\"]\nvolumes = [{{ device = \"/dev/sda1\", size_gib = {gib}, data = \"disk.raw\" }}]\n",
            1 + i / 200,
            10 + i % 200
        );
    }
    for i in 0..n {
        s += &format!(
            "[[guests]]\ninstance = \"vm{i:03}\"\nos_name = \"Windows Server 2012 R2 Datacenter\"\n\
             local_account_token_filter_policy = true\nworkload = {{ write_rate = {rate} }}\n"
        );
    }
    s
}

/// One machine count: set up, protect all, then time the span.
fn one(dir: &Path, n: usize, b: &ReplicationBench, span_ms: u64) -> Result<Row> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let gib = b.disk_size.div_ceil(1 << 30).max(2);
    disk(&dir.join("disk.raw"), gib << 30)?;
    let sc = Scenario::parse(&scenario(n, gib, b.write_rate))?;
    let mut site = init_site(&dir.join("site"), &sc, dir, AwsMode::Fake)?;
    let sub = site.config().subscription_id.clone();
    site.tx(|t| {
        ec2azure::site::azure::create_resource_group(t, &sub, "rg", "westeurope")?;
        ec2azure::site::azure::create_storage_account(t, &sub, "rg", "benchstore", None, None)?;
        ec2azure::site::azure::create_virtual_network(
            t,
            &sub,
            "rg",
            "net",
            &ec2azure::site::azure::VnetSpec::default(),
        )?;
        Ok(())
    })?;
    site.create_vault("rg", "benchVault", "westeurope")?;
    let key = dir.join("key");
    site.issue_key(&key)?;
    let cs = site.instance("cs")?;
    let ip = cs.private_ip.clone().context("cs has no IP")?;
    let j = site.register_config_server(&key, "cs", &cs.id, &ip)?;
    site.wait_for(&j.id, 3_600_000, &NoProgress)?;
    site.add_account("cs", "WindowsAccount", "Administrator", false)?;
    let j = site.create_policy("pol", Default::default())?;
    site.wait_for(&j.id, 3_600_000, &NoProgress)?;
    let j = site.associate_policy("pol", "cs")?;
    site.wait_for(&j.id, 3_600_000, &NoProgress)?;
    site.discover_machines(None)?;
    let setup = Instant::now();
    for i in 0..n {
        site.enable_replication(&EnableRequest {
            machine: format!("vm{i:03}"),
            config_server: None,
            policy: None,
            account: "WindowsAccount".into(),
            resource_group: "rg".into(),
            storage_account: "benchstore".into(),
            network: "net".into(),
            subnet: "default".into(),
            vm_name: None,
            multi_vm_group: None,
        })?;
    }
    site.advance(3_600_000, &NoProgress)?;
    let protect_s = setup.elapsed().as_secs_f64();
    let protected = site
        .items()?
        .iter()
        .filter(|i| i.properties.state == ec2azure::site::states::ItemState::Protected)
        .count();
    let before = disk_usage(&dir.join("site"));
    reset_peak_rss();
    let t = Instant::now();
    let r = site.advance(span_ms, &NoProgress)?;
    let wall = t.elapsed().as_secs_f64();
    let rss = peak_rss();
    let after = disk_usage(&dir.join("site"));
    drop(site);
    let _ = std::fs::remove_dir_all(dir);
    Ok(Row {
        n,
        protected,
        protect_s,
        wall,
        rss,
        site_growth: after.saturating_sub(before),
        site_total: after,
        written: r.replication.bytes_written,
        points: r.replication.points,
    })
}

struct Row {
    n: usize,
    protected: usize,
    protect_s: f64,
    wall: f64,
    rss: u64,
    site_growth: u64,
    site_total: u64,
    written: u64,
    points: u64,
}

pub fn run(b: ReplicationBench, _quiet: bool) -> Result<ExitCode> {
    let span_ms = parse_duration(&b.span)?;
    println!(
        "bench replication: {} of simulated time, one {} disk per machine writing {}/s",
        b.span,
        crate::human(b.disk_size.div_ceil(1 << 30).max(2) << 30),
        crate::human(b.write_rate)
    );
    println!(
        "{:>8} {:>9} {:>10} {:>10} {:>13} {:>10} {:>12} {:>14} {:>10}",
        "machines",
        "protected",
        "protect s",
        "span s",
        "ms/machine",
        "peak RSS",
        "site/machine",
        "written/machine",
        "points"
    );
    let mut rows = Vec::new();
    for &n in &b.machines {
        let r = one(&b.dir.join(format!("n{n}")), n, &b, span_ms)?;
        println!(
            "{:>8} {:>9} {:>10.1} {:>10.1} {:>13.1} {:>8} MB {:>9} MB {:>12} MB {:>10}",
            r.n,
            r.protected,
            r.protect_s,
            r.wall,
            r.wall * 1000.0 / r.n as f64,
            r.rss >> 20,
            (r.site_total / r.n as u64) >> 20,
            (r.written / r.n as u64) >> 20,
            r.points
        );
        rows.push(r);
    }
    if let (Some(a), Some(z)) = (rows.first(), rows.last())
        && z.n > a.n
    {
        let k = z.n as f64 / a.n as f64;
        println!(
            "from {} to {} machines (x{k:.0}): span wall x{:.1}, data written x{:.1}, site growth x{:.1}, peak RSS x{:.2}",
            a.n,
            z.n,
            z.wall / a.wall.max(1e-9),
            z.written as f64 / a.written.max(1) as f64,
            z.site_growth as f64 / a.site_growth.max(1) as f64,
            z.rss as f64 / a.rss.max(1) as f64
        );
    }
    Ok(ExitCode::SUCCESS)
}
