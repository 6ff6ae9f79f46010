//! Getting the passphrase of an encrypted spool and unlocking it.

use reel::crypto::keyfile::{KdfParams, KeyFile};
use reel::crypto::{Fingerprint, MasterKey};
use reel::keyring::KeyRing;
use reel::{Error, Result};
use zeroize::Zeroizing;

/// The passphrase: `REEL_PASSWORD`.
pub fn passphrase(fp: Option<Fingerprint>) -> Result<Zeroizing<String>> {
    match std::env::var("REEL_PASSWORD") {
        Ok(p) if !p.is_empty() => Ok(Zeroizing::new(p)),
        _ => Err(Error::Key(format!(
            "{}: set REEL_PASSWORD to its passphrase",
            match fp {
                Some(fp) =>
                    format!("the spool is encrypted (key {fp}) and no passphrase was given"),
                None => "no passphrase was given".to_string(),
            }
        ))),
    }
}

/// The master key of an encrypted spool, from its key files and the passphrase.
pub fn unlock(ring: &KeyRing, fp: Fingerprint) -> Result<MasterKey> {
    let pass = passphrase(Some(fp))?;
    ring.unlock(pass.as_bytes())
}

/// A new master key and its first key file, for `reel init --encrypt`.
pub fn new_master() -> Result<(MasterKey, KeyFile)> {
    let pass = passphrase(None)?;
    let master = MasterKey::generate()?;
    let kf = KeyFile::wrap(
        &master,
        pass.as_bytes(),
        KdfParams::default(),
        reel::timefmt::format_rfc3339(reel::timefmt::now_ns()),
        reel::dump::host_name().unwrap_or_default(),
        String::new(),
    )?;
    Ok((master, kf))
}
