//! Running an iterator on a thread of its own, a few batches ahead of whoever consumes it.
//!
//! A dump's thread walks the volume, decodes the previous manifest and merges the two, and
//! for an unchanged volume those three are the whole job, one after the other on one core.
//! Walking and decoding each on a thread of their own, handing over their items in batches
//! through a bounded channel, lets them run on the other core while the dump's thread merges:
//! memory stays bounded by the channel (`DEPTH` batches), and the items arrive in order.
//!
//! Work spread over more threads than cores pays only while it waits on the disk: the walk's
//! look-ahead and the dump's reading threads decide by a moving average of how long their
//! operations take ([`note_times`]).

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

/// Batches in flight at most.
const DEPTH: usize = 4;

/// The consuming end: the items, in the order the iterator gave them.
pub struct Ahead<T> {
    rx: Receiver<Vec<T>>,
    batch: std::vec::IntoIter<T>,
}

/// Run `iter` on a thread named `name` in `scope`, `batch` items a hand-over. The thread ends
/// when the iterator does, or when the `Ahead` is dropped; joining it gives the iterator back
/// (to read what it gathered on the way, like a walk's warnings).
pub fn spawn<'scope, 'env, I>(
    scope: &'scope Scope<'scope, 'env>,
    name: &str,
    mut iter: I,
    batch: usize,
) -> std::io::Result<(Ahead<I::Item>, ScopedJoinHandle<'scope, I>)>
where
    I: Iterator + Send + 'scope,
    I::Item: Send + 'scope,
{
    let (tx, rx): (SyncSender<Vec<I::Item>>, _) = sync_channel(DEPTH);
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn_scoped(scope, move || {
            loop {
                let items: Vec<I::Item> = iter.by_ref().take(batch.max(1)).collect();
                let last = items.len() < batch.max(1);
                if items.is_empty() || tx.send(items).is_err() || last {
                    return iter;
                }
            }
        })?;
    Ok((
        Ahead {
            rx,
            batch: Vec::new().into_iter(),
        },
        handle,
    ))
}

/// Fold `n` operations that took `each_ns` nanoseconds each into the moving average `avg`,
/// which follows about the last `over` operations.
pub fn note_times(avg: &mut f64, each_ns: f64, n: usize, over: usize) {
    *avg += (each_ns - *avg) * (n as f64 / over as f64).min(1.0);
}

impl<T> Iterator for Ahead<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.batch.next() {
                return Some(item);
            }
            self.batch = self.rx.recv().ok()?.into_iter();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_arrive_in_order_and_the_iterator_comes_back() {
        std::thread::scope(|s| {
            let (ahead, handle) = spawn(s, "test", 0..10_007u32, 64).unwrap();
            let got: Vec<u32> = ahead.collect();
            assert_eq!(got, (0..10_007).collect::<Vec<_>>());
            let mut rest = handle.join().unwrap();
            assert_eq!(rest.next(), None);
        });
    }

    #[test]
    fn dropping_the_consumer_stops_the_thread() {
        std::thread::scope(|s| {
            let (mut ahead, handle) = spawn(s, "test", 0.., 8).unwrap();
            assert_eq!(ahead.next(), Some(0));
            drop(ahead);
            // The thread notices at its next hand-over and gives the iterator back.
            let mut rest = handle.join().unwrap();
            assert!(rest.next().is_some());
        });
    }
}
