//! The framed wire protocol, versions 1 to 3: a hello, then CRC-checked blocks with sequence numbers,
//! and acknowledgements back on the same connection. `docs/PROTOCOL.md` is the specification for writers
//! of clients in other languages; this module is its reference implementation, for both ends.
//!
//! All integers are big-endian.
//!
//! ```text
//! client → node   HELLO    "HIMG" | version u8 (1, 2 or 3) | source_len u8 | source utf-8 | token_len u16 | token bytes
//! node → client   WELCOME  0x80 | version u8 (the client's) | max_block_size u32
//! node → client   ROLE     0x82 | role u8 (1 = primary, 2 = standby) | epoch u64        (version 2 only)
//! client → node   BLOCK    0x01 | seq u64 | len u32 | crc32 u32 | len bytes      (CRC-32/ISO-HDLC of the bytes)
//! node → client   ACK      0x81 | level u8 (1 = durable, 2 = committed, 3 = checkpointed) | seq u64
//! node → client   HELD     0x83 | seq u64        (version 3 only: durable, and held before this copy came)
//! node → client   ERROR    0xEE | code u16 | msg_len u16 | msg utf-8            (then the node closes)
//! ```
//!
//! Version 2 only adds: the ROLE frame, right after WELCOME, again whenever the node's role or epoch
//! changes, and again as a keepalive on a connection the node wrote nothing on for
//! `receiver.keepalive_interval` (the first ROLE is written twice, which says the node does that);
//! and the ack level 3 (*checkpointed*). Both exist so that a sender can fail over between a
//! primary and its standby (`send push --to A --to B`). A version 1 client sees neither, byte for byte
//! what it saw before version 2 existed: [`ServerFrame::for_version`] is the one rule the node's writer
//! applies.
//!
//! Version 3 only adds the HELD frame: the node's answer, in place of the durable ACK, to a block whose
//! `(source, seq)` it already held when this copy arrived (nothing new was stored). A sender that gets it
//! for a block it had never sent before learns that its source id was used before — by an earlier run,
//! or by another sender — instead of being told its images are safe when none of them was stored.
//! Versions 1 and 2 get the durable ACK they always got.
//!
//! Ack levels are not ordered by their wire value: by strength they are durable < checkpointed <
//! committed (a committed block is in a checkpoint). Compare them with [`AckLevel::covers`].

use std::fmt;
use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const MAGIC: [u8; 4] = *b"HIMG";
/// Version 1: hello, blocks, durable and committed acks. Every node speaks it.
pub const VERSION_1: u8 = 1;
/// Version 2: version 1 plus the ROLE frame and the checkpointed ack level.
pub const VERSION_2: u8 = 2;
/// Version 3: version 2 plus the HELD frame (a durable ack that says the block was held already).
pub const VERSION_3: u8 = 3;
/// The base version, what a plain client (docs/PROTOCOL.md's example) sends.
pub const VERSION: u8 = VERSION_1;
/// The highest version this implementation speaks.
pub const LATEST_VERSION: u8 = VERSION_3;
pub const TAG_BLOCK: u8 = 0x01;
pub const TAG_WELCOME: u8 = 0x80;
pub const TAG_ACK: u8 = 0x81;
pub const TAG_ROLE: u8 = 0x82;
pub const TAG_HELD: u8 = 0x83;
pub const TAG_ERROR: u8 = 0xEE;
/// The longest source id a hello may carry.
pub const MAX_SOURCE_LEN: usize = 128;

/// How far a block has got. The discriminant is the wire value; it is **not** the order of strength
/// (durable < checkpointed < committed): use [`AckLevel::rank`] or [`AckLevel::covers`], which is why
/// this type is deliberately not `Ord`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckLevel {
    /// In the write-ahead log and synced to disk.
    Durable = 1,
    /// In a published, checkpointed output batch.
    Committed = 2,
    /// In a checkpoint (a passive standby can resume from it), not necessarily in the output yet.
    /// Protocol version 2 only.
    Checkpointed = 3,
}

impl AckLevel {
    pub fn from_u8(v: u8) -> Option<AckLevel> {
        match v {
            1 => Some(AckLevel::Durable),
            2 => Some(AckLevel::Committed),
            3 => Some(AckLevel::Checkpointed),
            _ => None,
        }
    }

