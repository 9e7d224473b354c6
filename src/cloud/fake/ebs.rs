//! An in-process EBS direct API: [`FakeEbs`] is deterministic, with parent snapshots,
//! pagination, checksums and injectable faults ([`Fault`]: throttling, not-found-yet, 5xx,
//! timeouts, corrupt block checksums, missing blocks). A snapshot lists its own blocks and every
//! block of its ancestors it does not override, as the service does.

use crate::cloud::ebs::{BLOCK_SIZE, BlockData, BlockPage, ChangedPage, EbsApi, EbsError};
use base64::Engine;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

/// The first block index of the page a fake's token names (0 for the first page).
fn fake_page_start(next: Option<&str>) -> Result<u64, EbsError> {
    next.map_or(Ok(0), |t| {
        t.parse()
            .map_err(|_| EbsError::Fatal(format!("bad page token {t:?}")))
    })
}

/// A fault the fake service injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next call answers with this error.
    Next(EbsError),
    /// Block `index` answers with data that does not match its checksum.
    CorruptBlock(u64),
    /// Block `index` is listed but GetSnapshotBlock fails fatally for it.
    MissingBlock(u64),
}

#[derive(Debug, Clone)]
struct FakeSnapshot {
    parent: Option<String>,
    volume_size_gib: u64,
    blocks: BTreeMap<u64, Vec<u8>>,
}

/// An in-process EBS direct API: deterministic, with parent snapshots, pagination, checksums
/// and injectable faults. A snapshot lists its own blocks and every block of its ancestors it
/// does not override, as the service does.
#[derive(Debug, Default)]
pub struct FakeEbs {
    snapshots: Mutex<HashMap<String, FakeSnapshot>>,
    faults: Mutex<VecDeque<Fault>>,
    sticky: Mutex<Vec<Fault>>,
    page_size: usize,
    calls: Mutex<u64>,
}

impl FakeEbs {
    /// A fake whose ListSnapshotBlocks pages hold `page_size` blocks.
    pub fn new(page_size: usize) -> Self {
        FakeEbs {
            page_size: page_size.max(1),
            ..Default::default()
        }
    }

    /// Adds a snapshot of `volume_size_gib` GiB holding `blocks` (index → data, at most 512 KiB
    /// each) on top of `parent`.
    pub fn add_snapshot(
        &self,
        id: &str,
        parent: Option<&str>,
        volume_size_gib: u64,
        blocks: BTreeMap<u64, Vec<u8>>,
    ) {
        let mut s = crate::sync::lock(&self.snapshots);
        s.insert(
            id.to_string(),
            FakeSnapshot {
                parent: parent.map(str::to_string),
                volume_size_gib,
                blocks,
            },
        );
    }

    /// Queues a fault: `Next` faults fire once, in order; block faults stay.
    pub fn inject(&self, fault: Fault) {
        match fault {
            Fault::Next(_) => crate::sync::lock(&self.faults).push_back(fault),
            f => crate::sync::lock(&self.sticky).push(f),
        }
    }

    /// Calls answered so far (faults included).
    pub fn calls(&self) -> u64 {
        *crate::sync::lock(&self.calls)
    }

