//! What a file is, decided from its content (never its name), and the
//! structural checks that need no decoding: a zero-byte file, a copy cut
//! short, an image too small to read, a type we do not take. Each failure is
//! a quarantine reason, never an error that stops the role.

use crate::quarantine::{Quarantine, Reason};

/// The types the mail room's scanners produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pdf,
    Tiff,
    Png,
    Jpeg,
}

impl Kind {
    pub fn media_type(self) -> &'static str {
        match self {
            Kind::Pdf => "application/pdf",
            Kind::Tiff => "image/tiff",
            Kind::Png => "image/png",
            Kind::Jpeg => "image/jpeg",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Kind::Pdf => "pdf",
            Kind::Tiff => "tif",
            Kind::Png => "png",
            Kind::Jpeg => "jpg",
        }
    }
}

/// Pixel size of each page of an image file (one for PNG and JPEG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pages(pub Vec<(u32, u32)>);

/// The type of `bytes`, with a truncation check where the format allows one.
pub fn sniff(bytes: &[u8]) -> Result<Kind, Quarantine> {
    if bytes.is_empty() {
        return Err(Quarantine::new(Reason::EmptyFile, "the file is empty"));
    }
    let kind = if bytes.starts_with(b"%PDF-") {
        Kind::Pdf
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Kind::Png
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Kind::Jpeg
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Kind::Tiff
    } else {
        return Err(Quarantine::new(
            Reason::UnsupportedType,
            "not a PDF, TIFF, PNG or JPEG file",
        ));
    };
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    let complete = match kind {
        Kind::Pdf => contains(tail, b"%%EOF"),
        Kind::Png => contains(tail, b"IEND"),
        Kind::Jpeg => contains(&bytes[bytes.len().saturating_sub(64)..], &[0xFF, 0xD9]),
        Kind::Tiff => true, // checked page by page in `image_pages`
    };
    if !complete {
        return Err(Quarantine::new(
            Reason::Truncated,
            format!("the {} file ends before its end marker", kind.extension()),
        ));
    }
    Ok(kind)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Page sizes of an image file, from its headers.
pub fn image_pages(kind: Kind, bytes: &[u8]) -> Result<Pages, Quarantine> {
    let truncated = || Quarantine::new(Reason::Truncated, "the image headers are incomplete");
    match kind {
        Kind::Png => {
            if bytes.len() < 24 || &bytes[12..16] != b"IHDR" {
                return Err(truncated());
            }
            Ok(Pages(vec![(be32(&bytes[16..20]), be32(&bytes[20..24]))]))
        }
        Kind::Jpeg => jpeg_size(bytes)
            .map(|s| Pages(vec![s]))
            .ok_or_else(truncated),
        Kind::Tiff => tiff_pages(bytes),
        Kind::Pdf => Ok(Pages(vec![])),
    }
}

/// Every page within `max_pixels` as its header declares it: OCR decodes
/// the whole image (several times over, as it binarises it), so a header of
/// 100 000 × 100 000 in a file of a few kilobytes is set aside before any
/// decoder runs.
pub fn check_pixel_budget(pages: &[(u32, u32)], max_pixels: u64) -> Result<(), Quarantine> {
    for (i, (w, h)) in pages.iter().enumerate() {
        let pixels = u64::from(*w) * u64::from(*h);
        if pixels > max_pixels {
            metrics::counter!("guichet_scan_ocr_limit_total", "limit" => "pixel_budget")
                .increment(1);
            return Err(Quarantine::new(
                Reason::TooLarge,
                format!(
                    "page {} is {w}×{h} pixels ({pixels}), more than the pixel budget \
                     of {max_pixels} per page (scan.ocr_max_pixels_per_page)",
                    i + 1
                ),
            ));
        }
    }
    Ok(())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    while i + 9 < b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        let is_sof = (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker);
        if is_sof {
            let h = u32::from(u16::from_be_bytes([b[i + 5], b[i + 6]]));
            let w = u32::from(u16::from_be_bytes([b[i + 7], b[i + 8]]));
            return Some((w, h));
        }
        i += 2 + len;
    }
    None
}

