//! The library's error type. Every message names the thing (volume, path, pack, dump) and,
//! where there is one, what the admin can do next.

use std::path::{Path, PathBuf};

use crate::types::ChunkId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The spool is missing, foreign, locked or otherwise unusable.
    #[error("{0}")]
    Spool(String),
    /// The user asked for something that does not exist or is not allowed.
    #[error("{0}")]
    Usage(String),
    /// Stored data failed verification: a hash, a checksum or a structure did not match.
    /// `object` says what is damaged, for callers that act on it (check, repair, scripts);
    /// `msg` is the whole message for people.
    #[error("{msg}")]
    Corrupt { object: Damaged, msg: String },
    /// A chunk a read needs is not on the spool any more (`purge` removed its pack) but the
    /// media catalog places it on tapes: nothing is damaged, the read needs those tapes.
    /// `tapes` are their labels, as `reel tapes` lists them.
    #[error("{msg}")]
    OnTape {
        chunk: ChunkId,
        tapes: Vec<String>,
        msg: String,
    },
    /// A volume's tree cannot be dumped (its path is missing or unreadable).
    #[error("{0}")]
    Volume(String),
    /// A volume's tree looks like a lost volume, not a backup (its root on another filesystem,
    /// empty, or far smaller than its previous dump): the shrink guard refused the dump before
    /// committing anything. The same tree fails the same way until the admin acts, so the
    /// nightly retry pass leaves it.
    #[error("{0}")]
    Refused(String),
    /// A key is missing, wrong or damaged: an encrypted spool or tape opened without its key,
    /// a passphrase that opens none of its key files, a tape sealed under another key.
    #[error("{0}")]
    Key(String),
    /// A hook (freeze, thaw, snapshot, release) failed, hung or could not start.
    #[error("{0}")]
    Hook(String),
    /// SIGINT, SIGTERM or SIGHUP arrived; the work stopped cleanly (the volume was thawed).
    #[error("interrupted by signal {0}; stopped cleanly")]
    Interrupted(i32),
    /// Something about the catalog, in reel's words (a missing table, a record that does not
    /// decode, a catalog that needs repair).
    #[error("catalog: {0}")]
    Catalog(String),
    /// The catalog database (redb) reported an error; it stays the source, so a caller can
    /// look through it (to an I/O error, say).
    #[error("catalog: {source}")]
    Database {
        #[source]
        source: redb::Error,
    },
}

/// What a corruption error is about. The lower layers name what they read (a frame, a
/// manifest stream); the layers above re-name it with what they know (the pack and offset,
/// the dump) through `Error::within`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damaged {
    /// A pack file (in the spool or on a tape), and where in it when known.
    Pack { path: PathBuf, offset: Option<u64> },
    /// A compressed frame whose pack is named by the caller.
    Frame,
    /// A chunk the catalog or a dump names that cannot be read back.
    Chunk(ChunkId),
    /// A manifest stream (of `dump` when known), and the byte offset of the damage.
    Manifest {
        dump: Option<u64>,
        offset: Option<u64>,
    },
    /// A dump's record or the tree its manifest describes.
    Dump(u64),
    /// An entry of a volume's tree, by its path in the volume.
    Entry(Vec<u8>),
    /// A BSD dump image, and the record (1 KiB block) of the damage when known.
    Image { path: PathBuf, record: Option<u64> },
    /// A file reel reads back whole: a tape's CATALOG or LABEL, a payload member.
    File(PathBuf),
    /// Rows of the spool's catalog.
    Catalog,
    /// Not named by the code that found it.
    Unnamed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }

    /// A corruption error naming what is damaged.
    pub fn damaged(object: Damaged, msg: impl Into<String>) -> Error {
        Error::Corrupt {
            object,
            msg: msg.into(),
        }
    }

    /// A corruption error whose object is not named.
    pub fn corrupt(msg: impl Into<String>) -> Error {
        Error::damaged(Damaged::Unnamed, msg)
    }

    /// The damaged object of a corruption error.
    pub fn object(&self) -> Option<&Damaged> {
        match self {
            Error::Corrupt { object, .. } => Some(object),
            _ => None,
        }
    }

    /// A corruption error re-named by a caller that knows more: `object` replaces the one
    /// the lower layer named and `context` is put in front of the message. Other errors pass
    /// through unchanged.
    pub fn within(self, object: Damaged, context: impl FnOnce(String) -> String) -> Error {
        match self {
            Error::Corrupt { msg, .. } => Error::Corrupt {
                object,
                msg: context(msg),
            },
            e => e,
        }
    }

    /// Is this the kernel telling us the disk is full, for a file reel wrote or for the
    /// catalog database (an I/O error anywhere in the chain of causes)?
    pub fn is_disk_full(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            let io = match e.downcast_ref::<redb::Error>() {
                // redb does not give its I/O error as a source.
                Some(redb::Error::Io(io)) => Some(io),
                _ => e.downcast_ref::<std::io::Error>(),
            };
            if io.is_some_and(|io| io.raw_os_error() == Some(libc::ENOSPC)) {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

/// Attach a path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

macro_rules! catalog_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Database { source: e.into() }
            }
        }
    )*};
}

impl From<redb::Error> for Error {
    fn from(source: redb::Error) -> Error {
        Error::Database { source }
    }
}

catalog_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_database_error_keeps_its_cause_and_its_message() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e: Error = redb::StorageError::Io(full).into();
        assert!(e.to_string().starts_with("catalog: "), "{e}");
        assert!(e.source().is_some(), "the redb error is the source");
        assert!(e.is_disk_full(), "ENOSPC under redb is a full disk");
        let other: Error = redb::StorageError::Io(std::io::Error::other("x")).into();
        assert!(!other.is_disk_full());
        let file = Error::io("/x", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(file.is_disk_full());
    }

    #[test]
    fn a_caller_names_the_damaged_object_and_the_message_keeps_the_cause() {
        let low = Error::damaged(Damaged::Frame, "frame is damaged: short table");
        assert_eq!(low.object(), Some(&Damaged::Frame));
        let pack = Damaged::Pack {
            path: "/spool/packs/ab.pack".into(),
            offset: Some(4096),
        };
        let named = low.within(pack.clone(), |m| format!("pack ab at byte 4096: {m}"));
        assert_eq!(named.object(), Some(&pack));
        assert_eq!(
            named.to_string(),
            "pack ab at byte 4096: frame is damaged: short table"
        );
        let usage = Error::usage("no such volume").within(pack, |m| format!("x {m}"));
        assert_eq!(
            usage.to_string(),
            "no such volume",
            "only corruption is re-named"
        );
        assert_eq!(usage.object(), None);
    }
}