    fn next_fault(&self) -> Result<(), EbsError> {
        *crate::sync::lock(&self.calls) += 1;
        match crate::sync::lock(&self.faults).pop_front() {
            Some(Fault::Next(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Block `index` of `id`: its own, or the nearest ancestor's (only that block is copied).
    fn find_block(&self, id: &str, index: u64) -> Result<Option<Vec<u8>>, EbsError> {
        let s = crate::sync::lock(&self.snapshots);
        let mut cur = Some(id.to_string());
        let mut depth = 0;
        while let Some(c) = cur {
            let snap = s.get(&c).ok_or(EbsError::NotFoundYet)?;
            if let Some(d) = snap.blocks.get(&index) {
                return Ok(Some(d.clone()));
            }
            depth += 1;
            if depth > 64 {
                return Err(EbsError::Fatal("snapshot chain too deep".into()));
            }
            cur = snap.parent.clone();
        }
        Ok(None)
    }

    /// Every block of `id` with its ancestors' blocks underneath.
    fn resolved(&self, id: &str) -> Result<(u64, BTreeMap<u64, Vec<u8>>), EbsError> {
        let s = crate::sync::lock(&self.snapshots);
        let mut chain = Vec::new();
        let mut cur = Some(id.to_string());
        while let Some(c) = cur {
            let snap = s.get(&c).ok_or(EbsError::NotFoundYet)?;
            if chain.len() > 64 {
                return Err(EbsError::Fatal("snapshot chain too deep".into()));
            }
            chain.push(snap.clone());
            cur = snap.parent.clone();
        }
        let size = chain[0].volume_size_gib;
        let mut blocks = BTreeMap::new();
        for snap in chain.iter().rev() {
            blocks.extend(snap.blocks.iter().map(|(k, v)| (*k, v.clone())));
        }
        Ok((size, blocks))
    }
}

impl EbsApi for FakeEbs {
    fn list_snapshot_blocks(
        &self,
        snapshot: &str,
        next: Option<&str>,
    ) -> Result<BlockPage, EbsError> {
        self.next_fault()?;
        let (size, blocks) = self.resolved(snapshot)?;
        let start = fake_page_start(next)?;
        let page: Vec<(u64, String)> = blocks
            .range(start..)
            .take(self.page_size + 1)
            .map(|(i, d)| (*i, format!("{snapshot}/{i}/{}", d.len())))
            .collect();
        let more = page.len() > self.page_size;
        let next = more.then(|| page[self.page_size].0.to_string());
        Ok(BlockPage {
            blocks: page.into_iter().take(self.page_size).collect(),
            next,
            volume_size_gib: size,
            block_size: BLOCK_SIZE,
        })
    }

    fn get_snapshot_block(
        &self,
        snapshot: &str,
        index: u64,
        token: &str,
    ) -> Result<BlockData, EbsError> {
        self.next_fault()?;
        if !token.starts_with(&format!("{snapshot}/{index}/")) {
            return Err(EbsError::Fatal(format!(
                "ValidationException: bad block token {token:?}"
            )));
        }
        let sticky = crate::sync::lock(&self.sticky).clone();
        if sticky.contains(&Fault::MissingBlock(index)) {
            return Err(EbsError::Fatal(format!(
                "ResourceNotFoundException: block {index}"
            )));
        }
        let data = self
            .find_block(snapshot, index)?
            .ok_or_else(|| EbsError::Fatal(format!("ResourceNotFoundException: block {index}")))?;
        let mut checksum =
            base64::engine::general_purpose::STANDARD.encode(crate::digest::sha256(&data));
        if sticky.contains(&Fault::CorruptBlock(index)) {
            checksum = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
        }
        Ok(BlockData {
            data,
            checksum,
            algorithm: "SHA256".into(),
        })
    }

    fn list_changed_blocks(
        &self,
        first: &str,
        second: &str,
        next: Option<&str>,
    ) -> Result<ChangedPage, EbsError> {
        self.next_fault()?;
        let all = self.diff(first, second)?;
        let start = fake_page_start(next)?;
        let page: Vec<u64> = all
            .into_iter()
            .filter(|&i| i >= start)
            .take(self.page_size + 1)
            .collect();
        let next = (page.len() > self.page_size).then(|| page[self.page_size].to_string());
        Ok(ChangedPage {
            blocks: page.into_iter().take(self.page_size).collect(),
            next,
        })
    }
}

impl FakeEbs {
    /// Indices whose blocks differ between two snapshots (present in one only, or different).
    fn diff(&self, first: &str, second: &str) -> Result<Vec<u64>, EbsError> {
        let (_, a) = self.resolved(first)?;
        let (_, b) = self.resolved(second)?;
        let mut idx: Vec<u64> = a.keys().chain(b.keys()).copied().collect();
        idx.sort_unstable();
        idx.dedup();
        Ok(idx.into_iter().filter(|i| a.get(i) != b.get(i)).collect())
    }
}
