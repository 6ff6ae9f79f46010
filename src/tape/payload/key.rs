//! The key a tape is read with. A tape from an encrypted spool names its key's fingerprint in
//! LABEL (`key_fingerprint`) and carries its CATALOG sealed under that key (and sealed packs);
//! a tape from a plain spool names none. Every command that reads a tape offers a key
//! ([`TapeKey`]: the spool's own, or another given to the command), and the tape is refused,
//! naming both fingerprints, before anything is read or written when the key is not the one
//! it needs.

use crate::crypto::{Fingerprint, Keys};
use crate::spool::Spool;
use crate::{Error, Result};

/// Domain of the sealed CATALOG's associated data; the LABEL file's bytes follow it, so a
/// CATALOG opens only on the tape whose LABEL it was written with (docs/FORMAT.md).
pub(super) const CATALOG_AAD: &[u8] = b"reel tape catalog 1\0";

/// The associated data of the CATALOG of a tape whose LABEL is `label`.
pub(super) fn catalog_aad(label: &[u8]) -> Vec<u8> {
    [CATALOG_AAD, label].concat()
}

/// A key offered to read tapes with, and where it came from, for messages.
#[derive(Clone, Debug)]
pub struct TapeKey {
    keys: Keys,
    source: String,
}

impl TapeKey {
    /// The key of `spool` (plain for a plain spool): what `export` seals with, and what
    /// `import`, a restore from tapes and `rebuild-catalog --from-tapes` read with, since the
    /// tape's chunk ids must be the spool's.
    pub fn of_spool(spool: &Spool) -> TapeKey {
        let source = match spool.keys().fingerprint() {
            Some(fp) => format!("this spool's key is {fp}"),
            None => "this spool is not encrypted".to_string(),
        };
        TapeKey {
            keys: spool.keys().clone(),
            source,
        }
    }

    /// A key from elsewhere (an exported key file); `source` names it in messages ("key file
    /// PATH").
    pub fn new(keys: Keys, source: impl Into<String>) -> TapeKey {
        let source = source.into();
        let source = match keys.fingerprint() {
            Some(fp) => format!("{source} holds key {fp}"),
            None => format!("{source} holds no key"),
        };
        TapeKey { keys, source }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The keys to read tape `label` with, which LABEL says needs key `needs` (None: a plain
    /// tape, read as plain whatever key is offered). A tape that needs a key this one is not
    /// is refused, naming both.
    pub fn for_tape(&self, label: &str, needs: Option<Fingerprint>) -> Result<Keys> {
        let Some(needs) = needs else {
            return Ok(Keys::plain());
        };
        match self.keys.fingerprint() {
            Some(have) if have == needs => Ok(self.keys.clone()),
            Some(_) => Err(Error::Key(format!(
                "tape {label} is sealed under key {needs}, but {}: read it \
                 with key {needs}: from the spool that wrote it, from a spool made with `reel \
                 init --encrypt --from-key` of that key, or with --key-file (docs/TAPES.md, \
                 \"Encrypted tapes\")",
                self.source
            ))),
            None => Err(Error::Key(format!(
                "tape {label} is encrypted and needs key {needs}, but {}: read it with key \
                 {needs}: from the spool that wrote it, from a spool made with `reel init \
                 --encrypt --from-key` of that key, or with --key-file (docs/TAPES.md, \
                 \"Encrypted tapes\")",
                self.source
            ))),
        }
    }
}

/// Tape `label` (sealed under `tape`, None when plain) may give its packs and dumps to a
/// spool with `spool` keys only when both are the same key: a tape's chunk ids are those of
/// the spool that wrote it, and a plain tape's packs would lie unsealed in an encrypted spool.
/// `what` says what the tape would be used for ("imported", "read").
pub fn same_key_as_spool(
    label: &str,
    tape: Option<Fingerprint>,
    spool: &Keys,
    what: &str,
) -> Result<()> {
    match (tape, spool.fingerprint()) {
        (a, b) if a == b => Ok(()),
        (Some(t), Some(s)) => Err(Error::Key(format!(
            "tape {label} is sealed under key {t}, but this spool's key is {s}: it cannot be \
             {what} here; use a spool whose key is {t} (docs/TAPES.md, \"Encrypted tapes\")"
        ))),
        (Some(t), None) => Err(Error::Key(format!(
            "tape {label} is encrypted and needs key {t}; this spool is not encrypted, so it \
             cannot be {what} here: use a spool made with `reel init --encrypt --from-key` of key {t} \
             (docs/TAPES.md, \"Encrypted tapes\")"
        ))),
        (None, Some(s)) => Err(Error::Key(format!(
            "tape {label} is not encrypted and this spool is (key {s}): it cannot be {what} \
             here, since its packs and file names would lie unsealed in an encrypted spool; \
             use a plain spool (`reel init`) for it"
        ))),
        (None, None) => Ok(()),
    }
}
