//! Real images made on the spot, for the demo, the benchmarks and the tests: baseline JPEGs (through the
//! `jpeg-encoder` crate) and 24-bit BMPs, each with content derived from a seed, so that every image of a
//! run is different and can be told apart by its hash.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rand::{Rng, SeedableRng};

/// A JPEG of `w`×`h` pixels: a colour gradient with seeded noise, so no two seeds give the same bytes.
pub fn jpeg(w: u16, h: u16, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (w_, h_) = (w as usize, h as usize);
    let mut px = Vec::with_capacity(w_ * h_ * 3);
    let tint: [u8; 3] = rng.random();
    for y in 0..h_ {
        for x in 0..w_ {
            let n: u8 = rng.random_range(0..24);
            px.push(
                ((x * 255 / w_.max(1)) as u8)
                    .wrapping_add(tint[0])
                    .wrapping_add(n),
            );
            px.push(((y * 255 / h_.max(1)) as u8).wrapping_add(tint[1]));
            px.push(tint[2].wrapping_add(n));
        }
    }
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, 85);
    enc.encode(&px, w, h, jpeg_encoder::ColorType::Rgb)
        .expect("encoding into a Vec cannot fail");
    out
}

/// A bottom-up 24-bit BMP of `w`×`h` pixels with seeded random pixels.
pub fn bmp(w: u32, h: u32, seed: u64) -> Vec<u8> {
    let row = (w as usize * 3).div_ceil(4) * 4;
    let pixels = row * h as usize;
    let size = 54 + pixels;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(b"BM");
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&(w as i32).to_le_bytes());
    out.extend_from_slice(&(h as i32).to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(pixels as u32).to_le_bytes());
    out.extend_from_slice(&2835u32.to_le_bytes());
    out.extend_from_slice(&2835u32.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    out.resize(size, 0);
    rng.fill(&mut out[54..]);
    out
}

/// A BMP of about `bytes` bytes (square-ish), for size-driven workloads.
pub fn bmp_of_size(bytes: usize, seed: u64) -> Vec<u8> {
    let px = (bytes.saturating_sub(54) / 3).max(1);
    let w = (px as f64).sqrt().ceil() as u32;
    let h = (px as u32).div_ceil(w).max(1);
    bmp(w, h, seed)
}

/// Where a sender's images come from.
#[derive(Clone, Debug)]
pub enum ImageSet {
    /// Files read from a directory (sorted by name), sent round-robin.
    Files(Vec<(PathBuf, Bytes)>),
    /// Generated: image `i` is a JPEG (even i) or a BMP (odd i) of about `size` bytes, from seed `seed + i`.
    Generated { size: usize, seed: u64 },
}

impl ImageSet {
    /// Loads every regular file of a directory (not recursive).
    pub fn from_dir(dir: &Path) -> std::io::Result<ImageSet> {
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_file() {
                let data = std::fs::read(&p)?;
                if !data.is_empty() {
                    files.push((p, Bytes::from(data)));
                }
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        if files.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no images in {}", dir.display()),
            ));
        }
        Ok(ImageSet::Files(files))
    }

    /// Image number `i`, with a label for the manifest (file path, or `generated:<i>`).
    pub fn get(&self, i: u64) -> (String, Bytes) {
        match self {
            ImageSet::Files(files) => {
                let (p, b) = &files[(i % files.len() as u64) as usize];
                (p.display().to_string(), b.clone())
            }
            ImageSet::Generated { size, seed } => {
                let s = seed.wrapping_add(i);
                let data = if i.is_multiple_of(2) {
                    // JPEG compresses, so ask for more pixels than bytes.
                    let side = ((*size as f64 / 0.6).sqrt() as u16).clamp(8, 4096);
                    jpeg(side, side, s)
                } else {
                    bmp_of_size(*size, s)
                };
                (format!("generated:{i}"), Bytes::from(data))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_images_are_real_and_distinct() {
        let j = jpeg(64, 48, 1);
        assert_eq!(
            imagesize::blob_size(&j).unwrap(),
            imagesize::ImageSize {
                width: 64,
                height: 48
            }
        );
        let b = bmp(31, 7, 1);
        assert_eq!(
            imagesize::blob_size(&b).unwrap(),
            imagesize::ImageSize {
                width: 31,
                height: 7
            }
        );
        assert_ne!(jpeg(64, 48, 2), j);
        assert_ne!(bmp(31, 7, 2), b);
    }

    #[test]
    fn a_sized_bmp_is_close_to_the_size_asked() {
        let b = bmp_of_size(256 * 1024, 3);
        assert!(b.len() >= 256 * 1024 && b.len() < 260 * 1024, "{}", b.len());
    }
}
