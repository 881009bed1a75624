//! `passive-standby`'s carried-block checkpoints: every `strategy.checkpoint_interval` the primary
//! writes the blocks durable since the previous one and not committed ([`Node::checkpoint_blocks`]) as
//! one immutable object in the checkpoint store, lists it in a snapshot and sends checkpointed acks; a
//! node taking over loads them back into its WAL. The object's encoding:
//!
//! ```text
//! object  = "HICB" | version u8 (=1) | count u32 | block*        (big-endian)
//! block   = source_len u8 | source utf-8 | seq u64 | len u32 | crc32 u32 | len bytes
//! ```
//!
//! The CRC-32 covers the block's bytes, so a damaged object is refused with the block it failed at
//! rather than loaded; the store's put is atomic, so a torn object cannot occur.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tracing::debug;

use super::record::{self, NodeRecord};
use super::{Node, NodeError};
use crate::config::Carry;
use crate::protocol::{AckLevel, ServerFrame};

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
    // The count is not covered by a CRC: reserve no more blocks than the bytes left could hold
    // (a block takes at least 17 bytes), so a damaged count costs an error, not the process.
    let mut out = Vec::with_capacity((count as usize).min(b.remaining() / 17));
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

impl Node {
    /// `passive-standby`: checkpoints the blocks made durable since the last such checkpoint that are
    /// not committed, as one immutable object, and a snapshot listing it; then sends checkpointed acks.
    pub async fn checkpoint_blocks(&self) -> Result<u64, NodeError> {
        if !self.is_primary() {
            return Ok(0);
        }
        let mut previous = self.inner.ckpt_lock.lock().await;
        let (from, pending) = {
            let st = self.state();
            (
                st.carried_hi.max(st.last_committed_seal) + 1,
                st.pending_commit,
            )
        };
        let now_hi = self.inner.last_block_lsn.load(Ordering::Acquire);
        let hi = match self.inner.cfg.strategy.carry {
            Carry::All => now_hi,
            Carry::Lagging => {
                // Only blocks already durable at the previous checkpoint, unless a batch sealed since
                // then holds them (every such block is at or below its seal: it is the output's to take).
                let Some((at, hi)) = previous.replace((Instant::now(), now_hi)) else {
                    return Ok(0);
                };
                if pending.is_some_and(|p| p.sealed_at > at) {
                    return Ok(0);
                }
                hi
            }
        };
        if hi < from {
            return Ok(0);
        }
        self.check_fence().await?;
        let (body, members, bytes) = {
            let wal = self.inner.wal.clone();
            let node = self.clone();
            tokio::task::spawn_blocking(move || -> Result<_, NodeError> {
                let mut enc = Encoder::default();
                let mut members = Vec::new();
                for rec in wal.replay(from)? {
                    let rec = rec?;
                    if rec.lsn > hi {
                        break;
                    }
                    if let Ok(NodeRecord::Block { source, seq, data }) =
                        record::decode(rec.kind, rec.payload)
                    {
                        if node.state().is_committed(&source, seq) {
                            continue;
                        }
                        enc.push(&source, seq, &data);
                        members.push((source, seq));
                    }
                }
                let bytes = enc.payload_bytes();
                Ok((enc.finish(), members, bytes))
            })
            .await??
        };
        let epoch = self.epoch();
        let key = strategies::paths::carried(epoch, hi);
        if !members.is_empty() {
            self.inner
                .store
                .create_if_absent(&key, Bytes::from(body))
                .await?;
        }
        let snapshot = {
            let mut st = self.state();
            if !members.is_empty() {
                st.carried.push(strategies::CarriedRef {
                    key: key.clone(),
                    epoch,
                    lo: from,
                    hi,
                    blocks: members.len() as u64,
                    bytes,
                });
            }
            st.carried_hi = hi;
            self.snapshot_of(&mut st, None)
        };
        // Tests hold the node here, after its fence check, while another node takes over.
        fail::fail_point!("node::checkpoint::before_write");
        self.inner.checkpointer.write(&snapshot).await?;
        fail::fail_point!("node::checkpoint::after_write", |_| std::process::abort());
        // A checkpointed ack tells the sender it may drop the block: only true if a node taking over
        // will load this checkpoint. A takeover claims its epoch, then reads the newest checkpoint; so
        // if no newer epoch exists *after* the write, any later takeover reads it (or a newer one).
        // A fence check before the write proves nothing of the sort: a node replaced in between
        // (alive, cut off from its standby) would ack blocks its successor never loads.
        self.check_fence().await?;
        let acks: Vec<_> = {
            let st = self.state();
            members
                .iter()
                .filter_map(|(source, seq)| st.conns.get(source).map(|c| (c.tx.clone(), *seq)))
                .collect()
        };
        for (tx, seq) in acks {
            let _ = tx.send(checkpointed_ack(seq));
        }
        debug!(
            key,
            blocks = members.len(),
            bytes,
            "checkpointed uncommitted blocks"
        );
        Ok(members.len() as u64)
    }
}

/// A checkpointed ack (the framed writer passes it to protocol-v2 clients only).
fn checkpointed_ack(seq: u64) -> ServerFrame {
    ServerFrame::Ack {
        level: AckLevel::Checkpointed,
        seq,
    }
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

    #[test]
    fn an_object_claiming_four_billion_blocks_it_does_not_hold_is_refused_without_reserving_room_for_them(
    ) {
        // Found by the `checkpoint` fuzz target (fuzz/): the count was trusted for the Vec's
        // capacity, 4294967295 blocks of 64 bytes, and the allocation aborted the process.
        let raw =
            Bytes::from_static(b"HICB\x01\xff\xff\xff\xff\x05cam-1\0\0\0\0\0\0\0\x0d\0\0\0\0");
        let err = decode(&raw).unwrap_err();
        assert!(err.contains("block 0 of 4294967295 is truncated"), "{err}");
    }
}
