//! Walking two manifests side by side in path order.

use crate::error::Result;
use crate::types::{Entry, path_cmp};

/// Merge-join step over a manifest in path order: skip the entries before `path` and take
/// the one at `path`, if there is one (later entries stay for the next call). Dumps, clones,
/// ownership and tape planning all walk two manifests side by side this way.
pub fn seek<I: Iterator<Item = Result<Entry>>>(
    entries: &mut std::iter::Peekable<I>,
    path: &[u8],
) -> Result<Option<Entry>> {
    loop {
        let ord = match entries.peek() {
            None => return Ok(None),
            Some(Err(_)) => {
                return Err(entries
                    .next()
                    .expect("peeked")
                    .expect_err("peeked an error"));
            }
            Some(Ok(e)) => path_cmp(&e.path, path),
        };
        match ord {
            std::cmp::Ordering::Less => {
                entries.next();
            }
            std::cmp::Ordering::Greater => return Ok(None),
            std::cmp::Ordering::Equal => return entries.next().transpose(),
        }
    }
}
