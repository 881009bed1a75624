//! `passive-standby`: the primary checkpoints its state *and the blocks it has not committed yet*
//! every `checkpoint_interval`; the standby only watches heartbeats.
//!
//! The sender keeps a block until a checkpoint covers it (a *checkpointed* ack, or a committed one).
//! Checkpoints are incremental: each one stores the blocks made durable since the previous one as an
//! immutable object (`carried/…`), and the snapshot lists the objects still needed (those holding a
//! block above the last committed seal). On failure the standby claims the next epoch, loads the
//! newest checkpoint and every object it lists into its own WAL, commits them, and serves; the sender
//! re-sends what no checkpoint covered. Recovery = detection + load (grows with the checkpointed
//! bytes) + re-send of at most one checkpoint interval. Cost: every block is written once more, to the
//! checkpoint store.

use super::{Policy, Release, StandbyMode};

/// `passive-standby`'s answers.
pub const POLICY: Policy = Policy {
    release: Release::Checkpointed,
    sends_to_standby: false,
    standby: StandbyMode::Idle,
    checkpoints_carry_blocks: true,
};
