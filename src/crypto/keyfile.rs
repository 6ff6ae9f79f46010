//! A key file: the master key wrapped under one passphrase (argon2id, then
//! XChaCha20-Poly1305), with the parameters that unwrap it recorded beside it. A spool keeps
//! one per passphrase; adding or removing a passphrase touches only these files.
//!
//! The file is JSON (docs/KEYS.md has its fields). `check` is a plain blake3 over every
//! other field, so a damaged file is told apart from a wrong passphrase; the wrapping's AAD
//! binds the parameters, the file's id and the key's fingerprint, so none of them can be
//! changed without the passphrase failing to open it.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Fingerprint, KEY_LEN, MasterKey, hex, random, unhex};
use crate::{Error, Result};

/// Version of the key file layout.
pub const KEY_FILE_FORMAT: u32 = 1;

/// argon2id's cost: memory in KiB, passes, lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub passes: u32,
    pub lanes: u32,
}

impl Default for KdfParams {
    /// RFC 9106's second recommended option (64 MiB, 3 passes), one lane: about a quarter of
    /// a second per try here, paid once per command.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            passes: 3,
            lanes: 1,
        }
    }
}

impl KdfParams {
    /// The least memory reel accepts: below it a guessing attack gets cheap.
    pub const MIN_MEMORY_KIB: u32 = 8 * 1024;

    pub fn validate(&self) -> Result<()> {
        if self.memory_kib < Self::MIN_MEMORY_KIB || self.memory_kib > 4 * 1024 * 1024 {
            return Err(Error::usage(format!(
                "argon2id memory of {} KiB is outside {}..=4194304 KiB",
                self.memory_kib,
                Self::MIN_MEMORY_KIB
            )));
        }
        if !(1..=64).contains(&self.passes) || !(1..=16).contains(&self.lanes) {
            return Err(Error::usage(format!(
                "argon2id passes {} (1..=64) or lanes {} (1..=16) out of range",
                self.passes, self.lanes
            )));
        }
        Ok(())
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        self.validate()?;
        let params = argon2::Params::new(self.memory_kib, self.passes, self.lanes, Some(KEY_LEN))
            .map_err(|e| Error::usage(format!("argon2id parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(passphrase, salt, &mut out[..])
            .map_err(|e| Error::usage(format!("argon2id: {e}")))?;
        Ok(out)
    }
}

/// One key file, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub format: u32,
    /// 16 hex digits, random: names the file among a spool's keys.
    pub id: String,
    /// The master key's fingerprint (16 hex digits).
    pub fingerprint: String,
    /// When and where it was made, and a note the admin gave (who holds the passphrase).
    pub created: String,
    pub host: String,
    #[serde(default)]
    pub comment: String,
    pub kdf: String,
    pub argon2: KdfParams,
    /// Hex: 32 random bytes.
    pub salt: String,
    pub aead: String,
    /// Hex: nonce, wrapped master key, tag (24 + 32 + 16 bytes).
    pub wrapped: String,
    /// Hex: the first 16 bytes of blake3 over the JSON of every field above, in order.
    pub check: String,
}

/// What the check covers: the file without its check.
#[derive(Serialize)]
struct Checked<'a> {
    format: u32,
    id: &'a str,
    fingerprint: &'a str,
    created: &'a str,
    host: &'a str,
    comment: &'a str,
    kdf: &'a str,
    argon2: &'a KdfParams,
    salt: &'a str,
    aead: &'a str,
    wrapped: &'a str,
}

impl KeyFile {
    /// Wrap `master` under `passphrase`.
    pub fn wrap(
        master: &MasterKey,
        passphrase: &[u8],
        params: KdfParams,
        created: String,
        host: String,
        comment: String,
    ) -> Result<KeyFile> {
        if passphrase.is_empty() {
            return Err(Error::usage(
                "an empty passphrase would protect nothing; give one",
            ));
        }
        let mut id = [0u8; 8];
        random(&mut id)?;
        let mut salt = [0u8; 32];
        random(&mut salt)?;
        let mut kf = KeyFile {
            format: KEY_FILE_FORMAT,
            id: hex(&id),
            fingerprint: master.fingerprint().to_string(),
            created,
            host,
            comment,
            kdf: "argon2id".into(),
            argon2: params,
            salt: hex(&salt),
            aead: "xchacha20poly1305".into(),
            wrapped: String::new(),
            check: String::new(),
        };
        let kek = params.derive(passphrase, &salt)?;
        let sealer = wrapping(&kek);
        let wrapped = sealer.seal(&kf.aad(), master.as_bytes())?;
        kf.wrapped = hex(&wrapped);
        kf.check = kf.compute_check();
        Ok(kf)
    }

    /// The master key, if `passphrase` is this file's. A damaged file and a wrong passphrase
    /// are told apart; `name` is how the caller names the file in messages.
    pub fn unwrap(&self, passphrase: &[u8], name: &str) -> Result<MasterKey> {
        self.verify(name)?;
        let salt = unhex(&self.salt).ok_or_else(|| self.damaged(name, "salt"))?;
        let wrapped = unhex(&self.wrapped).ok_or_else(|| self.damaged(name, "wrapped key"))?;
        let kek = self.argon2.derive(passphrase, &salt)?;
        let plain = wrapping(&kek).open(&self.aad(), &wrapped).map_err(|_| {
            Error::Key(format!(
                "the passphrase does not open key {} ({name}) of key {}: wrong passphrase",
                self.id, self.fingerprint
            ))
        })?;
        let plain = Zeroizing::new(plain);
        let bytes: [u8; KEY_LEN] = plain[..]
            .try_into()
            .map_err(|_| self.damaged(name, "wrapped key length"))?;
        let master = MasterKey::from_bytes(bytes);
        if master.fingerprint().to_string() != self.fingerprint {
            return Err(self.damaged(name, "fingerprint"));
        }
        Ok(master)
    }