/// Walk a TIFF's image file directories: one per page.
fn tiff_pages(b: &[u8]) -> Result<Pages, Quarantine> {
    let truncated = |what: &str| Quarantine::new(Reason::Truncated, format!("TIFF {what}"));
    let le = b[0] == b'I';
    let u16_at = |o: usize| -> Option<u32> {
        let s = b.get(o..o + 2)?;
        Some(u32::from(if le {
            u16::from_le_bytes([s[0], s[1]])
        } else {
            u16::from_be_bytes([s[0], s[1]])
        }))
    };
    let u32_at = |o: usize| -> Option<u32> {
        let s = b.get(o..o + 4)?;
        Some(if le {
            u32::from_le_bytes([s[0], s[1], s[2], s[3]])
        } else {
            u32::from_be_bytes([s[0], s[1], s[2], s[3]])
        })
    };
    // A tag's single value (SHORT or LONG) or, for counts > 1, its list.
    let values = |entry: usize| -> Option<Vec<u32>> {
        let ty = u16_at(entry + 2)?;
        let count = u32_at(entry + 4)? as usize;
        let size = match ty {
            3 => 2,
            4 => 4,
            _ => return Some(vec![]),
        };
        let at = if count * size <= 4 {
            entry + 8
        } else {
            u32_at(entry + 8)? as usize
        };
        (0..count.min(1 << 16))
            .map(|k| {
                if size == 2 {
                    u16_at(at + k * 2)
                } else {
                    u32_at(at + k * 4)
                }
            })
            .collect()
    };
    let mut pages = Vec::new();
    let mut ifd = u32_at(4).ok_or_else(|| truncated("header"))? as usize;
    while ifd != 0 {
        if pages.len() >= 10_000 {
            return Err(Quarantine::new(Reason::Unreadable, "TIFF directory loop"));
        }
        let n =
            u16_at(ifd).ok_or_else(|| truncated("directory beyond the end of the file"))? as usize;
        let (mut w, mut h) = (0, 0);
        let (mut offsets, mut counts) = (vec![], vec![]);
        for k in 0..n {
            let entry = ifd + 2 + k * 12;
            let tag = u16_at(entry).ok_or_else(|| truncated("directory cut short"))?;
            let v = values(entry).ok_or_else(|| truncated("tag values beyond the end"))?;
            match tag {
                256 => w = v.first().copied().unwrap_or(0),
                257 => h = v.first().copied().unwrap_or(0),
                273 => offsets = v,
                279 => counts = v,
                _ => {}
            }
        }
        for (o, c) in offsets.iter().zip(&counts) {
            if (*o as usize).saturating_add(*c as usize) > b.len() {
                return Err(truncated("image data beyond the end of the file"));
            }
        }
        pages.push((w, h));
        ifd = u32_at(ifd + 2 + n * 12).ok_or_else(|| truncated("directory cut short"))? as usize;
    }
    if pages.is_empty() {
        return Err(Quarantine::new(Reason::Unreadable, "TIFF without pages"));
    }
    Ok(Pages(pages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_sniffing_reads_content_not_names() {
        assert_eq!(sniff(b"").unwrap_err().reason, Reason::EmptyFile);
        assert_eq!(
            sniff(b"hello world").unwrap_err().reason,
            Reason::UnsupportedType
        );
        assert_eq!(sniff(b"%PDF-1.4\n...\n%%EOF\n").unwrap(), Kind::Pdf);
        assert_eq!(
            sniff(b"%PDF-1.4\n1 0 obj <<").unwrap_err().reason,
            Reason::Truncated
        );
    }

    #[test]
    fn scan_png_size_comes_from_its_header() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend(100u32.to_be_bytes());
        png.extend(50u32.to_be_bytes());
        png.extend(b"....IEND....");
        assert_eq!(sniff(&png).unwrap(), Kind::Png);
        assert_eq!(
            image_pages(Kind::Png, &png).unwrap(),
            Pages(vec![(100, 50)])
        );
    }

    #[test]
    fn scan_image_headers_are_held_against_the_pixel_budget() {
        let budget = 40_000_000;
        // PNG: IHDR declaring 100 000 × 100 000 (10 Gpx) in 40 bytes.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend(100_000u32.to_be_bytes());
        png.extend(100_000u32.to_be_bytes());
        png.extend(b"....IEND....");
        let pages = image_pages(sniff(&png).unwrap(), &png).unwrap().0;
        assert_eq!(pages, [(100_000, 100_000)]);
        let q = check_pixel_budget(&pages, budget).unwrap_err();
        assert_eq!(q.reason, Reason::TooLarge);
        assert!(q.detail.contains("100000×100000"), "{q:?}");
        assert!(q.detail.contains("pixel budget"), "{q:?}");
        // JPEG: an APP0 segment, then SOF0 declaring 65 535 × 65 535.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0];
        jpeg.extend([0xFF, 0xC0, 0, 11, 8, 0xFF, 0xFF, 0xFF, 0xFF, 1, 1, 0x11, 0]);
        jpeg.extend([0xFF, 0xD9]);
        let pages = image_pages(sniff(&jpeg).unwrap(), &jpeg).unwrap().0;
        assert_eq!(pages, [(65_535, 65_535)]);
        assert!(check_pixel_budget(&pages, budget).is_err());
        // TIFF: a first page of A4 at 300 dpi, a second of 70 000 × 70 000.
        let mut tiff = b"II*\0".to_vec();
        tiff.extend(8u32.to_le_bytes());
        let ifd = |tiff: &mut Vec<u8>, w: u32, h: u32, next: u32| {
            tiff.extend(2u16.to_le_bytes());
            for (tag, v) in [(256u16, w), (257, h)] {
                tiff.extend(tag.to_le_bytes());
                tiff.extend(4u16.to_le_bytes()); // LONG
                tiff.extend(1u32.to_le_bytes());
                tiff.extend(v.to_le_bytes());
            }
            tiff.extend(next.to_le_bytes());
        };
        ifd(&mut tiff, 2480, 3508, 8 + 30);
        ifd(&mut tiff, 70_000, 70_000, 0);
        let pages = image_pages(sniff(&tiff).unwrap(), &tiff).unwrap().0;
        assert_eq!(pages, [(2480, 3508), (70_000, 70_000)]);
        let q = check_pixel_budget(&pages, budget).unwrap_err();
        assert!(q.detail.starts_with("page 2 is 70000×70000"), "{q:?}");
        // An ordinary scan is within the default budget, even at 600 dpi.
        assert!(check_pixel_budget(&[(2480, 3508), (4961, 7016)], budget).is_ok());
    }
}
