//! `none`: the baseline. One node and its local WAL; the sender keeps a block until it is durable.
//!
//! A crashed node is restarted in place: it replays its WAL, resolves the batch it may have been
//! publishing ([`crate::takeover`]) and commits the rest. Recovery time is a process restart plus a
//! WAL scan; the cost is nothing beyond the WAL every strategy has. A lost disk loses what was not
//! committed yet — the price of having no second copy.

use super::{Policy, Release, StandbyMode};

/// `none`'s answers.
pub const POLICY: Policy = Policy {
    release: Release::Durable,
    sends_to_standby: false,
    standby: StandbyMode::NoStandby,
    checkpoints_carry_blocks: false,
};
