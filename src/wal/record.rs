//! Record framing: `len u32 | crc32 u32 | lsn u64 | kind u8 | payload`, little-endian.
//!
//! The CRC32 (IEEE, `crc32fast`) covers, in this order, the `len` field, the `lsn` field, the
//! `kind` byte and the payload, so a damaged length is caught as surely as a damaged payload.
//! The payload's share of the checksum is computed by the appender (on its own task) and
//! combined with the header's share on the writer thread with [`crc32fast::Hasher::combine`],
//! which keeps the single writer thread off the per-byte work.

use crc32fast::Hasher;

/// Bytes in a record header: `len` (4) + `crc32` (4) + `lsn` (8) + `kind` (1).
pub const RECORD_HEADER_LEN: usize = 17;

/// Largest payload one record may carry: 64 MiB. Anything larger is refused with
/// [`super::WalError::RecordTooLarge`] before it reaches the log; recovery also treats a
/// `len` above this as damage rather than trying to read it.
pub const MAX_RECORD_PAYLOAD: usize = 64 * 1024 * 1024;

/// A decoded record header; nothing in it has been verified yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub len: u32,
    pub crc: u32,
    pub lsn: u64,
    pub kind: u8,
}

impl RecordHeader {
    pub(crate) fn decode(buf: &[u8; RECORD_HEADER_LEN]) -> RecordHeader {
        let mut len = [0u8; 4];
        len.copy_from_slice(&buf[0..4]);
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&buf[4..8]);
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&buf[8..16]);
        RecordHeader {
            len: u32::from_le_bytes(len),
            crc: u32::from_le_bytes(crc),
            lsn: u64::from_le_bytes(lsn),
            kind: buf[16],
        }
    }

    /// Total bytes of the record this header starts (header + payload).
    pub(crate) fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.len)
    }

    /// Whether `payload` is the one this header's CRC was computed over.
    pub(crate) fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize
            && self.crc == finish_crc(self.len, self.lsn, self.kind, &payload_hasher(payload))
    }
}

/// The payload's share of a record's CRC; computed once by the appender.
pub(crate) fn payload_hasher(payload: &[u8]) -> Hasher {
    let mut h = Hasher::new();
    h.update(payload);
    h
}

/// The record CRC from the header fields and the payload's (already computed) share.
pub(crate) fn finish_crc(len: u32, lsn: u64, kind: u8, payload: &Hasher) -> u32 {
    let mut h = Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&lsn.to_le_bytes());
    h.update(&[kind]);
    h.combine(payload);
    h.finalize()
}

/// Encodes the header of a record whose payload is `len` bytes with CRC share `payload`.
pub(crate) fn encode_header(
    len: u32,
    lsn: u64,
    kind: u8,
    payload: &Hasher,
) -> [u8; RECORD_HEADER_LEN] {
    let crc = finish_crc(len, lsn, kind, payload);
    let mut buf = [0u8; RECORD_HEADER_LEN];
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    buf[8..16].copy_from_slice(&lsn.to_le_bytes());
    buf[16] = kind;
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_header_decodes_to_the_same_fields_and_verifies_its_payload() {
        let payload = b"an image, more or less";
        let buf = encode_header(payload.len() as u32, 42, 7, &payload_hasher(payload));
        let h = RecordHeader::decode(&buf);
        assert_eq!((h.len, h.lsn, h.kind), (payload.len() as u32, 42, 7));
        assert!(h.matches(payload));
        assert_eq!(h.record_len(), (RECORD_HEADER_LEN + payload.len()) as u64);
    }

    #[test]
    fn the_crc_covers_every_header_field_and_every_payload_bit() {
        let payload = b"0123456789";
        let h = RecordHeader::decode(&encode_header(10, 5, 1, &payload_hasher(payload)));
        let mut flipped = *payload;
        flipped[3] ^= 0x10;
        assert!(!h.matches(&flipped), "payload bit flip must be caught");
        assert!(
            !RecordHeader { lsn: 6, ..h }.matches(payload),
            "lsn change must be caught"
        );
        assert!(
            !RecordHeader { kind: 2, ..h }.matches(payload),
            "kind change must be caught"
        );
        assert!(
            !RecordHeader { len: 9, ..h }.matches(&payload[..9]),
            "len change must be caught"
        );
    }

    #[test]
    fn the_combined_crc_equals_a_crc_over_the_whole_covered_byte_string() {
        let payload = vec![0xabu8; 10_000];
        let mut whole = Vec::new();
        whole.extend_from_slice(&10_000u32.to_le_bytes());
        whole.extend_from_slice(&99u64.to_le_bytes());
        whole.push(3);
        whole.extend_from_slice(&payload);
        assert_eq!(
            finish_crc(10_000, 99, 3, &payload_hasher(&payload)),
            crc32fast::hash(&whole)
        );
    }
}
