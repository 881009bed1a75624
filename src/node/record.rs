//! What the node writes into the WAL: blocks, and the seals that cut them into batches.
//!
//! ```text
//! KIND_BLOCK  source_len u8 | source utf-8 | seq u64 BE | image bytes
//! KIND_SEAL   batch_ms u64 BE
//! ```
//!
//! A seal closes a batch: the batch with that seal is every block whose LSN lies between the previous
//! seal and this one. LSN order is write order, and a seal is durable only once every record before it
//! is, so batch membership is decided by the log itself and is the same on every replay.

use bytes::{BufMut, Bytes, BytesMut};

pub const KIND_BLOCK: u8 = 1;

// The largest block the configuration allows, with its longest source id and its sequence number,
// fits one WAL record.
const _: () =
    assert!(crate::config::MAX_BLOCK_SIZE as usize + 1 + 255 + 8 <= crate::wal::MAX_RECORD_PAYLOAD);
pub const KIND_SEAL: u8 = 2;

/// A decoded WAL payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeRecord {
    Block {
        source: String,
        seq: u64,
        data: Bytes,
    },
    Seal {
        batch_ms: u64,
    },
}

pub fn encode_block(source: &str, seq: u64, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + source.len() + 8 + data.len());
    b.put_u8(source.len() as u8);
    b.put_slice(source.as_bytes());
    b.put_u64(seq);
    b.put_slice(data);
    b.freeze()
}

pub fn encode_seal(batch_ms: u64) -> Bytes {
    Bytes::copy_from_slice(&batch_ms.to_be_bytes())
}

/// Decodes a payload of the given kind; `Err` names what is wrong (the WAL's CRC passed, so this
/// means a record written by a different program or version).
pub fn decode(kind: u8, payload: Bytes) -> Result<NodeRecord, String> {
    match kind {
        KIND_BLOCK => {
            let n = *payload.first().ok_or("empty block record")? as usize;
            if payload.len() < 1 + n + 8 {
                return Err(format!(
                    "block record of {} bytes is too short",
                    payload.len()
                ));
            }
            let source = std::str::from_utf8(&payload[1..1 + n])
                .map_err(|_| "block record source is not UTF-8")?
                .to_string();
            let seq = u64::from_be_bytes(payload[1 + n..9 + n].try_into().expect("8 bytes"));
            Ok(NodeRecord::Block {
                source,
                seq,
                data: payload.slice(9 + n..),
            })
        }
        KIND_SEAL => {
            let b: [u8; 8] = payload[..]
                .try_into()
                .map_err(|_| "seal record is not 8 bytes")?;
            Ok(NodeRecord::Seal {
                batch_ms: u64::from_be_bytes(b),
            })
        }
        k => Err(format!("unknown record kind {k}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_and_seal_records_round_trip() {
        let b = encode_block("cam-1", 42, b"\xff\xd8jpeg");
        assert_eq!(
            decode(KIND_BLOCK, b).unwrap(),
            NodeRecord::Block {
                source: "cam-1".into(),
                seq: 42,
                data: Bytes::from_static(b"\xff\xd8jpeg")
            }
        );
        assert_eq!(
            decode(KIND_SEAL, encode_seal(7)).unwrap(),
            NodeRecord::Seal { batch_ms: 7 }
        );
    }

    #[test]
    fn a_short_or_unknown_record_is_an_error_not_a_panic() {
        assert!(decode(KIND_BLOCK, Bytes::from_static(b"\x05ab")).is_err());
        assert!(decode(KIND_SEAL, Bytes::from_static(b"abc")).is_err());
        assert!(decode(9, Bytes::new()).is_err());
    }
}
