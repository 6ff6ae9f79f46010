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
    /// The catalog database reported an error.
    #[error("catalog: {0}")]
    Catalog(String),
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

    /// Is this the kernel telling us the disk is full?
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
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
                Error::Catalog(e.to_string())
            }
        }
    )*};
}

catalog_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
