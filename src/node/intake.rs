//! The node as the receivers see it: [`Intake`], the in-flight budget, ingest, the role they announce
//! and the registry of connections that get committed acks.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use super::state::ConnHandle;
use super::{Node, NodeError};
use crate::config::ReceiverConfig;
use crate::protocol::{ProtocolError, RoleInfo, ServerFrame};
use crate::receiver::{Ingested, Intake};

impl Intake for Node {
    type Error = NodeError;

    fn receiver_config(&self) -> &ReceiverConfig {
        &self.config().receiver
    }

    /// Room for `len` bytes in flight, in `BUDGET_UNIT` permits over every connection.
    async fn reserve(&self, len: usize) -> OwnedSemaphorePermit {
        self.inner
            .inflight
            .clone()
            .acquire_many_owned(crate::receiver::budget_units(len))
            .await
            .expect("the in-flight semaphore is never closed")
    }

    async fn ingest(
        &self,
        source: &str,
        seq: Option<u64>,
        data: Bytes,
    ) -> Result<Ingested, NodeError> {
        Node::ingest(self, source, seq, data).await
    }

    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        Node::stopped(self)
    }

    fn admit_source(&self, source: &str) -> Result<(), ProtocolError> {
        self.state().admit_source(source, self.config())
    }

    fn admit_block(&self, source: &str, seq: u64) -> Result<(), ProtocolError> {
        self.state().admit_block(source, seq, &self.config().dedup)
    }

    fn roles(&self) -> watch::Receiver<RoleInfo> {
        self.inner.role.subscribe()
    }

    fn register_conn(&self, source: &str, tx: mpsc::UnboundedSender<ServerFrame>) -> u64 {
        let id = self.inner.next_conn_id.fetch_add(1, Ordering::Relaxed);
        self.state()
            .conns
            .insert(source.to_string(), ConnHandle { id, tx });
        id
    }

    fn unregister_conn(&self, source: &str, id: u64) {
        let mut st = self.state();
        if st.conns.get(source).is_some_and(|c| c.id == id) {
            st.conns.remove(source);
        }
    }

    fn count_rejected(&self) {
        self.stats().rejected.fetch_add(1, Ordering::Relaxed);
    }
}