    /// The fields are whole and as written (the plain check; says nothing about the
    /// passphrase).
    pub fn verify(&self, name: &str) -> Result<()> {
        if self.format != KEY_FILE_FORMAT {
            return Err(Error::Key(format!(
                "key file {name} has format {}; this reel reads format {KEY_FILE_FORMAT}: use a newer reel",
                self.format
            )));
        }
        if self.check != self.compute_check() {
            return Err(self.damaged(name, "checksum"));
        }
        if self.kdf != "argon2id" || self.aead != "xchacha20poly1305" {
            return Err(self.damaged(name, "algorithm names"));
        }
        Fingerprint::parse(&self.fingerprint).ok_or_else(|| self.damaged(name, "fingerprint"))?;
        Ok(())
    }

    pub fn parse(text: &str, name: &str) -> Result<KeyFile> {
        serde_json::from_str(text).map_err(|e| {
            Error::damaged(
                crate::error::Damaged::File(name.into()),
                format!(
                    "key file {name} is damaged ({e}): it failed authentication; use another key file or `reel key import` from the exported master key"
                ),
            )
        })
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a key file serialises");
        s.push('\n');
        s
    }

    fn aad(&self) -> Vec<u8> {
        let mut a = b"reel key file 1\0".to_vec();
        a.extend_from_slice(self.id.as_bytes());
        a.push(0);
        a.extend_from_slice(self.fingerprint.as_bytes());
        for v in [
            self.argon2.memory_kib,
            self.argon2.passes,
            self.argon2.lanes,
        ] {
            a.extend_from_slice(&v.to_le_bytes());
        }
        a
    }

    fn compute_check(&self) -> String {
        let c = Checked {
            format: self.format,
            id: &self.id,
            fingerprint: &self.fingerprint,
            created: &self.created,
            host: &self.host,
            comment: &self.comment,
            kdf: &self.kdf,
            argon2: &self.argon2,
            salt: &self.salt,
            aead: &self.aead,
            wrapped: &self.wrapped,
        };
        let json = serde_json::to_vec(&c).expect("serialises");
        hex(&blake3::hash(&json).as_bytes()[..16])
    }

    fn damaged(&self, name: &str, what: &str) -> Error {
        Error::damaged(
            crate::error::Damaged::File(name.into()),
            format!(
                "key file {name} is damaged ({what} does not match its checksum or its contents): authentication of the key failed; use another key file or `reel key import` from the exported master key"
            ),
        )
    }
}

/// The sealer that wraps a master key under a key derived from a passphrase.
fn wrapping(kek: &[u8; KEY_LEN]) -> super::Sealer {
    use chacha20poly1305::KeyInit;
    super::Sealer {
        id_key: Zeroizing::new([0u8; KEY_LEN]),
        aead: chacha20poly1305::XChaCha20Poly1305::new(kek.into()),
        fingerprint: Fingerprint([0; 8]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> KdfParams {
        KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            passes: 1,
            lanes: 1,
        }
    }

    fn file(master: &MasterKey) -> KeyFile {
        KeyFile::wrap(
            master,
            b"correct horse",
            cheap(),
            "t".into(),
            "h".into(),
            String::new(),
        )
        .unwrap()
    }

    #[test]
    fn the_right_passphrase_unwraps_the_master_key_and_a_wrong_one_is_named_wrong() {
        let master = MasterKey::generate().unwrap();
        let kf = file(&master);
        let text = kf.to_json();
        let back = KeyFile::parse(&text, "k").unwrap();
        assert_eq!(back, kf);
        let got = back.unwrap(b"correct horse", "k").unwrap();
        assert_eq!(got.as_bytes(), master.as_bytes());
        let e = back.unwrap(b"wrong horse", "k").unwrap_err().to_string();
        assert!(e.contains("wrong passphrase"), "{e}");
        assert!(!text.contains(&hex(master.as_bytes())));
    }

    #[test]
    fn a_changed_byte_anywhere_in_the_file_fails_and_is_not_taken_for_a_wrong_passphrase() {
        let master = MasterKey::generate().unwrap();
        let text = file(&master).to_json();
        let bytes = text.as_bytes();
        let mut refused = 0;
        for i in 0..bytes.len() {
            let mut bad = bytes.to_vec();
            bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
            let Ok(bad) = String::from_utf8(bad) else {
                continue;
            };
            let r = KeyFile::parse(&bad, "k").and_then(|kf| kf.unwrap(b"correct horse", "k"));
            match r {
                Ok(m) => assert_eq!(m.as_bytes(), master.as_bytes(), "flip at {i}"),
                Err(e) => {
                    refused += 1;
                    let e = e.to_string();
                    assert!(!e.contains("wrong passphrase"), "flip at {i}: {e}");
                }
            }
        }
        assert!(refused > text.len() / 2, "{refused} of {}", text.len());
    }
}
