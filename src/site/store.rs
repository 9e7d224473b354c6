//! The site's state in SQLite: one table of resources named by their Azure Resource Manager ids
//! (every object of the simulated clouds and of Site Recovery: properties as JSON, an etag that
//! grows with every write, the order of creation), one of settings (the clock, the seed, the
//! AWS estate), and the schema's version.
//!
//! Every change happens in a [`Tx`], begun `IMMEDIATE` so two processes on one site never
//! interleave a read-modify-write (the second waits up to the busy timeout, then sees the
//! first's result). The SQL is plain (TEXT, BIGINT, one index, no SQLite-only functions) so the
//! same schema runs on PostgreSQL; the version lives in a table, not in `PRAGMA user_version`.
//! [`MIGRATIONS`] moves an older site forward when it is opened.

use crate::error::{Error, ErrorKind, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema's migrations, in order: the site is at version N once the first N have run.
pub const MIGRATIONS: &[&str] = &[
    // 1: resources and settings.
    "CREATE TABLE resources (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        parent TEXT,
        name TEXT NOT NULL,
        properties TEXT NOT NULL,
        etag BIGINT NOT NULL,
        seq BIGINT NOT NULL
     );
     CREATE INDEX resources_by_type ON resources (type, parent, seq);
     CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
];

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// An object kind kept in the store: its ARM resource type names it.
pub trait Kind: Serialize + DeserializeOwned {
    /// The ARM resource type, e.g. `Microsoft.RecoveryServices/vaults`.
    const TYPE: &'static str;
}

/// One stored object.
#[derive(Debug, Clone, Serialize)]
pub struct Resource<T> {
    /// Its ARM id.
    pub id: String,
    /// Its name (the id's last segment).
    pub name: String,
    /// The id of the object it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Grows with every write: a stale copy cannot be written back.
    #[serde(skip)]
    pub etag: i64,
    /// What it holds.
    pub properties: T,
}

/// The site's database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn sql_error(path: &Path, op: &str, e: rusqlite::Error) -> Error {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    let kind = if busy {
        ErrorKind::Conflict
    } else {
        ErrorKind::Io
    };
    let what = if busy {
        format!("{op}: another process held the site for over {BUSY_TIMEOUT:?}")
    } else {
        op.to_string()
    };
    Error::new(kind, what).with_path(path).with_source(e)
}

impl Store {
    /// Opens (or creates) the database at `path` and migrates it to the newest schema.
    ///
    /// # Errors
    /// The file cannot be opened, is not a site database, or was written by a newer ec2azure.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).map_err(|e| sql_error(path, "opening the site", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_error(path, "setting the busy timeout", e))?;
        // WAL lets readers go on while one process writes; NORMAL sync is durable at each
        // checkpoint and never corrupts (a crash loses at most the last transactions).
        let _: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| sql_error(path, "setting the journal mode", e))?;
        conn.execute_batch("PRAGMA synchronous=FULL")
            .map_err(|e| sql_error(path, "setting synchronous", e))?;
        let mut s = Store {
            conn,
            path: path.to_path_buf(),
        };
        s.migrate()?;
        Ok(s)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version the site is at.
    ///
    /// # Errors
    /// The version table cannot be read.
    pub fn version(&self) -> Result<usize> {
        schema_version(&self.conn).map_err(|e| sql_error(&self.path, "reading the version", e))
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_error(&path, "beginning the migration", e))?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .map_err(|e| sql_error(&path, "creating the version table", e))?;
        let at = schema_version(&tx).map_err(|e| sql_error(&path, "reading the version", e))?;
        if at > MIGRATIONS.len() {
            return Err(Error::unsupported(format!(
                "the site's schema is version {at}; this ec2azure knows up to {}: use a newer one",
                MIGRATIONS.len()
            ))
            .with_path(&path));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(at) {
            tx.execute_batch(m)
                .map_err(|e| sql_error(&path, &format!("migrating to version {}", i + 1), e))?;
        }
        if at < MIGRATIONS.len() {
            tx.execute("DELETE FROM schema_version", [])
                .and_then(|_| {
                    tx.execute(
                        "INSERT INTO schema_version (version) VALUES (?1)",
                        params![MIGRATIONS.len() as i64],
                    )
                })
                .map_err(|e| sql_error(&path, "recording the version", e))?;
        }
        tx.commit()
            .map_err(|e| sql_error(&path, "committing the migration", e))
    }

    /// Runs `f` in one transaction: all its writes land together or none does. Begun
    /// `IMMEDIATE`, so a concurrent writer waits instead of failing at commit.
    ///
    /// # Errors
    /// `f`'s error (nothing is written), or the database's.
    pub fn tx<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let t = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_error(&path, "beginning a transaction", e))?;
        let out = f(&Tx {
            tx: &t,
            path: &path,
        })?;
        t.commit()
            .map_err(|e| sql_error(&path, "committing a transaction", e))?;
        Ok(out)
    }
}