    /// Strength: durable 1, checkpointed 2, committed 3.
    pub fn rank(self) -> u8 {
        match self {
            AckLevel::Durable => 1,
            AckLevel::Checkpointed => 2,
            AckLevel::Committed => 3,
        }
    }

    /// Whether an ack at this level is as good as `wanted` (a committed block is also checkpointed
    /// and durable).
    pub fn covers(self, wanted: AckLevel) -> bool {
        self.rank() >= wanted.rank()
    }

    /// The stronger of two levels.
    pub fn stronger(self, other: AckLevel) -> AckLevel {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    /// The lowest protocol version whose clients may be sent this level.
    pub fn min_version(self) -> u8 {
        match self {
            AckLevel::Durable | AckLevel::Committed => VERSION_1,
            AckLevel::Checkpointed => VERSION_2,
        }
    }
}

/// What a node is, as a ROLE frame says (protocol version 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Takes blocks, commits output; its acks release blocks.
    Primary = 1,
    /// Follows a primary; takes over (and says so with a new ROLE frame) when the primary fails.
    Standby = 2,
}

impl Role {
    pub fn from_u8(v: u8) -> Option<Role> {
        match v {
            1 => Some(Role::Primary),
            2 => Some(Role::Standby),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
        })
    }
}

/// A node's role and the fencing epoch it holds it in: what a ROLE frame carries, and what a node
/// publishes to its connections (a `tokio::sync::watch` of it) so they can tell their clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoleInfo {
    pub role: Role,
    pub epoch: u64,
}

/// Why the node refused a connection or a block; sent as the ERROR frame's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadMagic = 1,
    UnsupportedVersion = 2,
    Unauthorized = 3,
    BlockTooLarge = 4,
    CrcMismatch = 5,
    Malformed = 6,
    InvalidSource = 7,
    Internal = 8,
    ShuttingDown = 9,
    TooManyConnections = 10,
    Timeout = 11,
}

impl ErrorCode {
    pub fn from_u16(v: u16) -> Option<ErrorCode> {
        use ErrorCode::*;
        Some(match v {
            1 => BadMagic,
            2 => UnsupportedVersion,
            3 => Unauthorized,
            4 => BlockTooLarge,
            5 => CrcMismatch,
            6 => Malformed,
            7 => InvalidSource,
            8 => Internal,
            9 => ShuttingDown,
            10 => TooManyConnections,
            11 => Timeout,
            _ => return None,
        })
    }
}

/// A protocol violation or a transport failure while reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("bad magic {0:02x?} (expected \"HIMG\")")]
    BadMagic([u8; 4]),
    #[error("unsupported protocol version {0} (this node speaks versions {VERSION_1} to {LATEST_VERSION})")]
    UnsupportedVersion(u8),
    #[error("wrong or missing token for source `{0}`")]
    Unauthorized(String),
    #[error("block {seq} is {len} bytes, over max_block_size {max}")]
    BlockTooLarge { seq: u64, len: u64, max: u64 },
    #[error(
        "block {seq} failed its CRC check (frame says {expected:08x}, bytes give {actual:08x})"
    )]
    CrcMismatch {
        seq: u64,
        expected: u32,
        actual: u32,
    },
    #[error("malformed frame: {0}")]
    Malformed(String),
    // Debug-quoted: the id is the client's, and its newlines or escapes must not reach a log as such.
    #[error("invalid source id {0:?} (1 to 128 of A-Z a-z 0-9 . _ -, not starting with . or _)")]
    InvalidSource(String),
    #[error("node refused: {code:?}: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("connection closed in the middle of a frame")]
    UnexpectedEof,
    /// A frame in progress went silent, or arrived slower than the node's minimum rate.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl ProtocolError {
    /// The code an ERROR frame carries for this error, if the peer should be told.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::BadMagic(_) => ErrorCode::BadMagic,
            ProtocolError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            ProtocolError::Unauthorized(_) => ErrorCode::Unauthorized,
            ProtocolError::BlockTooLarge { .. } => ErrorCode::BlockTooLarge,
            ProtocolError::CrcMismatch { .. } => ErrorCode::CrcMismatch,
            ProtocolError::InvalidSource(_) => ErrorCode::InvalidSource,
            ProtocolError::Malformed(_) | ProtocolError::UnexpectedEof => ErrorCode::Malformed,
            ProtocolError::Refused { code, .. } => *code,
            ProtocolError::Timeout(_) => ErrorCode::Timeout,
            ProtocolError::Io(_) => ErrorCode::Internal,
        }
    }
}

