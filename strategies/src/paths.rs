//! The one place that builds and parses every key the crate writes to a checkpoint store.
//!
//! # Layout of a store
//!
//! ```text
//! checkpoints/<epoch:010>/<id:020>.json          one immutable checkpoint (a Snapshot as JSON);
//!                                                the newest is the greatest (epoch, id)
//! epochs/<n:010>                                 the claim of epoch n (EpochClaim as JSON)
//! batches/<n:020>                                the claim of batch n of the batch log (BatchClaim)
//! carried/<epoch:010>/<hi lsn:020>               passive-standby: checkpointed uncommitted blocks
//! ```
//!
//! Numbers are zero-padded so that a store's sorted `list` is also numeric order for every
//! realistic value; the parsers accept only the exact form the builders produce, so any
//! stray key under these prefixes is recognised as foreign and left alone. No key here is also
//! a directory of another, as the [store contract](crate::store) requires.

/// The directory of checkpoint objects.
pub const CHECKPOINTS: &str = "checkpoints";
/// The directory of epoch claims.
pub const EPOCHS: &str = "epochs";

/// The pointer earlier versions moved to the newest checkpoint; nothing reads it any more (the
/// newest checkpoint is the greatest object), and it is left alone where it exists.
pub const LEGACY_POINTER: &str = "checkpoints/CURRENT";
const JSON: &str = ".json";

/// The key of checkpoint `id` written in `epoch`: `checkpoints/<epoch:010>/<id:020>.json`.
pub fn checkpoint(epoch: u64, id: u64) -> String {
    format!("{CHECKPOINTS}/{epoch:010}/{id:020}{JSON}")
}

/// The key claiming epoch `n`: `epochs/<n:010>`.
pub fn epoch(n: u64) -> String {
    format!("{EPOCHS}/{n:010}")
}

/// The directory of batch claims.
pub const BATCHES: &str = "batches";
/// The directory of checkpointed block objects.
pub const CARRIED: &str = "carried";

/// The key claiming batch `n` of the batch log: `batches/<n:020>`.
pub fn batch(n: u64) -> String {
    format!("{BATCHES}/{n:020}")
}

/// `n` of a key built by [`batch`]; `None` for any other key.
pub fn parse_batch(key: &str) -> Option<u64> {
    let n = key.strip_prefix(BATCHES)?.strip_prefix('/')?;
    parse_number(n, 20)
}

/// The key of the blocks a node of `epoch` checkpointed up to its WAL record `hi`.
pub fn carried(epoch: u64, hi: u64) -> String {
    format!("{CARRIED}/{epoch:010}/{hi:020}")
}

/// `(epoch, hi)` of a key built by [`carried`].
pub fn parse_carried(key: &str) -> Option<(u64, u64)> {
    let rest = key.strip_prefix(CARRIED)?.strip_prefix('/')?;
    let (epoch, hi) = rest.split_once('/')?;
    Some((parse_number(epoch, 10)?, parse_number(hi, 20)?))
}

fn parse_number(text: &str, width: usize) -> Option<u64> {
    if text.len() < width || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = text.parse().ok()?;
    // Canonical only: exactly what the builder would write (no extra leading zeros).
    (format!("{n:0width$}") == text).then_some(n)
}

/// `(epoch, id)` of a key built by [`checkpoint`]; `None` for any other key.
pub fn parse_checkpoint(key: &str) -> Option<(u64, u64)> {
    let rest = key.strip_prefix(CHECKPOINTS)?.strip_prefix('/')?;
    let (epoch, file) = rest.split_once('/')?;
    let id = file.strip_suffix(JSON)?;
    Some((parse_number(epoch, 10)?, parse_number(id, 20)?))
}

/// `n` of a key built by [`epoch`]; `None` for any other key.
pub fn parse_epoch(key: &str) -> Option<u64> {
    let n = key.strip_prefix(EPOCHS)?.strip_prefix('/')?;
    parse_number(n, 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::validate_key;

    #[test]
    fn built_keys_parse_back_to_their_numbers() {
        for (e, id) in [(0, 0), (1, 2), (42, 1_000_000), (u64::MAX, u64::MAX)] {
            let key = checkpoint(e, id);
            assert_eq!(parse_checkpoint(&key), Some((e, id)), "{key}");
        }
        for n in [0, 1, 9_999_999_999, 10_000_000_000, u64::MAX] {
            assert_eq!(parse_epoch(&epoch(n)), Some(n));
            assert_eq!(parse_batch(&batch(n)), Some(n));
            assert_eq!(parse_carried(&carried(7, n)), Some((7, n)));
        }
        assert_eq!(parse_batch("batches/1"), None);
        assert_eq!(parse_carried("carried/1/2"), None);
    }

    #[test]
    fn keys_look_like_the_documented_layout() {
        assert_eq!(
            checkpoint(3, 17),
            "checkpoints/0000000003/00000000000000000017.json"
        );
        assert_eq!(epoch(5), "epochs/0000000005");
    }

    #[test]
    fn every_built_key_is_a_valid_store_key() {
        for key in [checkpoint(1, 2), epoch(3)] {
            validate_key(&key).unwrap();
        }
    }

    #[test]
    fn foreign_and_non_canonical_keys_do_not_parse() {
        for key in [
            "checkpoints/CURRENT",
            "checkpoints/3/17.json",
            "checkpoints/0000000003/00000000000000000017",
            "checkpoints/0000000003/00000000000000000017.json.tmp",
            "checkpoints/00000000003/00000000000000000017.json",
            "checkpoints/000000000x/00000000000000000017.json",
            "checkpoints/0000000003/sub/00000000000000000017.json",
            "other/0000000003/00000000000000000017.json",
            "checkpoints/0000000003/99999999999999999999999.json",
        ] {
            assert_eq!(parse_checkpoint(key), None, "{key}");
        }
        for key in [
            "epochs/5",
            "epochs/00000000005",
            "epochs/",
            "epochsx/0000000005",
            "epochs/0000000005/x",
            "epochs/-000000005",
        ] {
            assert_eq!(parse_epoch(key), None, "{key}");
        }
    }

    #[test]
    fn sorted_keys_are_in_numeric_order() {
        let mut keys = [
            checkpoint(2, 1),
            checkpoint(1, 10),
            checkpoint(1, 9),
            checkpoint(10, 0),
        ];
        keys.sort();
        let parsed: Vec<_> = keys.iter().filter_map(|k| parse_checkpoint(k)).collect();
        assert_eq!(parsed, vec![(1, 9), (1, 10), (2, 1), (10, 0)]);
    }
}
