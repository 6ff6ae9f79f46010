//! A spool's keys: the master key, the keys derived from it, and the two things they do —
//! name chunks (keyed blake3, so an id says nothing about content) and seal bytes
//! (XChaCha20-Poly1305, so what is stored can be neither read nor changed unnoticed).
//!
//! A plain spool has [`Keys::plain`]: ids are plain blake3 and nothing is sealed, exactly as
//! before encryption existed. An encrypted spool has [`Keys::from_master`]. Every subkey is
//! derived from the master key with blake3's `derive_key` and its own context string, so one
//! random 32-byte secret is all an admin must keep (`keyfile` wraps it under passphrases).
//!
//! Why XChaCha20-Poly1305 (docs/SECURITY.md): its 192-bit nonces can be drawn at random for
//! every sealed object, by any number of processes and machines, without a counter to keep and
//! with no practical chance of reuse; it is fast in software on every CPU (AES-GCM needs AES-NI
//! to be, and its 96-bit random nonces allow only about 2^32 objects per key).

pub mod keyfile;
pub mod paper;

use std::fmt;
use std::sync::Arc;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::types::ChunkId;
pub use crate::types::{hex, unhex};

/// Bytes of the master key and of every derived key.
pub const KEY_LEN: usize = 32;
/// Bytes of a sealed object's random nonce, written before its ciphertext.
pub const NONCE_LEN: usize = 24;
/// Bytes of the Poly1305 tag, written after the ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object has beyond its plaintext: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// blake3 `derive_key` contexts: fixed forever, one per use, so no two uses share a key.
const CONTEXT_CHUNK_IDS: &str = "reel backup 2026-12 chunk ids";
const CONTEXT_SEALING: &str = "reel backup 2026-12 sealing";
const CONTEXT_FINGERPRINT: &str = "reel backup 2026-12 key fingerprint";

/// The spool's one secret. Zeroed when dropped.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    /// A new random master key from the operating system's generator.
    pub fn generate() -> crate::Result<MasterKey> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        random(&mut k[..])?;
        Ok(MasterKey(k))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        MasterKey(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key's public name: tapes and spools record it, so a wrong key is refused by name.
    pub fn fingerprint(&self) -> Fingerprint {
        let d = blake3::derive_key(CONTEXT_FINGERPRINT, &self.0[..]);
        let mut f = [0u8; 8];
        f.copy_from_slice(&d[..8]);
        Fingerprint(f)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint())
    }
}

/// 64 bits of a one-way function of the master key, shown as 16 hex digits: enough to tell
/// keys apart, nothing about the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 8]);

impl Fingerprint {
    pub fn parse(s: &str) -> Option<Fingerprint> {
        let v = unhex(s)?;
        Some(Fingerprint(v.try_into().ok()?))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// How a spool names and stores: plain, or sealed under a master key. Cheap to clone.
#[derive(Clone, Default)]
pub struct Keys(Option<Arc<Sealer>>);

impl Keys {
    /// A plain spool: blake3 ids, nothing sealed.
    pub fn plain() -> Keys {
        Keys(None)
    }

    pub fn from_master(master: &MasterKey) -> Keys {
        let id_key = Zeroizing::new(blake3::derive_key(CONTEXT_CHUNK_IDS, &master.0[..]));
        let seal_key = Zeroizing::new(blake3::derive_key(CONTEXT_SEALING, &master.0[..]));
        Keys(Some(Arc::new(Sealer {
            id_key,
            aead: XChaCha20Poly1305::new((&*seal_key).into()),
            fingerprint: master.fingerprint(),
        })))
    }

    pub fn is_encrypted(&self) -> bool {
        self.0.is_some()
    }

    /// The sealer of an encrypted spool; `None` for a plain one.
    pub fn sealer(&self) -> Option<&Sealer> {
        self.0.as_deref()
    }

    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.0.as_ref().map(|s| s.fingerprint)
    }

    /// The id of a chunk (or any blob) of these bytes: blake3, keyed on an encrypted spool.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        match &self.0 {
            None => ChunkId::of(data),
            Some(s) => ChunkId(*blake3::keyed_hash(&s.id_key, data).as_bytes()),
        }
    }

    /// A hasher that ends in the same id as [`Keys::chunk_id`] of everything fed to it, for
    /// ids of streams.
    pub fn id_hasher(&self) -> blake3::Hasher {
        match &self.0 {
            None => blake3::Hasher::new(),
            Some(s) => blake3::Hasher::new_keyed(&s.id_key),
        }
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fingerprint() {
            None => f.write_str("Keys(plain)"),
            Some(fp) => write!(f, "Keys({fp})"),
        }
    }
}

/// The keys of an encrypted spool.
pub struct Sealer {
    id_key: Zeroizing<[u8; KEY_LEN]>,
    aead: XChaCha20Poly1305,
    fingerprint: Fingerprint,
}

/// A sealed object did not authenticate: it was changed, or sealed under another key or for
/// another place (`aad`). The caller names the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailed;

