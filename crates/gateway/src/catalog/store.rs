//! Where the entities are kept: records under keys, written in one transaction per change.
//!
//! A single node keeps them in a `redb` file under its data directory: copy-on-write pages
//! and a checksummed commit slot, so a process killed in the middle of a write comes back
//! with the last committed transaction whole, and a write is acknowledged only once it is
//! durable on disk. Without a data directory they live in memory and the configuration file
//! is all that outlives the process.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

/// The one table: key → JSON record.
const RECORDS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("records");

/// The store's file name under the data directory.
pub(crate) const FILE_NAME: &str = "entities.redb";

/// The store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be read or written.
    #[error("entity store at {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The cluster's shared store refused or did not answer.
    #[error("cluster store: {0}")]
    Shared(String),
    /// A record does not decode.
    #[error("entity store holds a record that does not decode: {0}")]
    Corrupt(String),
}

/// Keeps records.
pub(crate) trait Store: Send + Sync {
    /// Every record.
    fn load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Puts and deletes records in one transaction, returning once it is durable, with the
    /// store's revision for it if the store is shared.
    fn apply(
        &self,
        puts: &[(String, Vec<u8>)],
        deletes: &[String],
    ) -> Result<Option<i64>, StoreError>;
}

/// No store: the model in memory is all there is.
pub(crate) struct Memory;

impl Store for Memory {
    fn load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(Vec::new())
    }

    fn apply(&self, _: &[(String, Vec<u8>)], _: &[String]) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }
}

/// A `redb` database file.
pub(crate) struct Redb {
    db: Database,
    path: PathBuf,
}

impl Redb {
    /// Opens (or creates) the store in `dir`, creating the directory.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        let fail = |e: &dyn std::fmt::Display| StoreError::Io {
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let db = Database::create(&path).map_err(|e| fail(&e))?;
        // The table exists from the first start on, so reads never meet its absence.
        let txn = db.begin_write().map_err(|e| fail(&e))?;
        txn.open_table(RECORDS).map_err(|e| fail(&e))?;
        txn.commit().map_err(|e| fail(&e))?;
        Ok(Self { db, path })
    }

    fn fail(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

impl Store for Redb {
    fn load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(RECORDS).map_err(|e| self.fail(e))?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(|e| self.fail(e))? {
            let (k, v) = entry.map_err(|e| self.fail(e))?;
            records.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(records)
    }

    fn apply(
        &self,
        puts: &[(String, Vec<u8>)],
        deletes: &[String],
    ) -> Result<Option<i64>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.fail(e))?;
            for (k, v) in puts {
                table
                    .insert(k.as_str(), v.as_slice())
                    .map_err(|e| self.fail(e))?;
            }
            for k in deletes {
                table.remove(k.as_str()).map_err(|e| self.fail(e))?;
            }
        }
        // Durability::Immediate (the default): committed means on disk.
        txn.commit().map_err(|e| self.fail(e))?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_outlive_the_process_that_wrote_them() {
        let dir = std::env::temp_dir().join(format!("ferry-store-{}", rand::random::<u64>()));
        {
            let store = Redb::open(&dir).unwrap();
            store
                .apply(
                    &[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
                    &[],
                )
                .unwrap();
            store.apply(&[], &["a".into()]).unwrap();
        }
        let store = Redb::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), [("b".to_owned(), b"2".to_vec())]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
