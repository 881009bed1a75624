//! Tiny real images, built byte by byte, for the sink's tests.
//!
//! Each builder produces a complete, decodable 1x1 image (PNG with correct chunk CRCs and a stored
//! zlib stream, a 24-bit BMP, the classic 1x1 GIF89a, a baseline greyscale JPEG with its own
//! one-symbol Huffman tables, an uncompressed greyscale TIFF), except WebP, which is only a
//! `VP8X` header: enough for the sniff and for `imagesize`, not for a decoder.

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&be32(data.len() as u32));
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&be32(crc.finalize()));
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// A 1x1 RGB PNG (one red pixel).
pub fn png_1x1() -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    // width, height, bit depth 8, colour type 2 (RGB), compression, filter, interlace
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&be32(1));
    ihdr.extend_from_slice(&be32(1));
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    // One scanline: filter byte 0, then R G B. zlib header, one stored deflate block, adler32.
    let raw = [0u8, 0xFF, 0x00, 0x00];
    let mut idat = vec![0x78, 0x01, 0x01];
    idat.extend_from_slice(&(raw.len() as u16).to_le_bytes());
    idat.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
    idat.extend_from_slice(&raw);
    idat.extend_from_slice(&be32(adler32(&raw)));
    png_chunk(&mut out, b"IDAT", &idat);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A 1x1 24-bit BMP (one blue pixel, row padded to 4 bytes).
pub fn bmp_1x1() -> Vec<u8> {
    let pixels = [0xFF, 0x00, 0x00, 0x00];
    let offset = 14 + 40;
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&((offset + pixels.len()) as u32).to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(offset as u32).to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER size
    out.extend_from_slice(&1i32.to_le_bytes()); // width
    out.extend_from_slice(&1i32.to_le_bytes()); // height
    out.extend_from_slice(&1u16.to_le_bytes()); // planes
    out.extend_from_slice(&24u16.to_le_bytes()); // bits per pixel
    out.extend_from_slice(&0u32.to_le_bytes()); // BI_RGB
    out.extend_from_slice(&(pixels.len() as u32).to_le_bytes());
    out.extend_from_slice(&2835i32.to_le_bytes()); // 72 dpi
    out.extend_from_slice(&2835i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // palette colours
    out.extend_from_slice(&0u32.to_le_bytes()); // important colours
    out.extend_from_slice(&pixels);
    out
}

/// The classic 1x1 GIF89a (one white pixel, two-colour palette).
pub fn gif_1x1() -> Vec<u8> {
    vec![
        b'G', b'I', b'F', b'8', b'9', b'a', 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0xFF, 0xFF,
        0xFF, 0x00, 0x00, 0x00, 0x2C, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
        0x02, 0x44, 0x01, 0x00, 0x3B,
    ]
}

/// A 1x1 baseline greyscale JPEG (mid grey: DC difference 0, no AC coefficients).
pub fn jpeg_1x1() -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    // APP0 JFIF
    out.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x10]);
    out.extend_from_slice(b"JFIF\0");
    out.extend_from_slice(&[0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00]);
    // DQT: table 0, 8-bit, all ones
    out.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
    out.extend_from_slice(&[1u8; 64]);
    // SOF0: precision 8, height 1, width 1, one component (id 1, 1x1 sampling, table 0)
    out.extend_from_slice(&[
        0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x01, 0x00, 0x01, 0x01, 0x01, 0x11, 0x00,
    ]);
    // DHT: DC table 0 and AC table 0, each with the single symbol 0x00 coded as "0"
    for class in [0x00, 0x10] {
        out.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, class, 0x01]);
        out.extend_from_slice(&[0u8; 15]);
        out.push(0x00);
    }
    // SOS: one component, tables 0/0, spectral 0..63
    out.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
    // DC category 0 ("0"), EOB ("0"), padded with ones.
    out.push(0b0011_1111);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// A WebP `VP8X` header declaring a 1x1 canvas (no image data).
pub fn webp_header_1x1() -> Vec<u8> {
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&22u32.to_le_bytes());
    out.extend_from_slice(b"WEBPVP8X");
    out.extend_from_slice(&10u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // flags + reserved
    out.extend_from_slice(&[0, 0, 0]); // canvas width - 1
    out.extend_from_slice(&[0, 0, 0]); // canvas height - 1
    out
}

/// A 1x1 uncompressed 8-bit greyscale little-endian TIFF.
pub fn tiff_1x1() -> Vec<u8> {
    // (tag, type SHORT=3 / LONG=4, value)
    let entries: [(u16, u16, u32); 8] = [
        (256, 3, 1), // ImageWidth
        (257, 3, 1), // ImageLength
        (258, 3, 8), // BitsPerSample
        (259, 3, 1), // Compression: none
        (262, 3, 1), // PhotometricInterpretation: BlackIsZero
        (273, 4, 0), // StripOffsets: patched below
        (278, 3, 1), // RowsPerStrip
        (279, 4, 1), // StripByteCounts
    ];
    let ifd_len = 2 + entries.len() * 12 + 4;
    let pixel_offset = (8 + ifd_len) as u32;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        let value = if tag == 273 { pixel_offset } else { value };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        if kind == 3 {
            out.extend_from_slice(&(value as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    out.push(0x80);
    out
}