/// Source ids name files in the output, so they are restricted to a safe alphabet.
pub fn valid_source_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SOURCE_LEN
        && !s.starts_with('.')
        && !s.starts_with('_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u8,
    pub source: String,
    pub token: Option<String>,
}

impl Hello {
    pub fn encode(&self) -> Bytes {
        let token = self.token.as_deref().unwrap_or("");
        let mut b = BytesMut::with_capacity(8 + self.source.len() + token.len());
        b.put_slice(&MAGIC);
        b.put_u8(self.version);
        b.put_u8(self.source.len() as u8);
        b.put_slice(self.source.as_bytes());
        b.put_u16(token.len() as u16);
        b.put_slice(token.as_bytes());
        b.freeze()
    }
}

/// Reads `buf.len()` bytes; an EOF part-way is [`ProtocolError::UnexpectedEof`].
async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), ProtocolError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ProtocolError::UnexpectedEof),
        Err(e) => Err(ProtocolError::Io(e)),
    }
}

/// Reads a hello. Checks magic, version (1 to [`LATEST_VERSION`]) and the source id; the token is checked by the caller.
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<Hello, ProtocolError> {
    let mut head = [0u8; 6];
    read_exact(r, &mut head).await?;
    let magic = [head[0], head[1], head[2], head[3]];
    if magic != MAGIC {
        return Err(ProtocolError::BadMagic(magic));
    }
    let version = head[4];
    if !(VERSION_1..=LATEST_VERSION).contains(&version) {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    let mut source = vec![0u8; head[5] as usize];
    read_exact(r, &mut source).await?;
    let source = String::from_utf8(source)
        .map_err(|_| ProtocolError::Malformed("source id is not UTF-8".into()))?;
    if !valid_source_id(&source) {
        return Err(ProtocolError::InvalidSource(source));
    }
    let mut tl = [0u8; 2];
    read_exact(r, &mut tl).await?;
    let mut token = vec![0u8; u16::from_be_bytes(tl) as usize];
    read_exact(r, &mut token).await?;
    let token = if token.is_empty() {
        None
    } else {
        Some(
            String::from_utf8(token)
                .map_err(|_| ProtocolError::Malformed("token is not UTF-8".into()))?,
        )
    };
    Ok(Hello {
        version,
        source,
        token,
    })
}

/// One block as it arrived, CRC already checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub seq: u64,
    pub data: Bytes,
}

/// Encodes the header of a BLOCK frame (the caller writes `data` after it).
pub fn block_header(seq: u64, data: &[u8]) -> [u8; 17] {
    let mut h = [0u8; 17];
    h[0] = TAG_BLOCK;
    h[1..9].copy_from_slice(&seq.to_be_bytes());
    h[9..13].copy_from_slice(&(data.len() as u32).to_be_bytes());
    h[13..17].copy_from_slice(&crc32fast::hash(data).to_be_bytes());
    h
}

/// What a BLOCK frame's header says: the 16 bytes after its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    pub seq: u64,
    pub len: u32,
    pub crc: u32,
}

