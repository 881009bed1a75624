//! `active-standby`: the sender sends every block to the primary and the standby; both make it
//! durable; only the primary commits output.
//!
//! The sender keeps a block until both nodes have it durable (while the standby is down, the primary
//! alone — the pipeline runs unprotected and says so). The primary's heartbeats name its newest
//! checkpoint; the standby reads it and trims its WAL of everything committed. On failure the standby
//! claims the next epoch, resolves the batch the primary may have been publishing, and commits every
//! block in its WAL that is not committed — under the batch log, so nothing is published twice.
//! Recovery = detection only (the blocks are already on the standby's disk). Cost: twice the network
//! and twice the WAL.

use super::{Policy, Release, StandbyMode};

/// `active-standby`'s answers.
pub const POLICY: Policy = Policy {
    release: Release::Durable,
    sends_to_standby: true,
    standby: StandbyMode::Mirror,
    checkpoints_carry_blocks: false,
};
