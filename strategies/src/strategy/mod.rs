//! The fault-tolerance strategies: a closed set, one module per strategy.
//!
//! Every strategy keeps the same invariant — *a block that was acknowledged is in the output exactly
//! once after any single failure* — with the same commit mechanism (the batch log of
//! [`crate::claims`], epoch fencing of [`crate::epoch`], immutable checkpoints). What differs is where
//! the blocks are when a node dies, and so what recovery must fetch and what normal operation costs
//! (Hwang et al., "High-Availability Algorithms for Distributed Stream Processing", ICDE 2005):
//!
//! | strategy | the sender keeps a block until | the standby meanwhile | a takeover gets the blocks from |
//! |---|---|---|---|
//! | [`none`] | durable on the node | — (a restart of the same node) | its own WAL |
//! | [`passive_standby`] | a checkpoint covers it | idle, watching heartbeats | the newest checkpoint, then the sender |
//! | [`active_standby`] | durable on both nodes | receives every block, makes it durable, never commits | its own WAL |
//! | [`upstream_backup`] | committed | idle spare with empty state | the sender (everything not committed) |
//!
//! [`Strategy`] answers the questions the node and the sender ask; it holds no state and does no I/O.
//! The recovery decision itself is [`crate::takeover::plan_takeover`], a pure function too.

pub mod active_standby;
pub mod none;
pub mod passive_standby;
pub mod upstream_backup;

use serde::{Deserialize, Serialize};

/// How far a block must have got before the sender may forget it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Release {
    /// In the receiving node's WAL (fdatasync done).
    Durable,
    /// In a checkpoint in the checkpoint store (state and uncommitted blocks).
    Checkpointed,
    /// In a published output batch, recorded by a checkpoint.
    Committed,
}

/// What the standby role does while the primary is healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StandbyMode {
    /// There is no standby: a failed node is restarted in place.
    NoStandby,
    /// Watches heartbeats only; opens its WAL and listeners when it takes over.
    Idle,
    /// Receives every block too and makes it durable in its own WAL; trims what the primary committed.
    Mirror,
}

/// The fixed answers of one strategy (each module defines its own as `POLICY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The level at which the sender releases a block.
    pub release: Release,
    /// The sender sends every block to the standby as well as to the primary.
    pub sends_to_standby: bool,
    /// What the standby does in normal operation.
    pub standby: StandbyMode,
    /// The primary checkpoints its uncommitted blocks every `checkpoint_interval`, and a takeover loads them.
    pub checkpoints_carry_blocks: bool,
}

/// The strategy a pipeline runs, as selected by `[strategy] kind = "..."`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// One node, a local WAL; a restart replays it.
    #[default]
    None,
    /// A standby loads the primary's newest checkpoint; the sender re-sends what none covered.
    PassiveStandby,
    /// The sender feeds both nodes; the standby promotes itself and commits what the primary had not.
    ActiveStandby,
    /// No standby state: a spare takes over empty and the sender replays everything not committed.
    UpstreamBackup,
}

impl Strategy {
    /// Every strategy, baseline first (the order of benchmark tables).
    pub const ALL: [Strategy; 4] = [
        Strategy::None,
        Strategy::PassiveStandby,
        Strategy::ActiveStandby,
        Strategy::UpstreamBackup,
    ];

    /// The fixed answers of this strategy.
    pub fn policy(self) -> Policy {
        match self {
            Strategy::None => none::POLICY,
            Strategy::PassiveStandby => passive_standby::POLICY,
            Strategy::ActiveStandby => active_standby::POLICY,
            Strategy::UpstreamBackup => upstream_backup::POLICY,
        }
    }

    /// The name used in TOML and tables (`passive-standby`).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::PassiveStandby => "passive-standby",
            Strategy::ActiveStandby => "active-standby",
            Strategy::UpstreamBackup => "upstream-backup",
        }
    }

    /// Parses a name as written in TOML.
    pub fn from_name(name: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The level at which the sender releases a block.
    pub fn release_level(self) -> Release {
        self.policy().release
    }

    /// The sender sends every block to the standby as well.
    pub fn sends_to_standby(self) -> bool {
        self.policy().sends_to_standby
    }

    /// Runs a primary and a standby (every strategy but `none`).
    pub fn has_standby(self) -> bool {
        self.policy().standby != StandbyMode::NoStandby
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_round_trips_through_its_toml_name() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::from_name(s.name()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
        }
        assert_eq!(Strategy::from_name("hot-standby"), None);
    }

    #[test]
    fn the_sender_keeps_blocks_longest_under_upstream_backup_and_shortest_without_a_standby() {
        assert_eq!(Strategy::None.release_level(), Release::Durable);
        assert_eq!(Strategy::ActiveStandby.release_level(), Release::Durable);
        assert_eq!(
            Strategy::PassiveStandby.release_level(),
            Release::Checkpointed
        );
        assert_eq!(Strategy::UpstreamBackup.release_level(), Release::Committed);
        assert!(
            Release::Durable < Release::Checkpointed && Release::Checkpointed < Release::Committed
        );
    }

    #[test]
    fn only_active_standby_doubles_the_traffic_and_only_passive_checkpoints_blocks() {
        for s in Strategy::ALL {
            assert_eq!(s.sends_to_standby(), s == Strategy::ActiveStandby, "{s}");
            assert_eq!(
                s.policy().checkpoints_carry_blocks,
                s == Strategy::PassiveStandby,
                "{s}"
            );
            assert_eq!(s.has_standby(), s != Strategy::None, "{s}");
        }
    }
}