impl BlockHeader {
    /// Parses the 16 header bytes after the tag; a length over `max` or of zero is refused here, before
    /// any of the body is read.
    pub fn parse(h: &[u8; 16], max: u64) -> Result<BlockHeader, ProtocolError> {
        let seq = u64::from_be_bytes(h[0..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(h[8..12].try_into().expect("4 bytes"));
        let crc = u32::from_be_bytes(h[12..16].try_into().expect("4 bytes"));
        if len as u64 > max {
            return Err(ProtocolError::BlockTooLarge {
                seq,
                len: len as u64,
                max,
            });
        }
        if len == 0 {
            return Err(ProtocolError::Malformed(format!("block {seq} is empty")));
        }
        Ok(BlockHeader { seq, len, crc })
    }

    /// The block, if `data` matches the header's CRC.
    pub fn check(&self, data: Bytes) -> Result<Block, ProtocolError> {
        let actual = crc32fast::hash(&data);
        if actual != self.crc {
            return Err(ProtocolError::CrcMismatch {
                seq: self.seq,
                expected: self.crc,
                actual,
            });
        }
        Ok(Block {
            seq: self.seq,
            data,
        })
    }
}

/// The first allocation for a block's body; it doubles as bytes arrive, up to the block's length.
pub const FIRST_CHUNK: usize = 64 * 1024;

/// Reads the next BLOCK frame; `Ok(None)` on a clean EOF between frames. A frame longer than `max`
/// is refused before its body is read, and the body's buffer grows as its bytes arrive (never the
/// header's length at once), so a header costs no memory of the size it announces.
pub async fn read_block<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u64,
) -> Result<Option<Block>, ProtocolError> {
    let mut tag = [0u8; 1];
    match r.read(&mut tag).await? {
        0 => return Ok(None),
        _ if tag[0] != TAG_BLOCK => {
            return Err(ProtocolError::Malformed(format!(
                "unknown frame tag 0x{:02x}",
                tag[0]
            )))
        }
        _ => {}
    }
    let mut h = [0u8; 16];
    read_exact(r, &mut h).await?;
    let header = BlockHeader::parse(&h, max)?;
    let len = header.len as usize;
    let mut data = Vec::with_capacity(len.min(FIRST_CHUNK));
    while data.len() < len {
        if data.len() == data.capacity() {
            data.reserve_exact((data.capacity() * 2).min(len) - data.len());
        }
        let want = (len - data.len()) as u64;
        if (&mut *r).take(want).read_buf(&mut data).await? == 0 {
            return Err(ProtocolError::UnexpectedEof);
        }
    }
    header.check(Bytes::from(data)).map(Some)
}

/// What the node sends back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerFrame {
    Welcome {
        version: u8,
        max_block_size: u32,
    },
    Ack {
        level: AckLevel,
        seq: u64,
    },
    /// Version 2: the node's role and epoch, after WELCOME and on every change.
    Role {
        role: Role,
        epoch: u64,
    },
    /// Version 3: the block is durable, and the node held it (its `(source, seq)`) before this copy
    /// arrived, so nothing new was stored — sent in place of the durable ACK. Older clients are sent
    /// that durable ACK instead ([`ServerFrame::for_version`]).
    Held {
        seq: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl ServerFrame {
    /// Whether a client that said `version` in its hello may be sent this frame. Version 1 clients
    /// get neither ROLE frames nor checkpointed acks (they could not parse them).
    pub fn visible_to(&self, version: u8) -> bool {
        match self {
            ServerFrame::Welcome { .. } | ServerFrame::Error { .. } => true,
            ServerFrame::Ack { level, .. } => version >= level.min_version(),
            ServerFrame::Role { .. } => version >= VERSION_2,
            ServerFrame::Held { .. } => version >= VERSION_3,
        }
    }

    /// This frame as a client that said `version` in its hello is sent it: itself if it can parse
    /// it, a HELD frame as the durable ACK it stands for (what versions 1 and 2 always got for a block
    /// the node held already), and nothing for a frame that version has no equivalent of (ROLE and
    /// checkpointed acks for version 1). What the node's writer applies to every frame it writes.
    pub fn for_version(self, version: u8) -> Option<ServerFrame> {
        match self {
            ServerFrame::Held { seq } if version < VERSION_3 => Some(ServerFrame::Ack {
                level: AckLevel::Durable,
                seq,
            }),
            f => f.visible_to(version).then_some(f),
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            ServerFrame::Welcome {
                version,
                max_block_size,
            } => {
                out.put_u8(TAG_WELCOME);
                out.put_u8(*version);
                out.put_u32(*max_block_size);
            }
            ServerFrame::Ack { level, seq } => {
                out.put_u8(TAG_ACK);
                out.put_u8(*level as u8);
                out.put_u64(*seq);
            }
            ServerFrame::Role { role, epoch } => {
                out.put_u8(TAG_ROLE);
                out.put_u8(*role as u8);
                out.put_u64(*epoch);
            }
            ServerFrame::Held { seq } => {
                out.put_u8(TAG_HELD);
                out.put_u64(*seq);
            }
            ServerFrame::Error { code, message } => {
                let msg = &message.as_bytes()[..message.len().min(u16::MAX as usize)];
                out.put_u8(TAG_ERROR);
                out.put_u16(*code as u16);
                out.put_u16(msg.len() as u16);
                out.put_slice(msg);
            }
        }
    }

    pub async fn write<W: AsyncWrite + Unpin>(&self, w: &mut W) -> io::Result<()> {
        let mut b = BytesMut::with_capacity(16);
        self.encode(&mut b);
        w.write_all(&b).await
    }

    /// Reads one frame; `Ok(None)` on a clean EOF between frames.
    pub async fn read<R: AsyncRead + Unpin>(
        r: &mut R,
    ) -> Result<Option<ServerFrame>, ProtocolError> {
        let mut tag = [0u8; 1];
        if r.read(&mut tag).await? == 0 {
            return Ok(None);
        }
        match tag[0] {
            TAG_WELCOME => {
                let mut b = [0u8; 5];
                read_exact(r, &mut b).await?;
                Ok(Some(ServerFrame::Welcome {
                    version: b[0],
                    max_block_size: u32::from_be_bytes(b[1..5].try_into().expect("4 bytes")),
                }))
            }
            TAG_ACK => {
                let mut b = [0u8; 9];
                read_exact(r, &mut b).await?;
                let level = AckLevel::from_u8(b[0]).ok_or_else(|| {
                    ProtocolError::Malformed(format!("unknown ack level {}", b[0]))
                })?;
                Ok(Some(ServerFrame::Ack {
                    level,
                    seq: u64::from_be_bytes(b[1..9].try_into().expect("8 bytes")),
                }))
            }
            TAG_ROLE => {
                let mut b = [0u8; 9];
                read_exact(r, &mut b).await?;
                let role = Role::from_u8(b[0])
                    .ok_or_else(|| ProtocolError::Malformed(format!("unknown role {}", b[0])))?;
                Ok(Some(ServerFrame::Role {
                    role,
                    epoch: u64::from_be_bytes(b[1..9].try_into().expect("8 bytes")),
                }))
            }
            TAG_HELD => {
                let mut b = [0u8; 8];
                read_exact(r, &mut b).await?;
                Ok(Some(ServerFrame::Held {
                    seq: u64::from_be_bytes(b),
                }))
            }
            TAG_ERROR => {
                let mut b = [0u8; 4];
                read_exact(r, &mut b).await?;
                let code = u16::from_be_bytes([b[0], b[1]]);
                let mut msg = vec![0u8; u16::from_be_bytes([b[2], b[3]]) as usize];
                read_exact(r, &mut msg).await?;
                Ok(Some(ServerFrame::Error {
                    code: ErrorCode::from_u16(code).unwrap_or(ErrorCode::Internal),
                    message: String::from_utf8_lossy(&msg).into_owned(),
                }))
            }
            t => Err(ProtocolError::Malformed(format!(
                "unknown server frame tag 0x{t:02x}"
            ))),
        }
    }
}

impl fmt::Display for AckLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckLevel::Durable => "durable",
            AckLevel::Committed => "committed",
            AckLevel::Checkpointed => "checkpointed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hello_round_trips_with_and_without_token() {
        for token in [None, Some("s3cret".to_string())] {
            let h = Hello {
                version: VERSION,
                source: "cam-1".into(),
                token,
            };
            let bytes = h.encode();
            let got = read_hello(&mut &bytes[..]).await.unwrap();
            assert_eq!(got, h);
        }
    }