impl Sealer {
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Seal `plain` bound to `aad` (what the object is and where it belongs, so a sealed
    /// object moved elsewhere fails to open): appends nonce, ciphertext and tag to `out`.
    pub fn seal_into(&self, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) -> crate::Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let start = out.len();
        out.reserve(plain.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .aead
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                aad,
                &mut out[start + NONCE_LEN..],
            )
            .map_err(|_| crate::Error::corrupt("sealing failed: object too large"))?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// `seal_into` a new vector.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> crate::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
        self.seal_into(aad, plain, &mut out)?;
        Ok(out)
    }

    /// Seal `buf` in place, bound to `aad`: `buf` becomes the ciphertext; the nonce and tag to
    /// store before and after it are returned. For an owner of a large buffer (a 4 MiB frame)
    /// that writes the three parts out one after another, without a copy of the buffer.
    pub fn seal_detached(
        &self,
        aad: &[u8],
        buf: &mut [u8],
    ) -> crate::Result<([u8; NONCE_LEN], [u8; TAG_LEN])> {
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let tag = self
            .aead
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, buf)
            .map_err(|_| crate::Error::corrupt("sealing failed: object too large"))?;
        Ok((nonce, tag.into()))
    }

    /// Open a sealed object in place: on success the plaintext is
    /// `sealed[NONCE_LEN..sealed.len() - TAG_LEN]`, returned; on failure `sealed` may hold
    /// garbage. Saves the copy [`Sealer::open`] makes.
    pub fn open_in_place<'a>(
        &self,
        aad: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], AuthFailed> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(AuthFailed);
        }
        let len = sealed.len();
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (ct, tag) = rest.split_at_mut(len - SEAL_OVERHEAD);
        self.aead
            .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, ct, Tag::from_slice(tag))
            .map_err(|_| AuthFailed)?;
        Ok(ct)
    }

    /// Open a sealed object (nonce, ciphertext, tag) bound to `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthFailed> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(AuthFailed);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plain = ct.to_vec();
        self.aead
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                aad,
                &mut plain,
                Tag::from_slice(tag),
            )
            .map_err(|_| AuthFailed)?;
        Ok(plain)
    }
}

/// Fill `buf` from the operating system's random generator.
pub fn random(buf: &mut [u8]) -> crate::Result<()> {
    getrandom::fill(buf).map_err(|e| {
        crate::Error::Spool(format!(
            "the operating system's random generator failed ({e}); no key or nonce can be made"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_ids_differ_from_plain_ids_and_between_keys() {
        let a = Keys::from_master(&MasterKey::generate().unwrap());
        let b = Keys::from_master(&MasterKey::generate().unwrap());
        let data = b"the same bytes in two spools";
        assert_eq!(Keys::plain().chunk_id(data), ChunkId::of(data));
        assert_ne!(a.chunk_id(data), ChunkId::of(data));
        assert_ne!(a.chunk_id(data), b.chunk_id(data));
        assert_eq!(a.chunk_id(data), a.chunk_id(data));
        let mut h = a.id_hasher();
        h.update(&data[..5]).update(&data[5..]);
        assert_eq!(ChunkId(*h.finalize().as_bytes()), a.chunk_id(data));
    }

    #[test]
    fn a_sealed_object_opens_only_unchanged_in_its_place_under_its_key() {
        let master = MasterKey::generate().unwrap();
        let keys = Keys::from_master(&master);
        let s = keys.sealer().unwrap();
        let sealed = s.seal(b"place", b"secret content").unwrap();
        assert_eq!(sealed.len(), 14 + SEAL_OVERHEAD);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(s.open(b"place", &sealed).unwrap(), b"secret content");
        assert_eq!(s.open(b"elsewhere", &sealed), Err(AuthFailed));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(s.open(b"place", &bad), Err(AuthFailed), "flip at {i}");
        }
        assert_eq!(
            s.open(b"place", &sealed[..SEAL_OVERHEAD - 1]),
            Err(AuthFailed)
        );
        // Detached and in place: the same stored form.
        let mut buf = b"secret content".to_vec();
        let (nonce, tag) = s.seal_detached(b"place", &mut buf).unwrap();
        let mut stored = [&nonce[..], &buf, &tag[..]].concat();
        assert_eq!(s.open(b"place", &stored).unwrap(), b"secret content");
        assert_eq!(
            s.open_in_place(b"place", &mut stored).unwrap(),
            b"secret content"
        );
        let mut moved = sealed.clone();
        assert_eq!(s.open_in_place(b"elsewhere", &mut moved), Err(AuthFailed));
        let other = Keys::from_master(&MasterKey::generate().unwrap());
        assert_eq!(
            other.sealer().unwrap().open(b"place", &sealed),
            Err(AuthFailed)
        );
        // Same key from the same bytes: same fingerprint, opens.
        let again = Keys::from_master(&MasterKey::from_bytes(*master.as_bytes()));
        assert_eq!(again.fingerprint(), keys.fingerprint());
        assert!(again.sealer().unwrap().open(b"place", &sealed).is_ok());
    }

    #[test]
    fn hex_round_trips_and_refuses_non_hex() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
        let fp = MasterKey::generate().unwrap().fingerprint();
        assert_eq!(Fingerprint::parse(&fp.to_string()), Some(fp));
    }
}
