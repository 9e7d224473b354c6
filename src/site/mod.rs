//! Site Recovery offline: a **site** is one folder holding the simulated AWS estate and Azure
//! subscription, Site Recovery's objects and their files (replicas, journals, blobs), with the
//! state in SQLite ([`store`]). Everything a user can do from the CLI is a call on a [`Site`];
//! the CLI and the rehearsal runner are thin layers over the same calls.
//!
//! ```text
//! DIR/site.db          the state: resources by ARM id, jobs, settings (clock, seed, estate)
//! DIR/replicas/ITEM/N  a replicated disk: its base, received journal segments, state
//! DIR/source/ITEM/N    what the machine's Mobility service wrote and has not shipped yet
//! DIR/blobs/           page blobs of the simulated storage accounts
//! DIR/locks/           lock files of processes advancing the clock or doing a job's work
//! ```
//!
//! Simulated time moves only by [`Site::advance`] (the CLI's `clock advance`, or a command's
//! `--wait`): jobs' tasks end at their modelled durations ([`jobs::Durations`]) and do their
//! work then; replication is computed for the span.

pub mod azure;
pub mod checks;
pub mod estate;
pub mod failover;
pub mod jobs;
pub mod lock;
pub mod model;
pub mod plans;
pub mod protect;
pub mod rehearse;
pub mod replication;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod states;
pub mod store;
pub mod support;
pub mod vault;

#[cfg(test)]
mod failover_tests;
#[cfg(test)]
mod plans_tests;
#[cfg(test)]
mod tests;

use crate::digest::sha256;
use crate::error::{Error, Result};
use jobs::{Durations, Job, JobState, job_error};
use lock::FileLock;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use store::{Resource, Store, Tx};

/// The default site folder.
pub const DEFAULT_DIR: &str = "ec2azure-site";

/// The site's settings, fixed at `site init` (a scenario sets them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteConfig {
    /// The simulated Azure subscription's id.
    pub subscription_id: String,
    /// The seed every simulated workload and id derives from.
    pub seed: u64,
    /// When the site's clock started (ms).
    pub start_ms: u64,
    /// The modelled durations of the service's steps.
    pub durations: Durations,
}

/// A site, open.
#[derive(Debug)]
pub struct Site {
    dir: PathBuf,
    store: Store,
    config: SiteConfig,
    /// Jobs found interrupted when the site was opened.
    recovered: Vec<String>,
}

const DB: &str = "site.db";

/// 2026-01-01T00:00:00Z, the default start of a site's clock.
pub const DEFAULT_START_MS: u64 = 1_767_225_600_000;

