//! `send push` on SIGINT or SIGTERM: the first signal stops the push taking new images and gives the
//! nodes `grace` to acknowledge what was sent; a second signal, or the end of the grace, ends it at
//! once. Either way every image sent gets its manifest line (not acknowledged for those not released)
//! and the process exits with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell
//! reports a process the signal ended.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::warn;

use super::link::AbortOnDrop;
use super::options::Stop;

/// A signal that interrupts a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    Int,
    Term,
}

impl Interrupt {
    pub fn name(self) -> &'static str {
        match self {
            Interrupt::Int => "SIGINT",
            Interrupt::Term => "SIGTERM",
        }
    }

    /// 128 + the signal's number.
    pub fn exit_code(self) -> u8 {
        match self {
            Interrupt::Int => 128 + libc::SIGINT as u8,
            Interrupt::Term => 128 + libc::SIGTERM as u8,
        }
    }
}

/// Watches for SIGINT and SIGTERM while it lives (from [`watch_interrupts`]).
pub struct Interrupts {
    first: Arc<OnceLock<Interrupt>>,
    _task: AbortOnDrop,
}

impl Interrupts {
    /// The first signal received, if one was.
    pub fn received(&self) -> Option<Interrupt> {
        self.first.get().copied()
    }
}

/// Takes over SIGINT and SIGTERM (they no longer end the process) and returns what a push is to be
/// stopped by: [`Stop::Drain`] at the first, [`Stop::Now`] at a second or `grace` after the first.
pub fn watch_interrupts(grace: Duration) -> std::io::Result<(Interrupts, watch::Receiver<Stop>)> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let (tx, rx) = watch::channel(Stop::Running);
    let first = Arc::new(OnceLock::new());
    let got = first.clone();
    let task = tokio::spawn(async move {
        let which = tokio::select! {
            _ = int.recv() => Interrupt::Int,
            _ = term.recv() => Interrupt::Term,
        };
        let _ = got.set(which);
        warn!(signal = which.name(), grace = %humantime::format_duration(grace), "interrupted: taking no more images, waiting for the nodes to acknowledge what was sent (signal again to stop now)");
        let _ = tx.send(Stop::Drain);
        let again = tokio::select! {
            _ = int.recv() => true,
            _ = term.recv() => true,
            _ = tokio::time::sleep(grace) => false,
        };
        if again {
            warn!("interrupted again: stopping now");
        }
        let _ = tx.send(Stop::Now);
        // Hold the handlers, so that later signals do not end the process before the manifest is
        // written.
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
    });
    Ok((
        Interrupts {
            first,
            _task: AbortOnDrop(task),
        },
        rx,
    ))
}
