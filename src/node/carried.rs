//! The encoding of a `passive-standby` checkpoint's uncommitted blocks: one immutable object in the
//! checkpoint store per checkpoint interval.
//!
//! ```text
//! object  = "HICB" | version u8 (=1) | count u32 | block*        (big-endian)
//! block   = source_len u8 | source utf-8 | seq u64 | len u32 | crc32 u32 | len bytes
//! ```
//!
//! The CRC-32 covers the block's bytes, so a damaged object is refused with the block it failed at
//! rather than loaded; the store's put is atomic, so a torn object cannot occur.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const MAGIC: &[u8; 4] = b"HICB";
const VERSION: u8 = 1;

/// One block read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedBlock {
    pub source: String,
    pub seq: u64,
    pub bytes: Bytes,
}

/// Builds an object.
pub struct Encoder {
    buf: BytesMut,
    count: u32,
    payload: u64,
}

impl Default for Encoder {
    fn default() -> Self {
        let mut buf = BytesMut::with_capacity(1 << 20);
        buf.put_slice(MAGIC);
        buf.put_u8(VERSION);
        buf.put_u32(0);
        Encoder {
            buf,
            count: 0,
            payload: 0,
        }
    }
}

impl Encoder {
    pub fn push(&mut self, source: &str, seq: u64, data: &[u8]) {
        let src = &source.as_bytes()[..source.len().min(255)];
        self.buf.put_u8(src.len() as u8);
        self.buf.put_slice(src);
        self.buf.put_u64(seq);
        self.buf.put_u32(data.len() as u32);
        self.buf.put_u32(crc32fast::hash(data));
        self.buf.put_slice(data);
        self.count += 1;
        self.payload += data.len() as u64;
    }

    pub fn payload_bytes(&self) -> u64 {
        self.payload
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[5..9].copy_from_slice(&self.count.to_be_bytes());
        self.buf.to_vec()
    }
}

/// Reads an object back; the error names the block that is damaged.
pub fn decode(raw: &Bytes) -> Result<Vec<CarriedBlock>, String> {
    let mut b = raw.clone();
    if b.len() < 9 || &b[..4] != MAGIC {
        return Err("not a checkpointed-blocks object (bad magic)".into());
    }
    b.advance(4);
    let version = b.get_u8();
    if version != VERSION {
        return Err(format!("unsupported version {version}"));
    }
    let count = b.get_u32();
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let truncated = || format!("block {i} of {count} is truncated");
        if b.remaining() < 1 {
            return Err(truncated());
        }
        let slen = b.get_u8() as usize;
        if b.remaining() < slen + 16 {
            return Err(truncated());
        }
        let source = String::from_utf8(b.split_to(slen).to_vec())
            .map_err(|_| format!("block {i}: source id is not UTF-8"))?;
        let seq = b.get_u64();
        let len = b.get_u32() as usize;
        let crc = b.get_u32();
        if b.remaining() < len {
            return Err(truncated());
        }
        let bytes = b.split_to(len);
        if crc32fast::hash(&bytes) != crc {
            return Err(format!("block {i} ({source}, seq {seq}) fails its CRC"));
        }
        out.push(CarriedBlock { source, seq, bytes });
    }
    if b.has_remaining() {
        return Err(format!("{} bytes after the last block", b.remaining()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_read_back_as_written_and_a_flipped_bit_is_named() {
        let mut e = Encoder::default();
        e.push("cam-1", 7, b"jpeg bytes");
        e.push("cam-2", 0, b"");
        assert_eq!(e.payload_bytes(), 10);
        let raw = Bytes::from(e.finish());
        let blocks = decode(&raw).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].source, "cam-1");
        assert_eq!(blocks[0].seq, 7);
        assert_eq!(&blocks[0].bytes[..], b"jpeg bytes");
        let mut bad = raw.to_vec();
        bad[9 + 1 + 5 + 8 + 4 + 4 + 2] ^= 1;
        let err = decode(&Bytes::from(bad)).unwrap_err();
        assert!(err.contains("cam-1, seq 7"), "{err}");
        assert!(decode(&raw.slice(..raw.len() - 1)).is_err());
    }
}
