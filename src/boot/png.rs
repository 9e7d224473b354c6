//! Screenshots as PNG: qemu 7.1 and later write PNG themselves (`screendump` with `format: png`);
//! older ones write a binary PPM (P6), which [`ppm_to_png`] turns into an RGB PNG (one IDAT,
//! zlib via flate2, no filtering). [`png_size`] reads a PNG's IHDR back, checking the signature
//! and every chunk's CRC-32.

use crate::error::{Error, Result};
use crate::image::partition::{crc32, crc32_update};
use std::io::Write;

/// The eight bytes every PNG starts with.
pub const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// A binary PPM (P6, maxval 255) as an RGB PNG.
///
/// # Errors
/// Not a P6 PPM with maxval 255, or its pixel data is short.
pub fn ppm_to_png(ppm: &[u8]) -> Result<Vec<u8>> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < ppm.len() && (ppm[i].is_ascii_whitespace() || ppm[i] == b'#') {
            if ppm[i] == b'#' {
                while i < ppm.len() && ppm[i] != b'\n' {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
        let start = i;
        while i < ppm.len() && !ppm[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            return Err(Error::invalid("PPM header ends early"));
        }
        fields.push(String::from_utf8_lossy(&ppm[start..i]).into_owned());
    }
    i += 1; // the single whitespace after maxval
    if fields[0] != "P6" || fields[3] != "255" {
        return Err(Error::invalid(format!(
            "PPM: expected P6 with maxval 255, found {} with maxval {}",
            fields[0], fields[3]
        )));
    }
    let dim = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|&v| (1..=16384).contains(&v))
            .ok_or_else(|| Error::invalid(format!("PPM: bad dimension {s:?}")))
    };
    let (w, h) = (dim(&fields[1])?, dim(&fields[2])?);
    let row = w as usize * 3;
    let need = row * h as usize;
    let pixels = ppm
        .get(i..i + need)
        .ok_or_else(|| Error::invalid(format!("PPM: {w}×{h} needs {need} bytes of pixels")))?;
    let mut raw = Vec::with_capacity(need + h as usize);
    for r in pixels.chunks_exact(row) {
        raw.push(0); // filter type None
        raw.extend_from_slice(r);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&raw)
        .map_err(|e| Error::io("compressing PNG", e))?;
    let idat = z.finish().map_err(|e| Error::io("compressing PNG", e))?;
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, truecolour, deflate, no filter, no interlace
    let mut out = PNG_SIGNATURE.to_vec();
    for (kind, data) in [
        (b"IHDR", &ihdr[..]),
        (b"IDAT", &idat[..]),
        (b"IEND", &[][..]),
    ] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc32_update(crc32(kind), data).to_be_bytes());
    }
    Ok(out)
}

/// The width and height of a PNG, after checking its signature, that IHDR comes first and that
/// every chunk's CRC-32 matches up to IEND.
///
/// # Errors
/// Not a PNG, a chunk cut short, a CRC that does not match, or no IEND.
pub fn png_size(png: &[u8]) -> Result<(u32, u32)> {
    if png.get(..8) != Some(&PNG_SIGNATURE[..]) {
        return Err(Error::invalid("not a PNG: the signature is missing"));
    }
    let mut at = 8usize;
    let mut size = None;
    loop {
        let head = png
            .get(at..at + 8)
            .ok_or_else(|| Error::invalid(format!("PNG: chunk header cut short at {at}")))?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        let end = at
            .checked_add(12)
            .and_then(|x| x.checked_add(len))
            .filter(|&e| e <= png.len())
            .ok_or_else(|| Error::invalid(format!("PNG: chunk at {at} runs past the end")))?;
        let data = &png[at + 8..at + 8 + len];
        let want = u32::from_be_bytes([png[end - 4], png[end - 3], png[end - 2], png[end - 1]]);
        let got = crc32_update(crc32(kind), data);
        if got != want {
            return Err(Error::invalid(format!(
                "PNG: chunk {} at {at} has CRC-32 {got:08x}, it records {want:08x}",
                String::from_utf8_lossy(kind)
            )));
        }
        if size.is_none() {
            if kind != b"IHDR" || len != 13 {
                return Err(Error::invalid("PNG: the first chunk is not IHDR"));
            }
            size = Some((
                u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
                u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            ));
        }
        if kind == b"IEND" {
            return size.ok_or_else(|| Error::invalid("PNG: no IHDR"));
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ppm_becomes_a_png_of_its_size() {
        let mut ppm = b"P6\n# qemu\n3 2\n255\n".to_vec();
        ppm.extend((0..18).map(|i| i as u8));
        let png = ppm_to_png(&ppm).unwrap();
        assert_eq!(png_size(&png).unwrap(), (3, 2));
        // The pixels come back from the IDAT.
        let idat_len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
        let mut z = flate2::read::ZlibDecoder::new(&png[41..41 + idat_len]);
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut z, &mut raw).unwrap();
        assert_eq!(raw.len(), 2 * (1 + 9));
        assert_eq!(&raw[1..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let mut bad = png.clone();
        bad[40] ^= 1;
        assert!(png_size(&bad).is_err());
    }

    #[test]
    fn short_or_foreign_ppms_are_refused() {
        assert!(ppm_to_png(b"P6\n3 2\n255\n\x00").is_err());
        assert!(ppm_to_png(b"P3\n1 1\n255\n0 0 0").is_err());
        assert!(ppm_to_png(b"").is_err());
        assert!(png_size(b"\x89PNG\r\n\x1a\n").is_err());
    }
}