fn schema_version(c: &Connection) -> rusqlite::Result<usize> {
    let exists: Option<String> = c
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(0);
    }
    let v: Option<i64> = c
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(usize::try_from(v.unwrap_or(0)).unwrap_or(0))
}

/// One transaction on the store.
pub struct Tx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    path: &'a Path,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("path", &self.path).finish()
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::invalid(format!("encoding a resource: {e}")))
}

fn from_json<T: DeserializeOwned>(id: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("the stored resource {id} does not decode: {e}")))
}

type Row = (String, String, Option<String>, String, i64);

impl Tx<'_> {
    fn err(&self, op: &str, e: rusqlite::Error) -> Error {
        sql_error(self.path, op, e)
    }

    /// The object `id` of kind `T`, if it exists.
    ///
    /// # Errors
    /// It exists with another type, or does not decode.
    pub fn find<T: Kind>(&self, id: &str) -> Result<Option<Resource<T>>> {
        let row: Option<(String, String, Option<String>, String, i64)> = self
            .tx
            .query_row(
                "SELECT type, name, parent, properties, etag FROM resources WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(|e| self.err("reading a resource", e))?;
        let Some((ty, name, parent, props, etag)) = row else {
            return Ok(None);
        };
        if ty != T::TYPE {
            return Err(Error::conflict(format!(
                "{id} is a {ty}, not a {}",
                T::TYPE
            )));
        }
        Ok(Some(Resource {
            id: id.to_string(),
            name,
            parent,
            etag,
            properties: from_json(id, &props)?,
        }))
    }

    /// The object `id` of kind `T`.
    ///
    /// # Errors
    /// It does not exist (NotFound), has another type, or does not decode.
    pub fn get<T: Kind>(&self, id: &str) -> Result<Resource<T>> {
        self.find(id)?
            .ok_or_else(|| Error::not_found(format!("{id} does not exist")))
    }

    /// Every object of kind `T` (under `parent` when given), in the order they were made.
    ///
    /// # Errors
    /// The table cannot be read or an object does not decode.
    pub fn list<T: Kind>(&self, parent: Option<&str>) -> Result<Vec<Resource<T>>> {
        let mut st = self
            .tx
            .prepare_cached(
                "SELECT id, name, parent, properties, etag FROM resources
                 WHERE type = ?1 AND (?2 IS NULL OR parent = ?2) ORDER BY seq",
            )
            .map_err(|e| self.err("listing resources", e))?;
        let rows: Vec<Row> = st
            .query_map(params![T::TYPE, parent], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .and_then(|it| it.collect())
            .map_err(|e| self.err("listing resources", e))?;
        rows.into_iter()
            .map(|(id, name, parent, props, etag)| {
                let properties = from_json(&id, &props)?;
                Ok(Resource {
                    id,
                    name,
                    parent,
                    etag,
                    properties,
                })
            })
            .collect()
    }

    /// Stores a new object.
    ///
    /// # Errors
    /// An object with that id exists (Conflict), or writing fails.
    pub fn insert<T: Kind + Clone>(
        &self,
        id: &str,
        parent: Option<&str>,
        properties: &T,
    ) -> Result<Resource<T>> {
        let name = id.rsplit('/').next().unwrap_or(id).to_string();
        if self.exists(id)? {
            return Err(Error::conflict(format!("{id} exists already")));
        }
        let seq: i64 = self
            .tx
            .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM resources", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.err("numbering a resource", e))?;
        self.tx
            .execute(
                "INSERT INTO resources (id, type, parent, name, properties, etag, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)",
                params![id, T::TYPE, parent, name, to_json(properties)?, seq],
            )
            .map_err(|e| self.err("storing a resource", e))?;
        Ok(Resource {
            id: id.to_string(),
            name,
            parent: parent.map(str::to_string),
            etag: 1,
            properties: properties.clone(),
        })
    }

    /// Writes back an object read in this transaction (or earlier): refused when another
    /// write happened since it was read (its etag moved), so no update is lost.
    ///
    /// # Errors
    /// The object is gone or was changed meanwhile (Conflict), or writing fails.
    pub fn update<T: Kind>(&self, r: &mut Resource<T>) -> Result<()> {
        let n = self
            .tx
            .execute(
                "UPDATE resources SET properties = ?1, etag = etag + 1
                 WHERE id = ?2 AND type = ?3 AND etag = ?4",
                params![to_json(&r.properties)?, r.id, T::TYPE, r.etag],
            )
            .map_err(|e| self.err("updating a resource", e))?;
        if n != 1 {
            return Err(Error::conflict(format!(
                "{} was changed or removed by another operation since it was read",
                r.id
            )));
        }
        r.etag += 1;
        Ok(())
    }

    /// Whether an object with this id exists (of any kind).
    ///
    /// # Errors
    /// The table cannot be read.
    pub fn exists(&self, id: &str) -> Result<bool> {
        self.tx
            .query_row("SELECT 1 FROM resources WHERE id = ?1", params![id], |_| {
                Ok(())
            })
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err("reading a resource", e))
    }

    /// Removes an object and everything under it.
    ///
    /// # Errors
    /// Writing fails.
    pub fn delete(&self, id: &str) -> Result<()> {
        let prefix = format!("{id}/");
        self.tx
            .execute(
                "DELETE FROM resources WHERE id = ?1 OR substr(id, 1, ?3) = ?2",
                params![id, prefix, prefix.len() as i64],
            )
            .map_err(|e| self.err("removing a resource", e))?;
        Ok(())
    }

    /// A setting's value, decoded.
    ///
    /// # Errors
    /// It does not decode.
    pub fn setting<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let v: Option<String> = self
            .tx
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err("reading a setting", e))?;
        v.map(|t| from_json(key, &t)).transpose()
    }

    /// Sets a setting.
    ///
    /// # Errors
    /// Writing fails.
    pub fn set_setting<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let text = to_json(value)?;
        let n = self
            .tx
            .execute(
                "UPDATE settings SET value = ?2 WHERE key = ?1",
                params![key, text],
            )
            .map_err(|e| self.err("writing a setting", e))?;
        if n == 0 {
            self.tx
                .execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)",
                    params![key, text],
                )
                .map_err(|e| self.err("writing a setting", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Thing {
        n: u32,
    }
    impl Kind for Thing {
        const TYPE: &'static str = "Test/things";
    }
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Other {}
    impl Kind for Other {
        const TYPE: &'static str = "Test/others";
    }

    #[test]
    fn resources_round_trip_and_stale_writes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("site.db")).unwrap();
        assert_eq!(s.version().unwrap(), MIGRATIONS.len());
        s.tx(|t| {
            t.insert("/a", None, &Thing { n: 1 })?;
            t.insert("/a/b", Some("/a"), &Thing { n: 2 })?;
            t.insert("/ab", None, &Thing { n: 3 })?;
            Ok(())
        })
        .unwrap();
        let err = s
            .tx(|t| t.insert("/a", None, &Thing { n: 9 }).map(|_| ()))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        let mut stale = s.tx(|t| t.get::<Thing>("/a")).unwrap();
        s.tx(|t| {
            let mut a = t.get::<Thing>("/a")?;
            a.properties.n = 10;
            t.update(&mut a)
        })
        .unwrap();
        stale.properties.n = 11;
        let err = s.tx(|t| t.update(&mut stale)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(s.tx(|t| t.get::<Thing>("/a")).unwrap().properties.n, 10);
        let wrong = s.tx(|t| t.get::<Other>("/a")).unwrap_err();
        assert_eq!(wrong.kind(), ErrorKind::Conflict);
        let under: Vec<u32> = s
            .tx(|t| t.list::<Thing>(Some("/a")))
            .unwrap()
            .into_iter()
            .map(|r| r.properties.n)
            .collect();
        assert_eq!(under, [2]);
        // A failed transaction writes nothing.
        let _ = s.tx(|t| {
            t.insert("/c", None, &Thing { n: 4 })?;
            Err::<(), _>(Error::argument("no"))
        });
        assert!(!s.tx(|t| t.exists("/c")).unwrap());
        // Deleting removes the subtree and nothing that merely shares the prefix.
        s.tx(|t| t.delete("/a")).unwrap();
        let left: Vec<String> = s
            .tx(|t| t.list::<Thing>(None))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, ["/ab"]);
        s.tx(|t| {
            t.set_setting("k", &5u32)?;
            t.set_setting("k", &6u32)
        })
        .unwrap();
        assert_eq!(s.tx(|t| t.setting::<u32>("k")).unwrap(), Some(6));
    }

    #[test]
    fn a_newer_schema_is_refused_and_an_older_one_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("site.db");
        drop(Store::open(&p).unwrap());
        {
            let c = Connection::open(&p).unwrap();
            c.execute("UPDATE schema_version SET version = 99", [])
                .unwrap();
        }
        let err = Store::open(&p).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.to_string().contains("version 99"), "{err}");
        // A database at version 0 (an empty file) is brought forward.
        let q = dir.path().join("old.db");
        drop(Connection::open(&q).unwrap());
        assert_eq!(
            Store::open(&q).unwrap().version().unwrap(),
            MIGRATIONS.len()
        );
    }

    #[test]
    fn two_connections_do_not_lose_updates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("site.db");
        let mut s = Store::open(&p).unwrap();
        s.tx(|t| t.insert("/n", None, &Thing { n: 0 }).map(|_| ()))
            .unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let mut s = Store::open(&p).unwrap();
                    for _ in 0..25 {
                        s.tx(|t| {
                            let mut r = t.get::<Thing>("/n")?;
                            r.properties.n += 1;
                            t.update(&mut r)
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.tx(|t| t.get::<Thing>("/n")).unwrap().properties.n, 100);
    }
}
