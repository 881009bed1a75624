//! How long a client may take: timeouts that measure silence, not a block's duration, plus a minimum
//! rate so that a trickle cannot hold a connection (and the budget it reserved) forever.
//!
//! A block in progress (framed: from its tag byte; raw: the whole image, from the accept) is cut when
//!
//! - no byte has come for `idle_timeout` (*silence*), or
//! - it has taken longer than `idle_timeout + received / min_rate` (*too slow*): after a grace of one
//!   `idle_timeout`, the client must average at least `min_rate` bytes per second.
//!
//! An honest sender at 200 KiB/s is never cut by either, however large its block; a client sending a
//! byte a second is cut after about one `idle_timeout`, and one sending exactly `min_rate` holds its
//! slot only for as long as its (bounded) block takes at that rate. Time spent waiting for the node
//! (for room in the in-flight budget) is not the client's and does not count: see [`Pace::pause`].

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// Why a block in progress was cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Cut {
    #[error("no byte for {} in the middle of a block ({received} bytes received); closed", humantime::format_duration(*silence))]
    Silent { silence: Duration, received: u64 },
    #[error("too slow: {received} bytes in {}, under the minimum rate of {min_rate} B/s after the {} grace; closed", humantime::format_duration(*elapsed), humantime::format_duration(*grace))]
    TooSlow {
        received: u64,
        elapsed: Duration,
        grace: Duration,
        min_rate: u64,
    },
}

/// The clock of one block in progress.
#[derive(Debug)]
pub struct Pace {
    idle: Duration,
    min_rate: u64,
    started: Instant,
    last_byte: Instant,
    received: u64,
}

/// A read that returned, or the cut that ended it.
pub type Paced<T> = Result<std::io::Result<T>, Cut>;

impl Pace {
    /// A block starts now.
    pub fn start(idle: Duration, min_rate: u64) -> Pace {
        let now = Instant::now();
        Pace {
            idle,
            min_rate: min_rate.max(1),
            started: now,
            last_byte: now,
            received: 0,
        }
    }

    /// The bytes counted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The instant the next byte must come by, and the cut if it does not.
    fn deadline(&self) -> (Instant, Cut) {
        let silent = self.last_byte + self.idle;
        let allowed =
            self.idle + Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        let slow = self.started + allowed;
        if slow < silent {
            (
                slow,
                Cut::TooSlow {
                    received: self.received,
                    elapsed: allowed,
                    grace: self.idle,
                    min_rate: self.min_rate,
                },
            )
        } else {
            (
                silent,
                Cut::Silent {
                    silence: self.idle,
                    received: self.received,
                },
            )
        }
    }

    /// Counts `n` bytes that arrived now (bytes a caller read without [`Pace::read`]).
    pub fn count(&mut self, n: usize) {
        if n > 0 {
            self.received += n as u64;
            self.last_byte = Instant::now();
        }
    }

    /// Waits for `f` (the node, not the client: room in the budget) without counting the wait.
    pub async fn pause<F: std::future::Future>(&mut self, f: F) -> F::Output {
        let before = Instant::now();
        let out = f.await;
        let waited = before.elapsed();
        self.started += waited;
        self.last_byte += waited;
        out
    }

    /// One read of at most `limit` bytes into `buf`'s spare capacity (`buf` must have some).
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        buf: &mut Vec<u8>,
        limit: u64,
    ) -> Paced<usize> {
        debug_assert!(buf.capacity() > buf.len());
        let (at, cut) = self.deadline();
        match tokio::time::timeout_at(at, r.take(limit).read_buf(buf)).await {
            Err(_) => Err(cut),
            Ok(Ok(n)) => {
                self.count(n);
                Ok(Ok(n))
            }
            Ok(Err(e)) => Ok(Err(e)),
        }
    }

    /// Waits for the next byte without taking it; `Ok(Ok(false))` on EOF.
    pub async fn wait_readable<R: AsyncBufRead + Unpin>(&mut self, r: &mut R) -> Paced<bool> {
        let (at, cut) = self.deadline();
        match tokio::time::timeout_at(at, r.fill_buf()).await {
            Err(_) => Err(cut),
            Ok(Ok(b)) => {
                let more = !b.is_empty();
                if more {
                    self.last_byte = Instant::now();
                }
                Ok(Ok(more))
            }
            Ok(Err(e)) => Ok(Err(e)),
        }
    }

    /// Reads exactly `buf.len()` bytes; `Ok(Ok(false))` on an EOF part-way.
    pub async fn read_exact<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        buf: &mut [u8],
    ) -> Paced<bool> {
        let mut got = 0;
        while got < buf.len() {
            let (at, cut) = self.deadline();
            match tokio::time::timeout_at(at, r.read(&mut buf[got..])).await {
                Err(_) => return Err(cut),
                Ok(Ok(0)) => return Ok(Ok(false)),
                Ok(Ok(n)) => {
                    got += n;
                    self.count(n);
                }
                Ok(Err(e)) => return Ok(Err(e)),
            }
        }
        Ok(Ok(true))
    }
}

/// Makes room in `buf` for the next read of a body of `len` bytes: the first chunk, then doubling,
/// never past `len` (so the buffer is `len` exactly once full, and grows only as bytes arrive).
pub fn grow(buf: &mut Vec<u8>, len: usize) {
    if buf.len() == buf.capacity() && buf.len() < len {
        let target = (buf.capacity() * 2)
            .max(crate::protocol::FIRST_CHUNK)
            .min(len);
        buf.reserve_exact(target - buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trickle_is_cut_for_its_rate_and_a_silence_for_its_silence() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let idle = Duration::from_millis(300);
        let mut pace = Pace::start(idle, 1024);
        let mut buf = Vec::with_capacity(4096);
        // A byte every 100 ms is never silent for 300 ms, but it is far under 1 KiB/s.
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..100 {
                if client.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let start = Instant::now();
        let cut = loop {
            match pace.read(&mut server, &mut buf, 4096).await {
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => panic!("{e}"),
                Err(cut) => break cut,
            }
        };
        assert!(matches!(cut, Cut::TooSlow { .. }), "{cut}");
        let took = start.elapsed();
        assert!(took >= idle && took < 2 * idle, "{took:?}");
        writer.abort();

        let (_client, mut server) = tokio::io::duplex(1024);
        let mut pace = Pace::start(idle, 1);
        let cut = pace.read(&mut server, &mut buf, 4096).await.unwrap_err();
        assert_eq!(
            cut,
            Cut::Silent {
                silence: idle,
                received: 0
            }
        );
    }

    #[tokio::test]
    async fn time_waiting_for_the_node_is_not_the_clients() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let idle = Duration::from_millis(200);
        let mut pace = Pace::start(idle, 1);
        pace.pause(tokio::time::sleep(Duration::from_millis(500)))
            .await;
        let before = Instant::now();
        let mut buf = Vec::with_capacity(16);
        assert!(pace.read(&mut server, &mut buf, 16).await.is_err());
        let waited = before.elapsed();
        assert!(
            waited >= idle && waited < Duration::from_millis(400),
            "{waited:?}"
        );
    }

    #[test]
    fn a_body_buffer_grows_by_doubling_to_exactly_its_length() {
        let len = 300 * 1024;
        let mut buf = Vec::new();
        let mut caps = Vec::new();
        while buf.len() < len {
            grow(&mut buf, len);
            caps.push(buf.capacity());
            let fill = buf.capacity() - buf.len();
            buf.extend(std::iter::repeat_n(0u8, fill));
        }
        assert_eq!(caps, vec![64 * 1024, 128 * 1024, 256 * 1024, 300 * 1024]);
    }
}
