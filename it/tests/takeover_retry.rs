//! A takeover that fails after it claimed its epoch has already fenced the old primary: the standby
//! must try again instead of exiting, or the pipeline is left with no primary at all. The failpoint
//! `node::takeover::after_claim` fails the first attempt of the standby (a real process) right after
//! its claim; the primary is SIGKILLed; the standby must still print its takeover line, at the epoch
//! after the one the failed attempt claimed, and take a new image.
#![cfg(feature = "failpoints")]

use anyhow::ensure;
use it::pair::{push_one_more, WATCHING};
use it::roles::{Pipeline, Role, RoleProc, Storage, TAKEOVER_TIMEOUT};

async fn a_takeover_that_fails_after_its_claim_is_tried_again(
    strategy: &str,
) -> anyhow::Result<()> {
    let p = Pipeline::new(strategy, Storage::Local)?;
    let r = async {
        let mut primary = RoleProc::start(&p, Role::Primary, false, &[])?;
        let mut standby = RoleProc::start(
            &p,
            Role::Standby,
            false,
            &[("FAILPOINTS", "node::takeover::after_claim=1*return")],
        )?;
        std::thread::sleep(WATCHING);
        primary.kill9()?;
        let ev = standby.wait_takeover(TAKEOVER_TIMEOUT)?;
        ensure!(
            ev.epoch == 3,
            "the failed attempt claimed epoch 2, the next one epoch 3: {ev:?}"
        );
        let log = std::fs::read_to_string(&standby.log)?;
        ensure!(
            log.contains("the takeover failed after its claim; trying again"),
            "{}",
            standby.log_tail(20)
        );
        push_one_more(&p).await
    }
    .await;
    p.check(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_that_fails_after_its_claim_is_tried_again_under_passive_standby(
) -> anyhow::Result<()> {
    a_takeover_that_fails_after_its_claim_is_tried_again("passive-standby").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_that_fails_after_its_claim_is_tried_again_under_active_standby(
) -> anyhow::Result<()> {
    a_takeover_that_fails_after_its_claim_is_tried_again("active-standby").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_that_fails_after_its_claim_is_tried_again_under_upstream_backup(
) -> anyhow::Result<()> {
    a_takeover_that_fails_after_its_claim_is_tried_again("upstream-backup").await
}
