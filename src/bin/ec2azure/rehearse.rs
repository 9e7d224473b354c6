//! `ec2azure rehearse SCENARIO.toml`: a whole migration rehearsed from one file, with its
//! report (terminal table, JSON, a self-contained HTML page).

use anyhow::{Result, bail};
use ec2azure::progress::NoProgress;
use ec2azure::site::rehearse::{RehearseOptions, rehearse};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub(crate) struct RehearseArgs {
    /// The scenario file (see examples/).
    scenario: PathBuf,
    /// Write report.html and report.json into this folder.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the site in this folder (it must not exist); default REPORT/site with --report,
    /// else a temporary folder removed at the end.
    #[arg(long)]
    site: Option<PathBuf>,
    /// EC2 and EBS at this endpoint (moto) instead of the in-process fake.
    #[arg(long)]
    aws_endpoint: Option<String>,
    /// Its region.
    #[arg(long)]
    aws_region: Option<String>,
}

/// Exit 0 when every objective is met and every step went as expected, 1 when not, 2 on an
/// error.
pub(crate) fn run(a: RehearseArgs, quiet: bool) -> Result<ExitCode> {
    let tmp;
    let site_dir = match (&a.site, &a.report) {
        (Some(s), _) => s.clone(),
        (None, Some(r)) => r.join("site"),
        (None, None) => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("site")
        }
    };
    if site_dir.join("site.db").exists() {
        bail!(
            "{} holds a site already: a rehearsal makes a new one (give another --site or \
             --report folder)",
            site_dir.display()
        );
    }
    let r = rehearse(
        &a.scenario,
        &RehearseOptions {
            site_dir,
            aws_endpoint: a.aws_endpoint.clone(),
            aws_region: a.aws_region.clone(),
        },
        &NoProgress,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r.report)?);
    } else if !quiet {
        print!("{}", r.report.text());
    }
    if let Some(dir) = &a.report {
        let files = r.report.write(dir)?;
        if !quiet && !a.json {
            println!("report: {}", files.html.display());
        }
    }
    Ok(if r.met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
