//! `upstream-backup`: no standby state. The sender keeps every block until it is *committed*.
//!
//! On failure a spare node claims the next epoch, reads the newest checkpoint and the batch log (what
//! is committed) and serves with an empty WAL; the sender replays everything it still keeps, and the
//! spare stores what is not committed yet. Recovery = detection + start + replay (grows with the
//! sender's window: about one batch interval of data). Cost: the least — the sender's memory.

use super::{Policy, Release, StandbyMode};

/// `upstream-backup`'s answers.
pub const POLICY: Policy = Policy {
    release: Release::Committed,
    sends_to_standby: false,
    standby: StandbyMode::Idle,
    checkpoints_carry_blocks: false,
};
