//! Opening a file: create the tables of a new one, refuse one from a newer version,
//! and bring a format-1 file to the current format.
//!
//! Format 1 kept each record under `author ‖ kind ‖ key` with its id in front, a
//! `by_slot` index from slot hash to that key, and the trie's leaves as nodes of
//! their own. Format 2 keys records by slot hash and stores neither ids nor leaves
//! (`tables`). Moving is done in chunks of [`CHUNK`] records, each its own commit,
//! so memory stays bounded; a crash in between resumes where it stopped, since the
//! format-1 table still holds exactly the records not yet moved.

use cirrus_proto::merkle::Node;
use cirrus_proto::record::{Author, Kind, Slot};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};

use super::StoreError;
use super::tables::*;

const V1_RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const V1_BY_SLOT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("by_slot");

/// Records moved per commit while migrating.
const CHUNK: usize = 20_000;

pub fn to_current(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    let v1 = txn.list_tables()?.any(|t| t.name() == V1_RECORDS.name());
    {
        // Create every table so that readers never meet a missing one.
        txn.open_table(SLOTS)?;
        txn.open_table(BY_KEY)?;
        txn.open_table(BY_AUTHOR)?;
        txn.open_table(PEERS)?;
        txn.open_table(TRIE)?;
        txn.open_table(RATINGS)?;
        let mut meta = txn.open_table(META)?;
        let format = meta.get(META_FORMAT)?.map(|v| v.value());
        match format {
            Some(f) if f > FORMAT => {
                return Err(StoreError::Format(format!(
                    "the database has format {f}, written by a newer version; this one reads up to {FORMAT}"
                )));
            }
            // A file without a format is new, or of format 1.
            None if !v1 => {
                meta.insert(META_FORMAT, FORMAT)?;
            }
            // An older version opened this file after it was moved, and wrote in the
            // old layout: moving again would take those writes over newer records.
            Some(_) if v1 => {
                return Err(StoreError::Format(
                    "the database was opened by an older version after it moved to this format; restore a backup or start from an empty data dir (peers fill it again)".into(),
                ));
            }
            _ => {}
        }
    }
    txn.commit()?;
    if v1 {
        from_v1(db)?;
    }
    Ok(())
}

fn from_v1(db: &Database) -> Result<(), StoreError> {
    let total = {
        let txn = db.begin_read()?;
        txn.open_table(V1_RECORDS)?.len()?
    };
    tracing::info!(
        records = total,
        "moving the database to format {FORMAT} (records by slot hash; no stored ids or leaves)"
    );
    let mut moved = 0u64;
    loop {
        let n = move_chunk(db, CHUNK)?;
        moved += n as u64;
        if n < CHUNK {
            break;
        }
        tracing::info!(moved, total, "moving the database to format {FORMAT}");
    }
    let txn = db.begin_write()?;
    {
        txn.delete_table(V1_RECORDS)?;
        txn.delete_table(V1_BY_SLOT)?;
        txn.open_table(TRIE)?
            .retain(|_, node| !matches!(Node::decode(node), Ok(Node::Leaf { .. })))?;
        txn.open_table(META)?.insert(META_FORMAT, FORMAT)?;
    }
    txn.commit()?;
    tracing::info!(moved, "the database is in format {FORMAT}");
    Ok(())
}

/// Move up to `chunk` records from the format-1 table, in one commit; returns how
/// many it moved.
fn move_chunk(db: &Database, chunk: usize) -> Result<usize, StoreError> {
    let txn = db.begin_write()?;
    let n = {
        let mut old = txn.open_table(V1_RECORDS)?;
        let mut slots = txn.open_table(SLOTS)?;
        let mut by_author = txn.open_table(BY_AUTHOR)?;
        let mut n = 0;
        while n < chunk {
            let Some((k, v)) = old.pop_first()? else {
                break;
            };
            let slot = slot_of_v1_key(k.value())
                .ok_or_else(|| StoreError::Corrupt("format-1 record key".into()))?;
            let canonical = v.value().get(32..).ok_or_else(|| {
                StoreError::Corrupt("format-1 record entry shorter than its id".into())
            })?;
            slots.insert(slot.hash().as_slice(), canonical)?;
            by_author.insert(author_key(&slot).as_slice(), ())?;
            n += 1;
        }
        n
    };
    txn.commit()?;
    Ok(n)
}