impl Site {
    /// Makes a new site in `dir` (which must not hold one).
    ///
    /// # Errors
    /// `dir` holds a site already, or cannot be written.
    pub fn init(dir: &Path, config: SiteConfig) -> Result<Site> {
        if dir.join(DB).exists() {
            return Err(Error::conflict(format!(
                "{} holds a site already (remove it, or use another --site)",
                dir.display()
            ))
            .with_path(dir));
        }
        for sub in ["", "replicas", "source", "blobs", "locks"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::io("creating the site", e).with_path(dir.join(sub)))?;
        }
        let mut store = Store::open(&dir.join(DB))?;
        store.tx(|t| {
            t.set_setting("site", &config)?;
            t.set_setting("clock", &config.start_ms)?;
            t.set_setting("counter", &0u64)
        })?;
        Ok(Site {
            dir: dir.to_path_buf(),
            store,
            config,
            recovered: Vec::new(),
        })
    }

    /// Opens the site in `dir`; jobs a killed process left running are failed as interrupted,
    /// their partial files removed and their items left in a legal state.
    ///
    /// # Errors
    /// No site is there, or its database cannot be opened.
    pub fn open(dir: &Path) -> Result<Site> {
        let db = dir.join(DB);
        if !db.exists() {
            return Err(Error::not_found(format!(
                "no site in {} (make one with `ec2azure site init`)",
                dir.display()
            ))
            .with_path(dir));
        }
        let mut store = Store::open(&db)?;
        let config: SiteConfig = store
            .tx(|t| t.setting("site"))?
            .ok_or_else(|| Error::invalid("the site has no settings").with_path(&db))?;
        let mut site = Site {
            dir: dir.to_path_buf(),
            store,
            config,
            recovered: Vec::new(),
        };
        site.recover_interrupted()?;
        Ok(site)
    }

    /// The site's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The site's settings.
    pub fn config(&self) -> &SiteConfig {
        &self.config
    }

    /// Jobs found interrupted (and failed) when the site was opened.
    pub fn recovered(&self) -> &[String] {
        &self.recovered
    }

    /// Runs `f` in one transaction.
    ///
    /// # Errors
    /// `f`'s error (nothing written), or the store's.
    pub fn tx<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.store.tx(f)
    }

    /// The simulated time now (ms).
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn now_ms(&mut self) -> Result<u64> {
        self.tx(now_ms)
    }

    /// The subscription's ARM id.
    pub fn subscription(&self) -> String {
        format!("/subscriptions/{}", self.config.subscription_id)
    }

    /// A lock file's path.
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.dir.join("locks").join(format!("{name}.lock"))
    }

    fn recover_interrupted(&mut self) -> Result<()> {
        let jobs = self.tx(|t| t.list::<Job>(None))?;
        for j in jobs {
            if j.properties.state.is_final() {
                continue;
            }
            let Some((i, lock)) = j
                .properties
                .tasks
                .iter()
                .enumerate()
                .find_map(|(i, t)| t.running_lock.clone().map(|l| (i, l)))
            else {
                continue;
            };
            let path = self.dir.join("locks").join(&lock);
            // Someone holds it: the work is still being done.
            let Some(held) = FileLock::try_acquire(&path)? else {
                continue;
            };
            let id = j.id.clone();
            protect::cleanup_task(self, &j, i)?;
            self.tx(|t| {
                let mut j = t.get::<Job>(&id)?;
                if j.properties.tasks[i].running_lock.as_deref() != Some(lock.as_str()) {
                    return Ok(());
                }
                let now = now_ms(t)?;
                j.properties.fail_task(
                    i,
                    job_error(
                        "interrupted",
                        "The job was interrupted: the process doing its work stopped (killed, \
                         crashed or interrupted) before it finished.",
                        "The ec2azure process running the job ended before the task completed.",
                        "Restart the job, or retry the operation.",
                    ),
                    now,
                );
                t.update(&mut j)?;
                runner::job_ended(t, &j)
            })?;
            held.release();
            self.recovered.push(id);
        }
        Ok(())
    }

    /// A new id for an object: a GUID derived from the site's seed and a counter, so the same
    /// scenario gives the same ids.
    ///
    /// # Errors
    /// The store cannot be written.
    pub fn guid(t: &Tx<'_>, seed: u64) -> Result<String> {
        let n: u64 = t.setting("counter")?.unwrap_or(0) + 1;
        t.set_setting("counter", &n)?;
        let d = sha256(format!("ec2azure site {seed} {n}").as_bytes());
        let h = hex::encode(&d[..16]);
        Ok(format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }

    /// Every job, oldest first.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn jobs(&mut self) -> Result<Vec<Resource<Job>>> {
        self.tx(|t| t.list::<Job>(None))
    }

    /// A job by its id or its name (the id's last part).
    ///
    /// # Errors
    /// No such job.
    pub fn job(&mut self, id: &str) -> Result<Resource<Job>> {
        self.tx(|t| find_job(t, id))
    }

    /// Asks a running job to stop: it becomes `Cancelling` and stops before its next task
    /// (the task under way finishes; a failover's item is left not replicating).
    ///
    /// # Errors
    /// No such job, or it is not running.
    pub fn cancel_job(&mut self, id: &str) -> Result<Resource<Job>> {
        self.tx(|t| {
            let mut j = find_job(t, id)?;
            if !j.properties.allowed_actions().contains(&"Cancel") {
                return Err(Error::conflict(format!(
                    "job {} is {:?}; cancel is allowed only while it runs or is suspended",
                    j.name, j.properties.state
                )));
            }
            j.properties.state = JobState::Cancelling;
            j.properties.state_description = "Cancelling".into();
            t.update(&mut j)?;
            Ok(j)
        })
    }

    /// Resumes a suspended job, with optional comments.
    ///
    /// # Errors
    /// No such job, or it is not suspended.
    pub fn resume_job(&mut self, id: &str, comments: Option<&str>) -> Result<Resource<Job>> {
        self.tx(|t| {
            let mut j = find_job(t, id)?;
            if j.properties.state != JobState::Suspended {
                return Err(Error::conflict(format!(
                    "job {} is {:?}; only a suspended job can be resumed",
                    j.name, j.properties.state
                )));
            }
            j.properties.state = JobState::InProgress;
            j.properties.state_description = "InProgress".into();
            j.properties.comments = comments.map(str::to_string);
            // The task that suspended it (a manual action) is done when it runs again.
            if let Some(task) = j
                .properties
                .tasks
                .iter_mut()
                .find(|t| t.state == JobState::InProgress)
            {
                task.output.insert("resumed".into(), true.into());
                task.state_description = None;
            }
            t.update(&mut j)?;
            Ok(j)
        })
    }

    /// Restarts a failed or cancelled job: a new `RestartJob` job ("Restarting job") that runs
    /// the original's tasks again from the first that did not succeed.
    ///
    /// # Errors
    /// No such job, it did not fail, or its object no longer allows it.
    pub fn restart_job(&mut self, id: &str) -> Result<Resource<Job>> {
        let seed = self.config.seed;
        let durations = self.config.durations.clone();
        self.tx(|t| {
            let old = find_job(t, id)?;
            if !old.properties.allowed_actions().contains(&"Restart") {
                return Err(Error::conflict(format!(
                    "job {} is {:?}; only a failed or cancelled job can be restarted",
                    old.name, old.properties.state
                )));
            }
            vault::restart(t, seed, &durations, &old)
        })
    }
}

/// The clock's time (ms).
///
/// # Errors
/// The store cannot be read.
pub fn now_ms(t: &Tx<'_>) -> Result<u64> {
    t.setting::<u64>("clock")?
        .ok_or_else(|| Error::invalid("the site has no clock"))
}

fn find_job(t: &Tx<'_>, id: &str) -> Result<Resource<Job>> {
    if let Some(j) = t.find::<Job>(id)? {
        return Ok(j);
    }
    t.list::<Job>(None)?
        .into_iter()
        .find(|j| j.name == id)
        .ok_or_else(|| Error::not_found(format!("no job {id}")))
}