    #[tokio::test]
    async fn a_hello_with_bad_magic_or_version_is_refused() {
        let mut b = Hello {
            version: VERSION,
            source: "a".into(),
            token: None,
        }
        .encode()
        .to_vec();
        b[0] = b'X';
        assert!(matches!(
            read_hello(&mut &b[..]).await,
            Err(ProtocolError::BadMagic(_))
        ));
        let b = Hello {
            version: 9,
            source: "a".into(),
            token: None,
        }
        .encode();
        assert!(matches!(
            read_hello(&mut &b[..]).await,
            Err(ProtocolError::UnsupportedVersion(9))
        ));
    }

    #[tokio::test]
    async fn a_source_id_that_could_escape_the_output_dir_is_refused() {
        for bad in ["../x", "_tmp", ".hidden", "a/b", ""] {
            let b = Hello {
                version: VERSION,
                source: bad.into(),
                token: None,
            }
            .encode();
            assert!(
                matches!(
                    read_hello(&mut &b[..]).await,
                    Err(ProtocolError::InvalidSource(_))
                ),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn blocks_round_trip_and_a_flipped_bit_fails_the_crc() {
        let data = b"hello image".to_vec();
        let mut frame = block_header(7, &data).to_vec();
        frame.extend_from_slice(&data);
        let got = read_block(&mut &frame[..], 1024).await.unwrap().unwrap();
        assert_eq!(
            got,
            Block {
                seq: 7,
                data: Bytes::from(data)
            }
        );
        let last = frame.len() - 1;
        frame[last] ^= 0x10;
        assert!(matches!(
            read_block(&mut &frame[..], 1024).await,
            Err(ProtocolError::CrcMismatch { seq: 7, .. })
        ));
    }

    #[tokio::test]
    async fn an_oversized_block_is_refused_before_its_body_is_read() {
        let frame = block_header(1, &[0u8; 2048]); // header only: the body is never read
        let err = read_block(&mut &frame[..], 1024).await.unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::BlockTooLarge {
                seq: 1,
                len: 2048,
                max: 1024
            }
        ));
    }

    #[tokio::test]
    async fn a_clean_eof_between_blocks_is_not_an_error_but_a_cut_frame_is() {
        assert!(read_block(&mut &b""[..], 10).await.unwrap().is_none());
        let frame = block_header(1, b"abc");
        assert!(matches!(
            read_block(&mut &frame[..10], 10).await,
            Err(ProtocolError::UnexpectedEof)
        ));
    }

    #[tokio::test]
    async fn server_frames_round_trip() {
        let frames = [
            ServerFrame::Welcome {
                version: 1,
                max_block_size: 1 << 20,
            },
            ServerFrame::Ack {
                level: AckLevel::Durable,
                seq: 3,
            },
            ServerFrame::Ack {
                level: AckLevel::Committed,
                seq: u64::MAX,
            },
            ServerFrame::Error {
                code: ErrorCode::CrcMismatch,
                message: "bad crc".into(),
            },
        ];
        let mut b = BytesMut::new();
        for f in &frames {
            f.encode(&mut b);
        }
        let mut r = &b[..];
        for f in &frames {
            assert_eq!(&ServerFrame::read(&mut r).await.unwrap().unwrap(), f);
        }
        assert!(ServerFrame::read(&mut r).await.unwrap().is_none());
    }

    #[test]
    fn ack_levels_rank_durable_below_checkpointed_below_committed() {
        use AckLevel::*;
        assert!(Durable.rank() < Checkpointed.rank() && Checkpointed.rank() < Committed.rank());
        assert!(Committed.covers(Checkpointed) && Committed.covers(Durable));
        assert!(Checkpointed.covers(Durable) && !Checkpointed.covers(Committed));
        assert!(!Durable.covers(Checkpointed) && Durable.covers(Durable));
        assert_eq!(Durable.stronger(Committed), Committed);
        assert_eq!(Checkpointed.stronger(Durable), Checkpointed);
        // The wire values stay what version 1 defined.
        assert_eq!(
            (Durable as u8, Committed as u8, Checkpointed as u8),
            (1, 2, 3)
        );
    }

    #[tokio::test]
    async fn version_2_and_3_hellos_are_accepted_and_a_version_4_hello_is_not() {
        for version in [VERSION_2, VERSION_3] {
            let h = Hello {
                version,
                source: "cam-2".into(),
                token: None,
            };
            assert_eq!(read_hello(&mut &h.encode()[..]).await.unwrap(), h);
        }
        let b = Hello {
            version: 4,
            source: "cam-2".into(),
            token: None,
        }
        .encode();
        let err = read_hello(&mut &b[..]).await.unwrap_err();
        assert!(matches!(err, ProtocolError::UnsupportedVersion(4)));
        assert!(err.to_string().contains("versions 1 to 3"), "{err}");
    }

    #[tokio::test]
    async fn a_held_frame_round_trips_and_older_clients_get_the_durable_ack_they_always_got() {
        let held = ServerFrame::Held { seq: 0x0102 };
        let mut b = BytesMut::new();
        held.encode(&mut b);
        assert_eq!(&b[..], &[0x83, 0, 0, 0, 0, 0, 0, 0x01, 0x02]);
        assert_eq!(
            ServerFrame::read(&mut &b[..]).await.unwrap(),
            Some(held.clone())
        );
        let durable = ServerFrame::Ack {
            level: AckLevel::Durable,
            seq: 0x0102,
        };
        for version in [VERSION_1, VERSION_2] {
            assert!(!held.visible_to(version));
            assert_eq!(held.clone().for_version(version), Some(durable.clone()));
        }
        assert_eq!(held.clone().for_version(VERSION_3), Some(held));
        // Every other frame goes to a version 3 client as it goes to a version 2 one.
        let role = ServerFrame::Role {
            role: Role::Primary,
            epoch: 1,
        };
        assert_eq!(role.clone().for_version(VERSION_3), Some(role.clone()));
        assert_eq!(role.for_version(VERSION_1), None);
    }

    #[tokio::test]
    async fn role_frames_and_checkpointed_acks_round_trip() {
        let frames = [
            ServerFrame::Welcome {
                version: VERSION_2,
                max_block_size: 4096,
            },
            ServerFrame::Role {
                role: Role::Standby,
                epoch: 7,
            },
            ServerFrame::Ack {
                level: AckLevel::Checkpointed,
                seq: 9,
            },
            ServerFrame::Role {
                role: Role::Primary,
                epoch: u64::MAX,
            },
        ];
        let mut b = BytesMut::new();
        for f in &frames {
            f.encode(&mut b);
        }
        // The ROLE frame is exactly `0x82 | role u8 | epoch u64`.
        assert_eq!(&b[6..16], &[0x82, 2, 0, 0, 0, 0, 0, 0, 0, 7]);
        let mut r = &b[..];
        for f in &frames {
            assert_eq!(&ServerFrame::read(&mut r).await.unwrap().unwrap(), f);
        }
        assert!(ServerFrame::read(&mut r).await.unwrap().is_none());
        let bad_role = [TAG_ROLE, 3, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(matches!(
            ServerFrame::read(&mut &bad_role[..]).await,
            Err(ProtocolError::Malformed(_))
        ));
    }

    /// Decodes the way docs/PROTOCOL.md's version 1 client does: it knows tags 0x80, 0x81 (levels 1
    /// and 2) and 0xEE, and fails on anything else.
    fn decode_as_a_version_1_client(mut b: &[u8]) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        while let Some((&tag, rest)) = b.split_first() {
            b = rest;
            match tag {
                0x80 => {
                    out.push(format!("welcome v{}", b[0]));
                    b = &b[5..];
                }
                0x81 => {
                    let level = match b[0] {
                        1 => "durable",
                        2 => "committed",
                        l => return Err(format!("unknown ack level {l}")),
                    };
                    out.push(format!(
                        "{level} {}",
                        u64::from_be_bytes(b[1..9].try_into().unwrap())
                    ));
                    b = &b[9..];
                }
                0xEE => {
                    let n = u16::from_be_bytes([b[2], b[3]]) as usize;
                    out.push("error".into());
                    b = &b[4 + n..];
                }
                t => return Err(format!("unknown tag 0x{t:02x}")),
            }
        }
        Ok(out)
    }

    #[test]
    fn a_version_1_client_is_sent_only_version_1_frames() {
        // Everything a node may queue for a connection, in the order it might queue it.
        let queued = [
            ServerFrame::Welcome {
                version: VERSION_1,
                max_block_size: 1024,
            },
            ServerFrame::Role {
                role: Role::Primary,
                epoch: 1,
            },
            ServerFrame::Ack {
                level: AckLevel::Durable,
                seq: 0,
            },
            ServerFrame::Held { seq: 1 },
            ServerFrame::Ack {
                level: AckLevel::Checkpointed,
                seq: 0,
            },
            ServerFrame::Role {
                role: Role::Standby,
                epoch: 2,
            },
            ServerFrame::Ack {
                level: AckLevel::Committed,
                seq: 0,
            },
        ];
        let mut v1 = BytesMut::new();
        for f in queued
            .iter()
            .filter_map(|f| f.clone().for_version(VERSION_1))
        {
            f.encode(&mut v1);
        }
        assert_eq!(
            decode_as_a_version_1_client(&v1).unwrap(),
            ["welcome v1", "durable 0", "durable 1", "committed 0"]
        );
        // Unfiltered, the same stream would break that client: the filter is what keeps it working.
        let mut all = BytesMut::new();
        for f in &queued {
            f.encode(&mut all);
        }
        assert!(decode_as_a_version_1_client(&all).is_err());
        // A version 2 client is sent everything but HELD (as its durable ack), a version 3 one
        // everything.
        assert!(queued
            .iter()
            .all(|f| f.visible_to(VERSION_2) != matches!(f, ServerFrame::Held { .. })));
        assert!(queued.iter().all(|f| f.visible_to(VERSION_3)));
    }
}
