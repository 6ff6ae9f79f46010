//! The catalog's tables and `meta` keys (docs/FORMAT.md, "Tables"). Only the catalog opens them;
//! the rest of reel calls its named operations.

use redb::{
    Key, MultimapTableDefinition, ReadOnlyTable, ReadTransaction, ReadableTable, TableDefinition,
    Value,
};

use crate::Result;
use crate::record::{self, Versioned};

/// Version of the catalog's table layout; bumped when a table or record changes shape.
/// Format 2 keeps the chunk index as sorted runs (`chunk_blocks`, `chunk_filters`); a format 1
/// catalog (one `chunks` B-tree) is upgraded when it is first opened.
pub const CATALOG_VERSION: u32 = 2;

/// Small settings: `format` (u32), `next_dump_id` (u64), `next_pack_no` (u64), `purges` (u64),
/// `chunk_index` (the chunk index's runs).
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Dump id -> postcard `DumpRecord`.
pub(super) const DUMPS: TableDefinition<u64, &[u8]> = TableDefinition::new("dumps");
/// (volume, time ns, dump id) -> (): the dumps of a volume in time order.
pub(super) const VOLUME_DUMPS: TableDefinition<(&str, i64, u64), ()> =
    TableDefinition::new("volume_dumps");
/// Pack number -> postcard `PackRecord`.
pub(super) const PACKS: TableDefinition<u64, &[u8]> = TableDefinition::new("packs");
/// Pack id (blake3 of the file) -> pack number.
pub(super) const PACK_IDS: TableDefinition<[u8; 32], u64> = TableDefinition::new("pack_ids");
/// Format 1's chunk index: chunk id -> location, 33 bytes (see `ChunkLoc::encode`). Read once,
/// to upgrade a format 1 catalog, and deleted.
pub(super) const CHUNKS_V1: TableDefinition<[u8; 32], [u8; 33]> = TableDefinition::new("chunks");
/// The chunk index's runs (`chunk_runs`): (run, first chunk id in the block) -> up to 56 rows
/// of chunk id (32 bytes) and location (33 bytes, or 33 x 0xff for a removed chunk), in id
/// order.
pub(super) const CHUNK_BLOCKS: TableDefinition<(u64, [u8; 32]), &[u8]> =
    TableDefinition::new("chunk_blocks");
/// Run -> its Bloom filter over the first 8 bytes of its chunk ids.
pub(super) const CHUNK_FILTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("chunk_filters");
/// (dump id, chunk id) -> stored len: the chunks a dump owns (referenced by it and by no
/// earlier dump of its chain). What an export of that dump writes to tape.
pub(super) const OWNED: TableDefinition<(u64, [u8; 32]), u32> = TableDefinition::new("owned");
/// (dump id, run, chunk id) -> stored len: the rows a dump being written owns, staged as sorted
/// runs until the dump folds them into `owned` (`owned_runs`). Empty between dumps: what an
/// interrupted dump left is dropped by the next writing session. Added without a format change.
pub(super) const OWNED_RUNS: TableDefinition<(u64, u32, [u8; 32]), u32> =
    TableDefinition::new("owned_runs");
/// Volume -> its latest clone (a `CloneRecord`). One per volume: a new clone replaces it.
pub(super) const CLONES: TableDefinition<&str, &[u8]> = TableDefinition::new("clones");

/// Tape label -> postcard `TapeRecord` (`crate::record`): the tapes exports wrote or
/// imports read. Added without a format change: a catalog made before it has no tapes, and
/// reel creates the table on first write.
pub(super) const TAPES: TableDefinition<&str, &[u8]> = TableDefinition::new("tapes");
/// Chunk id -> labels of the tapes holding it: what `purge --exported` and a restore from
/// tapes look up. Added without a format change, like `tapes`.
pub(super) const TAPE_CHUNKS: MultimapTableDefinition<[u8; 32], &str> =
    MultimapTableDefinition::new("tape_chunks");
/// (volume, seq) -> postcard `PlainRecord` (`crate::record`): each `export-plain` image,
/// with its level, `c_date` and path → inode map (the base of the next incrementals). Added
/// without a format change, like `tapes`: a missing table means no plain exports yet.
pub(super) const PLAIN_EXPORTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("plain_exports");

/// Pack id -> (): packs that gc (or repair) took out of the catalog but whose files are not
/// deleted yet, because a reader (restore, cat, mount) may still be reading them. The files go
/// when no reader holds the readers lock (`Spool::try_lock_readers_out`). Added without a
/// format change: a missing table means nothing is waiting.
pub(super) const DOOMED: TableDefinition<[u8; 32], ()> = TableDefinition::new("doomed");

/// Keys of the `meta` table (FORMAT.md, "Tables").
pub(super) const META_FORMAT: &str = "format";
pub(super) const META_NEXT_DUMP_ID: &str = "next_dump_id";
pub(super) const META_NEXT_PACK_NO: &str = "next_pack_no";
pub(super) const META_PURGES: &str = "purges";
/// The chunk index's runs: base, newer runs, a merge under way (postcard, `chunk_runs::State`).
pub(super) const META_CHUNK_INDEX: &str = "chunk_index";

/// Is `e` redb saying the table was never created (a catalog older than the table)?
pub(super) fn table_missing(e: &redb::TableError) -> bool {
    matches!(e, redb::TableError::TableDoesNotExist(_))
}

/// Table `def` for reading; `None` when it was never created (a catalog older than it).
pub(super) fn open_optional<K: Key + 'static, V: Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(e) if table_missing(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every record in `table` (keyed by name), decoded; a table not created yet is empty.
pub(super) fn all_records<T: Versioned>(
    txn: &ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
) -> Result<Vec<T>> {
    let Some(t) = open_optional(txn, table)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in t.iter()? {
        let (_, v) = item?;
        out.push(record::decode(v.value())?);
    }
    Ok(out)
}