/// The slot of a format-1 primary key, `author ‖ kind ‖ key`.
fn slot_of_v1_key(k: &[u8]) -> Option<Slot> {
    let (author, rest) = k.split_at_checked(32)?;
    let (&kind, key) = rest.split_first()?;
    let author: Author = author.try_into().ok()?;
    Some(Slot {
        author,
        kind: Kind::from_byte(kind)?,
        key: std::str::from_utf8(key).ok()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use cirrus_proto::merkle::{self, MemTrie};
    use cirrus_proto::record::Record;
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::store::{ListQuery, Store, Stored};

    /// A format-1 file as the code before format 2 wrote it, trie leaves included.
    fn write_v1(path: &std::path::Path, records: &[Stored]) -> merkle::Hash {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        let mut trie = MemTrie::default();
        {
            let mut recs = txn.open_table(V1_RECORDS).unwrap();
            let mut by_slot = txn.open_table(V1_BY_SLOT).unwrap();
            let mut by_key = txn.open_table(BY_KEY).unwrap();
            for s in records {
                let slot = s.record.slot();
                let pk = [&slot.author[..], &[slot.kind.byte()], slot.key.as_bytes()].concat();
                let value = [&s.id[..], &s.record.encode()].concat();
                recs.insert(pk.as_slice(), value.as_slice()).unwrap();
                by_slot
                    .insert(slot.hash().as_slice(), pk.as_slice())
                    .unwrap();
                by_key.insert(index_key(&slot).as_slice(), ()).unwrap();
                merkle::upsert(&mut trie, &slot.hash(), &s.id).unwrap();
            }
            let mut t = txn.open_table(TRIE).unwrap();
            for (p, n) in trie.nodes() {
                t.insert(p.to_key().as_slice(), n.encode().as_slice())
                    .unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(META_RECORDS, records.len() as u64).unwrap();
        }
        txn.commit().unwrap();
        merkle::root_hash(&mut trie).unwrap()
    }

    fn records(n: usize) -> Vec<Stored> {
        (0..n)
            .map(|i| {
                let key = SigningKey::from_bytes(&[(i % 3) as u8 + 1; 32]);
                let record = Record::sign(&key, Kind::Doc, format!("k{i}"), 1, Some("v".into()));
                Stored {
                    id: record.id(),
                    record,
                }
            })
            .collect()
    }

    /// A format-1 file is moved in chunks; a stop after the first chunk resumes on
    /// the next open; the result holds every record, the same root, no leaves.
    #[test]
    fn a_format_1_file_is_moved_and_a_stop_halfway_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let all = records(50);
        let root = write_v1(&path, &all);
        {
            let db = Database::create(&path).unwrap();
            assert_eq!(move_chunk(&db, 7).unwrap(), 7);
        }
        let store = Store::open(&path).unwrap();
        let hash = store.db_hash().unwrap();
        assert_eq!((hash.root, hash.records), (root, 50));
        for s in &all {
            assert_eq!(store.get(&s.record.slot()).unwrap().as_ref(), Some(s));
        }
        let q = ListQuery {
            author: Some(all[0].record.author),
            limit: 100,
            ..Default::default()
        };
        assert_eq!(store.list(&q).unwrap().0.len(), 17);
        let usage = store.usage().unwrap();
        let of = |n: &str| usage.iter().find(|u| u.name == n).unwrap().entries;
        assert_eq!((of("slots"), of("by_author"), of("by_key")), (50, 50, 50));
        assert!(of("trie") < 50, "the leaves are gone");
        drop(store);

        let db = Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        assert!(
            !names.iter().any(|n| n == "records" || n == "by_slot"),
            "{names:?}"
        );
        let meta = txn.open_table(META).unwrap();
        assert_eq!(meta.get(META_FORMAT).unwrap().unwrap().value(), FORMAT);
    }

    /// A current file, changed by `tamper` in one transaction, then opened: the
    /// error it is refused with.
    fn refused_after(tamper: impl FnOnce(&redb::WriteTransaction)) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        drop(Store::open(&path).unwrap());
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            tamper(&txn);
            txn.commit().unwrap();
        }
        Store::open(&path).err().expect("refused").to_string()
    }

    /// An older binary that opened a moved file wrote in the old layout: the file
    /// is refused rather than moved again over newer records.
    #[test]
    fn a_moved_file_that_an_older_version_wrote_to_is_refused() {
        let err = refused_after(|txn| drop(txn.open_table(V1_RECORDS).unwrap()));
        assert!(err.contains("older version"), "{err}");
    }

    #[test]
    fn a_file_from_a_newer_version_is_refused() {
        let err = refused_after(|txn| {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(META_FORMAT, FORMAT + 1).unwrap();
        });
        assert!(err.contains("newer version"), "{err}");
    }
}
