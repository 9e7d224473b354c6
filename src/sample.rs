//! Seeded sample disks, as an EC2 snapshot export would leave them: a sparse raw file where a
//! chosen fraction of the disk holds data, part of that data is allocated zeros (as a freshly
//! zeroed file system leaves), and the rest is holes. The same seed always gives the same bytes;
//! the demo, the tests and the benchmarks all use this generator.
//!
//! The disk is cut into units (1 MiB, less for small disks). Each unit is data with probability
//! `data_fraction`; a data unit is allocated zeros with probability `zero_fraction`, otherwise
//! pseudo-random bytes with about one 4 KiB page in eight left zero.

use crate::error::{Error, Result};
use rayon::prelude::*;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What sample to make.
#[derive(Debug, Clone, Copy)]
pub struct SampleSpec {
    /// Disk size in bytes (any size, also not a multiple of 512).
    pub size: u64,
    /// Fraction of the disk that is allocated (0.0–1.0).
    pub data_fraction: f64,
    /// Fraction of the allocated units that hold zeros.
    pub zero_fraction: f64,
    /// Seed of the generator.
    pub seed: u64,
}

/// What the generated sample holds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SampleStats {
    /// Bytes allocated with pseudo-random data.
    pub data_bytes: u64,
    /// Bytes allocated with zeros.
    pub zero_bytes: u64,
}

/// SplitMix64: a small, fast, well-mixed generator; enough for test data.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

fn unit_size(size: u64) -> u64 {
    let mut u = 1 << 20;
    while u > 4096 && size / u < 64 {
        u /= 2;
    }
    u
}

/// Writes the sample described by `spec` to `path` (created or truncated).
///
/// # Errors
/// The file cannot be written, or a fraction is outside 0–1.
pub fn make_sample(path: &Path, spec: &SampleSpec) -> Result<SampleStats> {
    for (name, f) in [
        ("data fraction", spec.data_fraction),
        ("zero fraction", spec.zero_fraction),
    ] {
        if !(0.0..=1.0).contains(&f) {
            return Err(Error::argument(format!(
                "{name} {f}: expected a number from 0 to 1"
            )));
        }
    }
    let out = crate::export::PendingOutput::create(path)?;
    let file = out.file();
    file.set_len(spec.size)
        .map_err(|e| Error::io("sizing the sample", e).with_path(path))?;
    let unit = unit_size(spec.size);
    let units = spec.size.div_ceil(unit);
    let stats = (0..units)
        .into_par_iter()
        .map_init(
            || vec![0u8; unit as usize],
            |buf, u| -> Result<SampleStats> {
                let mut rng = SplitMix64(spec.seed ^ u.wrapping_mul(0xA24B_AED4_963E_E407));
                if rng.next_f64() >= spec.data_fraction {
                    return Ok(SampleStats::default());
                }
                let start = u * unit;
                let len = (spec.size - start).min(unit) as usize;
                let buf = &mut buf[..len];
                let zeros = rng.next_f64() < spec.zero_fraction;
                if zeros {
                    buf.fill(0);
                } else {
                    rng.fill(buf);
                    for page in buf.chunks_mut(4096) {
                        if rng.next_u64().is_multiple_of(8) {
                            page.fill(0);
                        }
                    }
                }
                file.write_all_at(buf, start).map_err(|e| {
                    Error::io("writing the sample", e)
                        .with_offset(start)
                        .with_path(path)
                })?;
                Ok(if zeros {
                    SampleStats {
                        data_bytes: 0,
                        zero_bytes: len as u64,
                    }
                } else {
                    SampleStats {
                        data_bytes: len as u64,
                        zero_bytes: 0,
                    }
                })
            },
        )
        .try_reduce(SampleStats::default, |a, b| {
            Ok(SampleStats {
                data_bytes: a.data_bytes + b.data_bytes,
                zero_bytes: a.zero_bytes + b.zero_bytes,
            })
        })?;
    out.commit(path, true)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_and_fractions_hold() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SampleSpec {
            size: 64 << 20,
            data_fraction: 0.3,
            zero_fraction: 0.25,
            seed: 42,
        };
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let sa = make_sample(&a, &spec).unwrap();
        make_sample(&b, &spec).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let allocated = (sa.data_bytes + sa.zero_bytes) as f64 / spec.size as f64;
        assert!((0.15..0.45).contains(&allocated), "{allocated}");
        assert!(sa.zero_bytes > 0 && sa.data_bytes > 0);
        let c = dir.path().join("c");
        make_sample(&c, &SampleSpec { seed: 43, ..spec }).unwrap();
        assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
        assert!(
            make_sample(
                &c,
                &SampleSpec {
                    data_fraction: 1.5,
                    ..spec
                }
            )
            .is_err()
        );
    }
}
