//! Fencing: a node that a newer epoch replaced finds out before it writes, and stops.

use super::{Node, NodeError};

impl Node {
    /// Logs and records that a newer epoch replaced this node; returns the error to stop with.
    pub(super) fn fenced(&self, why: String) -> NodeError {
        let msg = format!(
            "fenced: {why}; this node (epoch {}) stops without writing",
            self.epoch()
        );
        self.fail(msg.clone());
        NodeError::Fenced(msg)
    }

    /// Stops the node if a newer epoch was claimed (another node took over).
    pub async fn check_fence(&self) -> Result<(), NodeError> {
        let mine = self.epoch();
        if let Some(latest) = strategies::epoch::latest(&*self.inner.store).await? {
            if strategies::epoch::is_fenced(mine, latest) {
                let who = strategies::epoch::claim_of(&*self.inner.store, latest)
                    .await
                    .ok()
                    .flatten()
                    .map_or_else(|| "another node".to_string(), |c| c.node);
                return Err(self.fenced(format!("epoch {latest} was claimed by {who}")));
            }
        }
        Ok(())
    }
}
