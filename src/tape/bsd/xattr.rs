//! Extended attributes in a BSD dump (docs/BSD-DUMP.md §10): the ext2 attribute layout that
//! Linux `dump` copies into the attribute records following an inode, decoded into names and
//! values and encoded back.
//!
//! Why it is built this way: a record's content comes from an image, so every offset and
//! length in it is checked against the record before it is used, the decoded values may not
//! add up to more than the record holds (ext2 never shares a value between entries), and an
//! entry that cannot be represented (a value in a separate inode, an unknown name index) is an
//! error naming the entry rather than an attribute silently lost. Writing uses the attribute
//! block form with at most [`WRITE_RECORD`] bytes per record, the block size `dump` writes from
//! a 4 KiB-block file system, so every `restore` that reads dump's records reads ours; more
//! attributes than one block holds go into further records, which restore applies in turn.
//! Entry hashes are written as 0 ("not computed" to ext2): restore does not check them.

/// One inode's extended attributes: full names (`user.comment`) and values, sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Magic of the attribute block form (`EXT2_XATTR_MAGIC`): a 32-byte header, then the entries;
/// value offsets count from the start of the record.
pub const MAGIC_BLOCK: u32 = 0xEA02_0000;
/// Magic of the in-inode form: the entries follow the magic; value offsets count from the end
/// of the magic.
pub const MAGIC_INODE: u32 = 0xEA02_0001;
/// Largest attribute record read: one block of the largest ext4 block size (64 KiB).
pub const MAX_RECORD: u64 = 64 * 1024;
/// Largest attribute record written (see the module documentation).
pub const WRITE_RECORD: usize = 4096;

const BLOCK_HEADER: usize = 32;
/// `e_name_len` u8, `e_name_index` u8, `e_value_offs` u16, `e_value_inum` u32,
/// `e_value_size` u32, `e_hash` u32; then the name.
const ENTRY_HEAD: usize = 16;
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";
/// ext4's inline data (`system.data`): file content kept in the inode, not an attribute.
const INDEX_SYSTEM_DATA: u8 = 7;

/// The name prefix of each ext2 name index that carries attributes.
const PREFIXES: [(u8, &[u8]); 4] = [
    (1, b"user."),
    (4, b"trusted."),
    (5, b"lustre."),
    (6, b"security."),
];

/// ACL entry tags (`ACL_USER_OBJ` ...) and whether the entry carries an id.
fn acl_tag_has_id(tag: u16) -> Option<bool> {
    match tag {
        0x01 | 0x04 | 0x10 | 0x20 => Some(false),
        0x02 | 0x08 => Some(true),
        _ => None,
    }
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decode one attribute record (`di_size` bytes). The record is ext2's own little-endian
/// layout whatever the byte order of the dump's headers. `Err` says what is wrong; the caller
/// adds the image and inode.
pub fn decode(rec: &[u8]) -> Result<Xattrs, String> {
    let len = rec.len();
    if len < 4 {
        return Err(format!("a {len}-byte record has no room for its magic"));
    }
    let (first, base) = match le32(rec, 0) {
        MAGIC_INODE => (4, 4),
        MAGIC_BLOCK => (BLOCK_HEADER, 0),
        m => return Err(format!("unknown magic {m:#010x}")),
    };
    let mut out: Xattrs = Vec::new();
    let mut values = 0usize;
    let mut off = first;
    loop {
        if off + 4 > len {
            return Err(format!(
                "the entry list runs past the end of the {len}-byte record (no end marker)"
            ));
        }
        if le32(rec, off) == 0 {
            break;
        }
        if off + ENTRY_HEAD > len {
            return Err(format!(
                "entry at byte {off} is cut short by the end of the record"
            ));
        }
        let name_len = usize::from(rec[off]);
        let index = rec[off + 1];
        let value_offs = usize::from(le16(rec, off + 2));
        let value_inum = le32(rec, off + 4);
        let value_size = le32(rec, off + 8) as usize;
        let name_end = off + ENTRY_HEAD + name_len;
        if name_end > len {
            return Err(format!(
                "entry at byte {off}: its {name_len}-byte name runs past the end of the record"
            ));
        }
        let suffix = &rec[off + ENTRY_HEAD..name_end];
        let shown = String::from_utf8_lossy(suffix).into_owned();
        if value_inum != 0 {
            return Err(format!(
                "entry at byte {off} ({shown}) keeps its value in inode {value_inum} (ext4 ea_inode), which a dump does not carry"
            ));
        }
        let start = base + value_offs;
        let value = start
            .checked_add(value_size)
            .and_then(|end| rec.get(start..end))
            .ok_or_else(|| {
                format!(
                    "entry at byte {off} ({shown}): its {value_size}-byte value at offset {value_offs} lies outside the {len}-byte record"
                )
            })?;
        values += value_size;
        if values > len {
            return Err(format!(
                "entry at byte {off} ({shown}): the values add up to more than the {len}-byte record holds"
            ));
        }
        let attr = match index {
            INDEX_SYSTEM_DATA => None,
            2 | 3 if suffix.is_empty() => {
                let name = if index == 2 { ACL_ACCESS } else { ACL_DEFAULT };
                let acl = acl_from_disk(value).map_err(|why| {
                    format!(
                        "entry at byte {off} ({}): {why}",
                        String::from_utf8_lossy(name)
                    )
                })?;
                Some((name.to_vec(), acl))
            }
            _ => {
                let prefix = PREFIXES
                    .iter()
                    .find(|(i, _)| *i == index)
                    .map(|(_, p)| *p)
                    .ok_or_else(|| {
                        format!("entry at byte {off} ({shown}) has name index {index}, which reel does not know")
                    })?;
                if suffix.is_empty() || suffix.contains(&0) {
                    return Err(format!(
                        "entry at byte {off} has an empty name or one with a NUL byte"
                    ));
                }
                Some(([prefix, suffix].concat(), value.to_vec()))
            }
        };
        out.extend(attr);
        off += pad4(ENTRY_HEAD + name_len);
    }
    out.sort();
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!(
            "attribute {} appears twice",
            String::from_utf8_lossy(&w[0].0)
        ));
    }
    Ok(out)
}

