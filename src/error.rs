//! The library's error type. Every message names the thing (volume, path, pack, dump) and,
//! where there is one, what the admin can do next.

use std::path::{Path, PathBuf};

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
    #[error("{0}")]
    Corrupt(String),
    /// A volume's tree cannot be dumped (its path is missing or unreadable).
    #[error("{0}")]
    Volume(String),
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

    pub fn corrupt(msg: impl Into<String>) -> Error {
        Error::Corrupt(msg.into())
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
}
