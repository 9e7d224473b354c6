//! `ec2azure upload` and `ec2azure download`: a disk into an Azure page blob (converted on the fly
//! unless it is already an Azure-ready fixed VHD), and a page blob back into a sparse file; and
//! `ec2azure bench upload`.
//!
//! Where to connect: `--sas URL`, `--connection-string S`, or `--account-url U` with the key in
//! the environment variable `--account-key-env` names (`AZURE_STORAGE_KEY` by default); without
//! any of them, `AZURE_STORAGE_SAS_URL`, `AZURE_STORAGE_CONNECTION_STRING`, then
//! `AZURE_STORAGE_ACCOUNT_URL` (with the key variable) from the environment. Secrets are never
//! printed.

use crate::{human, term};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ec2azure::Progress;
use ec2azure::check::Target;
use ec2azure::cloud::azure::{Account, AzureBlobClient, CredentialChain, Timeouts};
use ec2azure::cloud::ebs::RetryPolicy;
use ec2azure::cloud::pageblob::{BlobName, PageBlobStore};
use ec2azure::image::Format;
use ec2azure::transfer::{
    DownloadOptions, Source, UploadCounters, UploadOptions, UploadReport, download, open_source,
    upload,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Where the blob is and how to reach it.
#[derive(Args, Clone)]
pub struct AzureArgs {
    /// The container (taken from a SAS URL when it names one).
    #[arg(long)]
    container: Option<String>,
    /// The blob's name (taken from a SAS URL when it names one).
    #[arg(long)]
    blob: Option<String>,
    /// An Azure Storage connection string (or $AZURE_STORAGE_CONNECTION_STRING).
    /// `UseDevelopmentStorage=true` means Azurite on 127.0.0.1:10000.
    #[arg(long, value_name = "STRING")]
    connection_string: Option<String>,
    /// The account's blob service URL, e.g. https://ACCOUNT.blob.core.windows.net (or
    /// $AZURE_STORAGE_ACCOUNT_URL); the key is read from the variable --account-key-env names.
    #[arg(long, value_name = "URL")]
    account_url: Option<String>,
    /// The environment variable that holds the account key for --account-url.
    #[arg(long, value_name = "NAME", default_value = "AZURE_STORAGE_KEY")]
    account_key_env: String,
    /// A SAS URL of the container or the blob (or $AZURE_STORAGE_SAS_URL, which keeps the token
    /// off the command line, where other users can see it).
    #[arg(long, value_name = "URL")]
    sas: Option<String>,
    /// Requests in flight at most (each holds a 4 MiB buffer).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=64))]
    parallel: u64,
    /// Seconds allowed for one request before it is retried.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    timeout: u64,
}

impl AzureArgs {
    /// The store and the blob: the library's credential chain (flags, then the environment).
    fn connect(&self) -> Result<(AzureBlobClient, BlobName)> {
        let chain = CredentialChain {
            sas_url: self.sas.clone(),
            connection_string: self.connection_string.clone(),
            account_url: self.account_url.clone(),
            account_key_env: self.account_key_env.clone(),
        };
        let found = chain.resolve()?;
        for w in &found.warnings {
            eprintln!("warning: {w}");
        }
        let blob = found
            .account
            .blob_name(self.container.as_deref(), self.blob.as_deref())?;
        let client = found.account.client(Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(self.timeout.max(1)),
        });
        Ok((client, blob))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    ManagedDisk,
    PageBlob,
}

#[derive(Args)]
pub struct UploadArgs {
    /// The disk: an Azure-ready fixed VHD (sent as it is), or raw, qcow2, VHDX, dynamic VHD or
    /// ebs://snap-… (converted to a fixed VHD on the fly, no temporary file).
    #[arg(required_unless_present = "point")]
    input: Option<PathBuf>,
    /// Upload a recovery point instead of INPUT: latest, latest-processed, latest-app-consistent,
    /// rp-N or a time, of one disk's --replica (or --base and --journal). Built on the fly: no
    /// temporary file; a marker's digest is checked against the uploaded disk's root.
    #[arg(long, value_name = "P", conflicts_with = "input")]
    point: Option<String>,
    #[command(flatten)]
    point_source: crate::recovery::SourceArgs,
    #[command(flatten)]
    azure: AzureArgs,
    /// Input format; detected when not given.
    #[arg(short = 'f', long = "format")]
    format: Option<Format>,
    /// The disk of an OVA to upload: N (from 1), its OVF disk id, or its file name.
    #[arg(long, value_name = "N|NAME")]
    disk: Option<String>,
    /// What the blob is for: a managed disk upload (20 MiB + 512 to 32 TiB + 512 bytes) or a
    /// plain page blob (at most 8 TiB).
    #[arg(long, value_enum, default_value = "managed-disk")]
    target: TargetArg,
    /// Replace a blob made from another source (pages it holds where this disk has zeros are
    /// cleared; a blob of another length is recreated).
    #[arg(long)]
    overwrite: bool,
    /// Read the blob back and compare it with the source; also sets the blob's Content-MD5 to
    /// the whole VHD's MD5, as azure-vhd-utils does.
    #[arg(long)]
    verify: bool,
    /// Set the blob's Content-MD5 without --verify. The MD5 covers every byte, holes included
    /// (about 8 s for 4 GiB here, computed while the pages go out).
    #[arg(long)]
    content_md5: bool,
    /// Zero gaps of at most this size between two runs of data are sent as zeros, making one
    /// request of two (a request costs about what a few hundred KiB do). 0: only non-zero pages.
    #[arg(long, value_name = "SIZE", default_value = "64K", value_parser = crate::parse_size)]
    merge_gap: u64,
    /// The converted VHD's identity.
    #[command(flatten)]
    id: crate::VhdIdArgs,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    azure: AzureArgs,
    /// The output file (written under a temporary name, renamed when complete).
    output: PathBuf,
    /// Skip the final sync to stable storage.
    #[arg(long)]
    no_sync: bool,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

/// An indicatif bar showing bytes done, and bytes sent and skipped, and the rate.
struct UploadBar<'a> {
    term: term::TermProgress,
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
    counters: Option<&'a UploadCounters>,
}

impl<'a> UploadBar<'a> {
    fn new(quiet: bool, counters: Option<&'a UploadCounters>) -> Self {
        UploadBar {
            term: term::progress(true),
            enabled: !quiet && std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            counters,
        }
    }
}

impl Progress for UploadBar<'_> {
    fn begin(&self, what: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = if total == 0 {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::new(total)
        };
        let style = ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(b) = self.bar.lock()
            && let Some(b) = b.as_ref()
        {
            b.inc(n);
            if let Some(c) = self.counters {
                b.set_message(format!(
                    "sent {} skipped {}",
                    indicatif::HumanBytes(c.sent.load(Relaxed)),
                    indicatif::HumanBytes(c.skipped.load(Relaxed))
                ));
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(b) = b.take()
        {
            b.finish_and_clear();
        }
    }

    fn cancelled(&self) -> bool {
        self.term.cancelled()
    }
}

pub fn upload_cmd(a: UploadArgs, quiet: bool) -> Result<ExitCode> {
    term::install_interrupt_handler();
    let target = match a.target {
        TargetArg::ManagedDisk => Target::ManagedDisk,
        TargetArg::PageBlob => Target::PageBlob,
    };
    let (client, blob) = a.azure.connect()?;
    if let Some(spec) = a.point.clone() {
        return crate::recovery::with_point(&a.point_source, &spec, quiet || a.json, |img, p| {
            let label = format!("{} ({})", p.id, p.time);
            // The marker's digest covers the disk; the upload's identity covers the VHD's
            // virtual size, the same bytes when the disk is a whole MiB.
            let whole_mib = img.len() % (1 << 20) == 0;
            // (The upload engine keeps the identity as hex, as blob metadata holds it.)
            let expect = p.digest.filter(|_| whole_mib).map(|d| d.to_string());
            let expect = expect.as_deref();
            if let Some(want) = p.digest.filter(|_| !whole_mib) {
                // The upload's identity covers the padded VHD, not the disk the marker's digest
                // covers: prove the disk itself first (one more read of the point), so nothing
                // unverified is ever sent.
                let root = ec2azure::Manifest::compute(img)?.root_digest()?;
                if root != want {
                    bail!(
                        "{}: the point's disk has root digest {root}, its marker records {want}; \
                         nothing was sent",
                        p.id
                    );
                }
            }
            upload_source(&a, Source::Disk(img), &label, &client, &blob, expect, quiet)?;
            if !quiet
                && !a.json
                && let Some(d) = &p.digest
            {
                println!(
                    "{} reproduces its marker's digest {d} (checked before sending)",
                    p.id
                );
            }
            Ok(ExitCode::SUCCESS)
        });
    }
    let input = a.input.clone().unwrap_or_default();
    let src = ec2azure::transfer::open_source_with(
        &input,
        &ec2azure::OpenOptions {
            format: a.format,
            disk: a.disk.clone(),
        },
        target,
    )?;
    upload_source(
        &a,
        src.source(),
        &input.display().to_string(),
        &client,
        &blob,
        None,
        quiet,
    )?;
    Ok(ExitCode::SUCCESS)
}

fn upload_source(
    a: &UploadArgs,
    src: Source,
    label: &str,
    client: &AzureBlobClient,
    blob: &BlobName,
    expect_root: Option<&str>,
    quiet: bool,
) -> Result<UploadReport> {
    let target = match a.target {
        TargetArg::ManagedDisk => Target::ManagedDisk,
        TargetArg::PageBlob => Target::PageBlob,
    };
    let counters = UploadCounters::default();
    let bar = UploadBar::new(quiet || a.json, Some(&counters));
    let (unique_id, timestamp) = a.id.resolve()?;
    let opts = UploadOptions {
        overwrite: a.overwrite,
        verify: a.verify,
        content_md5: a.verify || a.content_md5,
        parallel: a.azure.parallel as usize,
        retry: RetryPolicy::default(),
        target,
        unique_id,
        timestamp,
        naive: false,
        merge_gap: a.merge_gap,
        progress: &bar,
        counters: Some(&counters),
        expect_root,
    };
    let report =
        upload(src, client, blob, &opts).with_context(|| format!("uploading {label} to {blob}"))?;
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["input"] = label.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !quiet {
        print_report(label, &report);
    }
    Ok(report)
}

fn print_report(input: &str, r: &UploadReport) {
    let how = if r.converted {
        "converted to a fixed VHD on the fly"
    } else {
        "a fixed VHD, sent as it is"
    };
    println!("Uploaded {input} to {} ({how}; blob {})", r.blob, r.start);
    println!("  blob length   {}", human(r.blob_len));
    println!(
        "  sent          {} in {} Put Page calls",
        human(r.bytes_sent),
        r.put_calls
    );
    println!(
        "  skipped       {} (zero pages{})",
        human(r.bytes_skipped),
        if r.bytes_already_there > 0 {
            format!(", and {} already on the blob", human(r.bytes_already_there))
        } else {
            String::new()
        }
    );
    if r.bytes_cleared > 0 {
        println!("  cleared       {}", human(r.bytes_cleared));
    }
    if r.retries > 0 {
        println!("  retries       {}", r.retries);
    }
    if let Some(m) = &r.content_md5 {
        println!("  content-md5   {m}");
    }
    println!("  source root   {}", r.source_root);
    println!(
        "  time          {:.2} s ({}/s sent)",
        r.seconds,
        indicatif::HumanBytes((r.bytes_sent as f64 / r.seconds.max(1e-9)) as u64)
    );
    if r.verified {
        println!("  verified      the blob reads back equal to the source");
    }
    if !r.metadata_written {
        println!(
            "  note          these credentials may not set metadata or Content-MD5: a later run \
             cannot resume this upload by the source's identity"
        );
    }
}

pub fn download_cmd(a: DownloadArgs, quiet: bool) -> Result<ExitCode> {
    term::install_interrupt_handler();
    let (client, blob) = a.azure.connect()?;
    let bar = UploadBar::new(quiet || a.json, None);
    let opts = DownloadOptions {
        parallel: a.azure.parallel as usize,
        retry: RetryPolicy::default(),
        sync: !a.no_sync,
        progress: &bar,
    };
    let r = download(&client, &blob, &a.output, &opts)
        .with_context(|| format!("downloading {blob} to {}", a.output.display()))?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["output"] = a.output.display().to_string().into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !quiet {
        println!("Downloaded {} to {}", r.blob, a.output.display());
        println!("  length        {}", human(r.len));
        println!(
            "  fetched       {} in {} page ranges",
            human(r.bytes_fetched),
            r.ranges
        );
        println!(
            "  written       {} (zeros left as holes)",
            human(r.bytes_written)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `bench upload`: one seeded sparse disk, uploaded to the in-process fake and (if given) to a
/// Blob endpoint such as Azurite, the way `upload` does it and the naive way.
#[derive(Args)]
pub struct UploadBench {
    /// Folder for the input.
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    /// Size of the disk (30% data, a fifth of it allocated zeros).
    #[arg(long, default_value = "4G", value_parser = crate::parse_size)]
    size: u64,
    /// Rounds per case (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also upload to this Blob endpoint (e.g. Azurite's connection string).
    #[arg(long, value_name = "STRING")]
    connection_string: Option<String>,
    /// Skip the naive cases (every page, one stream).
    #[arg(long)]
    no_naive: bool,
    /// The zero-gap merge of the second case (`upload --merge-gap`).
    #[arg(long, default_value = "64K", value_parser = crate::parse_size)]
    merge_gap: u64,
    /// Requests in flight for the normal cases.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct BenchRow {
    store: &'static str,
    way: String,
    file_len: u64,
    bytes_sent: u64,
    put_calls: u64,
    median_s: f64,
    runs: Vec<f64>,
    mb_per_s_file: f64,
    mb_per_s_sent: f64,
}

pub fn bench_upload(b: UploadBench, quiet: bool) -> Result<ExitCode> {
    use ec2azure::cloud::pageblob::FakePageBlobs;
    use ec2azure::sample::{SampleSpec, make_sample};
    std::fs::create_dir_all(&b.dir)?;
    let input = b.dir.join(format!("upload-{}.raw", b.size));
    if !input.exists() {
        make_sample(
            &input,
            &SampleSpec {
                size: b.size,
                data_fraction: 0.3,
                zero_fraction: 0.2,
                seed: 11,
            },
        )?;
    }
    let vhd = b.dir.join(format!("upload-{}.vhd", b.size));
    if !vhd.exists() {
        let src = ec2azure::open(&input, None)?;
        ec2azure::convert(
            &*src,
            &vhd,
            &ec2azure::ConvertOptions {
                sync: false,
                ..Default::default()
            },
        )?;
    }
    let src = open_source(&vhd, None, Target::ManagedDisk)?;
    let mut rows = Vec::new();
    type MakeStore = Box<dyn Fn() -> Box<dyn PageBlobStore>>;
    let mut stores: Vec<(&'static str, MakeStore)> = vec![(
        "fake",
        Box::new(|| Box::new(FakePageBlobs::new()) as Box<dyn PageBlobStore>),
    )];
    if let Some(cs) = &b.connection_string {
        let acct = Account::from_connection_string(cs)?;
        stores.push((
            "azurite",
            Box::new(move || Box::new(acct.client(Timeouts::default())) as Box<dyn PageBlobStore>),
        ));
    }
    let merged = format!("gap-merge-{}k", b.merge_gap >> 10);
    let mut ways: Vec<(&str, bool, u64)> = vec![
        ("nonzero-pages-only", false, 0),
        (merged.as_str(), false, b.merge_gap),
    ];
    if !b.no_naive {
        ways.push(("naive-every-page-1-stream", true, 0));
    }
    // A container of its own, so no blob of an earlier run is resumed.
    let container = format!(
        "bench{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    for (store_name, make) in &stores {
        for &(way, naive, merge_gap) in &ways {
            let mut times = Vec::new();
            let mut last: Option<UploadReport> = None;
            for round in 0..b.runs.max(1) {
                let store = make();
                let name = BlobName::new(&container, format!("{way}-{round}.vhd"));
                let opts = UploadOptions {
                    overwrite: true,
                    naive,
                    merge_gap,
                    content_md5: false,
                    parallel: b.parallel,
                    ..UploadOptions::default()
                };
                let t = std::time::Instant::now();
                let r = upload(src.source(), &*store, &name, &opts)?;
                times.push(t.elapsed().as_secs_f64());
                last = Some(r);
                drop(store);
            }
            let r = last.context("no run")?;
            let med = median(&times);
            let row = BenchRow {
                store: store_name,
                way: way.to_string(),
                file_len: r.blob_len,
                bytes_sent: r.bytes_sent,
                put_calls: r.put_calls,
                median_s: med,
                runs: times,
                mb_per_s_file: r.blob_len as f64 / med / 1e6,
                mb_per_s_sent: r.bytes_sent as f64 / med / 1e6,
            };
            if !quiet && !b.json {
                eprintln!(
                    "{store_name:8} {way:26} sent {:>6.1}% of {} in {} calls: median {:.2} s \
                     ({:.0} MB/s of file, {:.0} MB/s sent)",
                    100.0 * row.bytes_sent as f64 / row.file_len as f64,
                    indicatif::HumanBytes(row.file_len),
                    row.put_calls,
                    row.median_s,
                    row.mb_per_s_file,
                    row.mb_per_s_sent
                );
            }
            rows.push(row);
        }
    }
    if b.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if !quiet {
        for store in ["fake", "azurite"] {
            let get = |w: &str| {
                rows.iter()
                    .find(|r| r.store == store && r.way == w)
                    .map(|r| r.median_s)
            };
            for ours in ["nonzero-pages-only", merged.as_str()] {
                if let (Some(t), Some(naive)) = (get(ours), get("naive-every-page-1-stream")) {
                    println!("{store}: naive time / {ours} time = {:.2}x", naive / t);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}
