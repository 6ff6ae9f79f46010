//! Versioned records: the persisted structs of the catalog and the media catalog (dump, clone,
//! forget, tape and plain-export records), encoded with postcard, each carrying its version so
//! a newer format is refused with a message instead of misread. FORMAT.md has their fields.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The version every record is written with, and the one this reel reads.
pub const RECORD_VERSION: u32 = 1;

/// A record type: what it is called in messages, and how one is named.
pub trait Versioned: Serialize + DeserializeOwned {
    /// What it is, for messages ("dump record").
    const KIND: &'static str;
    /// The version it carries.
    fn version(&self) -> u32;
    /// Which one, for messages ("12", "of volume home"); empty when nothing names it.
    fn named(&self) -> String;
}

/// The record's bytes.
pub fn encode<T: Versioned>(r: &T) -> Vec<u8> {
    postcard::to_allocvec(r).unwrap_or_else(|e| panic!("a {} serialises: {e}", T::KIND))
}

/// A record from its bytes; damage and a version this reel does not read are errors that say
/// so.
pub fn decode<T: Versioned>(b: &[u8]) -> Result<T> {
    let r: T = postcard::from_bytes(b).map_err(|e| {
        Error::corrupt(format!(
            "catalog: a {} does not decode ({e}); run `reel check`",
            T::KIND
        ))
    })?;
    if r.version() != RECORD_VERSION {
        let named = r.named();
        return Err(Error::corrupt(format!(
            "{}{}{named} has version {}, this reel reads version {RECORD_VERSION}: upgrade reel",
            T::KIND,
            if named.is_empty() { "" } else { " " },
            r.version()
        )));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Thing {
        version: u32,
        name: String,
    }

    impl Versioned for Thing {
        const KIND: &'static str = "thing record";
        fn version(&self) -> u32 {
            self.version
        }
        fn named(&self) -> String {
            self.name.clone()
        }
    }

    #[test]
    fn round_trips_and_refuses_other_versions_and_damage() {
        let t = Thing {
            version: RECORD_VERSION,
            name: "a".into(),
        };
        assert_eq!(decode::<Thing>(&encode(&t)).unwrap(), t);
        let newer = Thing {
            version: RECORD_VERSION + 1,
            name: "b".into(),
        };
        let e = decode::<Thing>(&encode(&newer)).unwrap_err().to_string();
        assert!(
            e.contains("thing record b has version 2") && e.contains("upgrade reel"),
            "{e}"
        );
        let e = decode::<Thing>(&[0xff]).unwrap_err().to_string();
        assert!(e.contains("thing record does not decode"), "{e}");
    }
}
