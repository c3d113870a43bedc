//! The store's writer thread: group commits are written and flushed here, in order, while the
//! caller applies the next group.
//!
//! A group commit has two halves. Applying it (decoding, the engine, encoding the log segment)
//! needs the engine; writing it (sled's batch, then the flush that waits for the disk) needs only
//! the bytes. Done one after the other, the disk waits for the CPU and the CPU for the disk. This
//! thread takes the second half, so group N is flushed while group N+1 is applied: a classic group
//! commit pipeline. Batches are written strictly in the order they were handed over, each flushed
//! before the next is written, and each result is reported in that order, so "durable" still means
//! "this group and every group before it are on disk".

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::{StoreError, io};

/// Called on the writer thread after each group's result is reported (the bus uses it to wake its
/// loop; the store itself does not need it).
pub type Wake = Box<dyn Fn() + Send + 'static>;

pub(super) struct Writer {
    jobs: Option<SyncSender<sled::Batch>>,
    results: Receiver<Result<(), StoreError>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread. At most `depth` batches wait in its queue.
    pub(super) fn start(db: sled::Db, depth: usize, wake: Option<Wake>) -> Writer {
        let (jobs, job_rx) = sync_channel::<sled::Batch>(depth);
        let (result_tx, results) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("vigil-store-writer".into())
            .spawn(move || {
                for batch in job_rx {
                    let result = db.apply_batch(batch).and_then(|_| db.flush().map(|_| ()));
                    let failed = result.is_err();
                    if result_tx.send(result.map_err(io("writing a group commit"))).is_err() {
                        return;
                    }
                    if let Some(wake) = &wake {
                        wake();
                    }
                    if failed {
                        return; // the store is poisoned; nothing after a failed group may land
                    }
                }
            })
            .expect("spawning the store writer thread");
        Writer { jobs: Some(jobs), results, thread: Some(thread) }
    }

    /// Hands a batch over; blocks only while `depth` batches are already waiting.
    pub(super) fn send(&self, batch: sled::Batch) -> Result<(), StoreError> {
        match &self.jobs {
            Some(jobs) => jobs.send(batch).map_err(|_| StoreError::WriterGone("stopped")),
            None => Err(StoreError::WriterGone("is closed")),
        }
    }

    /// The next group's result, waiting for it.
    pub(super) fn wait(&self) -> Result<(), StoreError> {
        self.results.recv().unwrap_or(Err(StoreError::WriterGone("stopped")))
    }

    /// The next group's result if it is there.
    pub(super) fn try_next(&self) -> Option<Result<(), StoreError>> {
        match self.results.try_recv() {
            Ok(result) => Some(result),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Some(Err(StoreError::WriterGone("stopped"))),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