/// One attribute as an entry stores it.
struct Stored<'a> {
    index: u8,
    /// The name without the index's prefix.
    suffix: &'a [u8],
    value: Vec<u8>,
}

impl Stored<'_> {
    /// Bytes it takes in a block: entry and value, each padded to 4.
    fn cost(&self) -> usize {
        pad4(ENTRY_HEAD + self.suffix.len()) + pad4(self.value.len())
    }
}

/// Encode `attrs` as attribute records in the block form, each a whole number of 1 KiB
/// records and at most [`WRITE_RECORD`] bytes. `Err` names an attribute the format cannot
/// carry (no name index for its namespace, a name over 255 bytes, more than one record holds).
pub fn encode(attrs: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Vec<u8>>, String> {
    let mut entries: Vec<Stored> = Vec::with_capacity(attrs.len());
    for (name, value) in attrs {
        let shown = || String::from_utf8_lossy(name).into_owned();
        let e = if name == ACL_ACCESS || name == ACL_DEFAULT {
            Stored {
                index: if name == ACL_ACCESS { 2 } else { 3 },
                suffix: b"",
                value: acl_to_disk(value).map_err(|why| format!("attribute {}: {why}", shown()))?,
            }
        } else {
            let (index, prefix) = PREFIXES
                .iter()
                .find(|(_, p)| name.starts_with(p) && name.len() > p.len())
                .ok_or_else(|| {
                    format!(
                        "attribute {}: the BSD dump format has no name index for its namespace",
                        shown()
                    )
                })?;
            Stored {
                index: *index,
                suffix: &name[prefix.len()..],
                value: value.clone(),
            }
        };
        if e.suffix.len() > 255 {
            return Err(format!(
                "attribute {}: its name is longer than the format's 255 bytes",
                shown()
            ));
        }
        // Header and end marker around the entry.
        if BLOCK_HEADER + 4 + e.cost() > WRITE_RECORD {
            return Err(format!(
                "attribute {}: its {}-byte value does not fit one {WRITE_RECORD}-byte attribute record",
                shown(),
                value.len()
            ));
        }
        entries.push(e);
    }
    entries.sort_by(|a, b| (a.index, a.suffix).cmp(&(b.index, b.suffix)));
    let mut out = Vec::new();
    let mut group: Vec<Stored> = Vec::new();
    for e in entries {
        let used = BLOCK_HEADER + 4 + group.iter().map(Stored::cost).sum::<usize>();
        if used + e.cost() > WRITE_RECORD {
            out.push(block(&std::mem::take(&mut group)));
        }
        group.push(e);
    }
    if !group.is_empty() {
        out.push(block(&group));
    }
    Ok(out)
}

/// One attribute block: header, entries, end marker, then the values in entry order.
fn block(group: &[Stored]) -> Vec<u8> {
    let entries: usize = group
        .iter()
        .map(|e| pad4(ENTRY_HEAD + e.suffix.len()))
        .sum();
    let used = BLOCK_HEADER + 4 + group.iter().map(Stored::cost).sum::<usize>();
    let mut b = vec![0u8; used.div_ceil(1024) * 1024];
    b[0..4].copy_from_slice(&MAGIC_BLOCK.to_le_bytes());
    b[4..8].copy_from_slice(&1u32.to_le_bytes()); // h_refcount
    b[8..12].copy_from_slice(&1u32.to_le_bytes()); // h_blocks
    let mut at = BLOCK_HEADER;
    let mut value_at = BLOCK_HEADER + entries + 4;
    for e in group {
        b[at] = e.suffix.len() as u8;
        b[at + 1] = e.index;
        // WRITE_RECORD keeps every offset and size below 2^16.
        b[at + 2..at + 4].copy_from_slice(&(value_at as u16).to_le_bytes());
        b[at + 8..at + 12].copy_from_slice(&(e.value.len() as u32).to_le_bytes());
        b[at + ENTRY_HEAD..at + ENTRY_HEAD + e.suffix.len()].copy_from_slice(e.suffix);
        b[value_at..value_at + e.value.len()].copy_from_slice(&e.value);
        at += pad4(ENTRY_HEAD + e.suffix.len());
        value_at += pad4(e.value.len());
    }
    b
}

/// ext2's on-disk ACL (version 1; short entries for the owner, group, mask and other) to the
/// `system.posix_acl_*` attribute value (version 2, every entry with an id).
fn acl_from_disk(v: &[u8]) -> Result<Vec<u8>, String> {
    if v.len() < 4 || le32(v, 0) != 1 {
        return Err("an ACL of an unknown version".into());
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    let mut o = 4;
    while o < v.len() {
        if o + 4 > v.len() {
            return Err(format!("an ACL entry at byte {o} is cut short"));
        }
        let tag = le16(v, o);
        let has_id =
            acl_tag_has_id(tag).ok_or_else(|| format!("an ACL entry with unknown tag {tag:#x}"))?;
        let id = if has_id {
            if o + 8 > v.len() {
                return Err(format!("an ACL entry at byte {o} is cut short"));
            }
            le32(v, o + 4)
        } else {
            u32::MAX
        };
        out.extend_from_slice(&v[o..o + 4]);
        out.extend_from_slice(&id.to_le_bytes());
        o += if has_id { 8 } else { 4 };
    }
    Ok(out)
}

/// The inverse of [`acl_from_disk`].
fn acl_to_disk(v: &[u8]) -> Result<Vec<u8>, String> {
    if v.len() < 4 || le32(v, 0) != 2 || !(v.len() - 4).is_multiple_of(8) {
        return Err("not a POSIX ACL value (version 2, 8-byte entries)".into());
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in v[4..].chunks_exact(8) {
        let tag = le16(e, 0);
        let has_id =
            acl_tag_has_id(tag).ok_or_else(|| format!("an ACL entry with unknown tag {tag:#x}"))?;
        out.extend_from_slice(&e[..4]);
        if has_id {
            out.extend_from_slice(&e[4..8]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(list: &[(&str, &[u8])]) -> Xattrs {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec()))
            .collect()
    }

    /// The attribute record of `dir1/small.txt` in the fixture level0.dump (record 1116): the
    /// in-inode form as dump 0.4b47 writes it.
    fn fixture_record() -> Vec<u8> {
        let mut r = vec![0u8; 256];
        r[0..4].copy_from_slice(&MAGIC_INODE.to_le_bytes());
        r[4..8].copy_from_slice(&[7, 1, 0x50, 0]);
        r[12..16].copy_from_slice(&11u32.to_le_bytes());
        r[20..27].copy_from_slice(b"comment");
        r[0x54..0x54 + 11].copy_from_slice(b"xattr-value");
        r
    }

    #[test]
    fn decodes_the_in_inode_form_dump_writes() {
        assert_eq!(
            decode(&fixture_record()).unwrap(),
            attrs(&[("user.comment", b"xattr-value")])
        );
    }

    #[test]
    fn encode_decode_round_trip_and_split() {
        let acl = [
            &2u32.to_le_bytes()[..],
            &[1, 0, 6, 0, 255, 255, 255, 255],
            &[2, 0, 4, 0, 0xe8, 3, 0, 0],
            &[4, 0, 4, 0, 255, 255, 255, 255],
            &[0x10, 0, 4, 0, 255, 255, 255, 255],
            &[0x20, 0, 0, 0, 255, 255, 255, 255],
        ]
        .concat();
        let long = vec![b'x'; 3000];
        let mut list = attrs(&[
            ("user.a", b""),
            ("user.b", b"\0\x01\xff"),
            ("trusted.t", b"root only"),
            ("security.selinux", b"system_u:object_r:etc_t:s0\0"),
            ("user.long", &long[..]),
            ("user.long2", &long[..]),
        ]);
        list.push((ACL_ACCESS.to_vec(), acl));
        list.sort();
        let recs = encode(&list).unwrap();
        // Two 3000-byte values cannot share one 4 KiB record.
        assert_eq!(recs.len(), 2);
        let mut back = Vec::new();
        for r in &recs {
            assert!(r.len().is_multiple_of(1024) && r.len() <= WRITE_RECORD);
            back.extend(decode(r).unwrap());
        }
        back.sort();
        assert_eq!(back, list);
        assert!(encode(&[]).unwrap().is_empty());
    }

    #[test]
    fn what_the_format_cannot_carry_is_refused_by_name() {
        let err = encode(&attrs(&[("system.nfs4_acl", b"x")])).unwrap_err();
        assert!(err.contains("system.nfs4_acl"), "{err}");
        let err = encode(&attrs(&[("user.big", &[7u8; 5000])])).unwrap_err();
        assert!(err.contains("user.big") && err.contains("5000"), "{err}");
        let long = format!("user.{}", "n".repeat(256));
        assert!(
            encode(&attrs(&[(long.as_str(), b"")]))
                .unwrap_err()
                .contains("255")
        );
    }

    #[test]
    fn malformed_records_are_refused_with_what_is_wrong() {
        let good = fixture_record();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..3].to_vec(), "no room for its magic"),
            (
                {
                    let mut r = good.clone();
                    r[0] = 9;
                    r
                },
                "unknown magic",
            ),
            // Value size far past the record: no allocation of that size, an error.
            (
                {
                    let mut r = good.clone();
                    r[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
                    r
                },
                "lies outside",
            ),
            (
                {
                    let mut r = good.clone();
                    r[6..8].copy_from_slice(&0xffffu16.to_le_bytes());
                    r
                },
                "lies outside",
            ),
            (
                {
                    let mut r = good.clone();
                    r[8..12].copy_from_slice(&5u32.to_le_bytes());
                    r
                },
                "ea_inode",
            ),
            (
                {
                    let mut r = good.clone();
                    r[5] = 42;
                    r
                },
                "name index 42",
            ),
            (
                {
                    let mut r = good.clone();
                    r[4] = 255;
                    r
                },
                "runs past the end",
            ),
            // No end marker: the entries fill the record.
            (
                {
                    let mut r = good[..28].to_vec();
                    r[6..8].fill(0);
                    r[12..16].fill(0);
                    r
                },
                "no end marker",
            ),
        ];
        for (rec, want) in cases {
            let err = decode(&rec).unwrap_err();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
        // Many entries pointing at one large value: the values may not add up to more than the
        // record (no amplification).
        let mut r = vec![0u8; 4096];
        r[0..4].copy_from_slice(&MAGIC_INODE.to_le_bytes());
        for i in 0..100 {
            let at = 4 + i * 20;
            r[at..at + 4].copy_from_slice(&[1, 1, 0x00, 0x08]); // value at 2048 + 4
            r[at + 8..at + 12].copy_from_slice(&2000u32.to_le_bytes());
            r[at + 16] = b'a' + (i % 26) as u8;
        }
        assert!(decode(&r).unwrap_err().contains("add up to more"));
        // The same name twice.
        let mut r = good.clone();
        let twice = [&r[4..28], &r[4..28]].concat();
        r[4..52].copy_from_slice(&twice);
        assert!(decode(&r).unwrap_err().contains("twice"));
    }
}
