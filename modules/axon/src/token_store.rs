//! Where tracking processors keep their position: the [`TokenStore`] trait,
//! a crash-safe file store (the default) and an in-memory one.
//!
//! A stored token is the global token of the *last event published on the
//! bus*; a processor resumes at the one after it.
//!
//! # Under stress
//!
//! - **Crash (`kill -9`) or power loss**: the file store writes a new file
//!   beside the old one, `fsync`s it and renames it over the old one, so the
//!   file always holds a whole token, old or new — never a torn one.
//! - **Disk full, folder not writable**: `store` fails; the processor logs it
//!   and keeps publishing (the next checkpoint tries again), so a failing
//!   disk costs repeats after a restart, never lost events.
//! - **Unreadable file** (not a number): `load` fails and the processor does
//!   not start — rather than silently starting over from the beginning.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use telamon_sdk::bus::BoxFuture;

/// Why a token could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenStoreError {
    /// Reading or writing the store failed.
    #[error("token store {store}: {source}")]
    Io {
        /// Which store (a path).
        store: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The stored value is not a token.
    #[error("token store {store}: `{content}` is not a token")]
    Corrupt {
        /// Which store.
        store: String,
        /// What was found.
        content: String,
    },
    /// The store is not known.
    #[error("no token store `{0}` (built in: file, memory)")]
    Unknown(String),
}

/// Keeps one token per processor.
pub trait TokenStore: Send + Sync + 'static {
    /// The token stored for `processor`, if any.
    fn load<'a>(
        &'a self,
        processor: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, TokenStoreError>>;

    /// Replaces the token of `processor`; done when it is durable.
    ///
    /// The future is first polled on the tracking processor's own task (a
    /// store that is done at once costs no task); one that is not done is
    /// then run as a task of its own while the next events are published.
    /// So it must not block: slow work belongs on the blocking pool, as
    /// the file store's writing and syncing are.
    fn store<'a>(
        &'a self,
        processor: &'a str,
        token: i64,
    ) -> BoxFuture<'a, Result<(), TokenStoreError>>;

    /// What the store is (reported to AxonServer as the token store identifier).
    fn describe(&self) -> String;
}

/// Makes token stores for `token-store = "<kind>"`; implement it to plug in
/// a store of your own and register `Axon<M, YourFactory>`.
pub trait TokenStoreFactory: Send + Sync + 'static {
    /// The store of `kind` with its files (if it uses any) under `dir`.
    ///
    /// # Errors
    /// [`TokenStoreError::Unknown`] for a kind this factory does not make.
    fn open(kind: &str, dir: &Path) -> Result<Arc<dyn TokenStore>, TokenStoreError>;
}

/// The built-in stores: `file` and `memory`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltInStores;

impl TokenStoreFactory for BuiltInStores {
    fn open(kind: &str, dir: &Path) -> Result<Arc<dyn TokenStore>, TokenStoreError> {
        match kind {
            "file" => Ok(Arc::new(FileTokenStore::new(dir))),
            "memory" => Ok(Arc::new(MemoryTokenStore::default())),
            other => Err(TokenStoreError::Unknown(other.to_owned())),
        }
    }
}

/// One file per processor, `<dir>/<processor>.token`, replaced atomically.
#[derive(Debug, Clone)]
pub struct FileTokenStore {
    dir: PathBuf,
}

impl FileTokenStore {
    /// A store in `dir` (made on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileTokenStore { dir: dir.into() }
    }

    fn path(&self, processor: &str) -> PathBuf {
        self.dir.join(format!("{processor}.token"))
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TokenStoreError + '_ {
    move |source| TokenStoreError::Io {
        store: path.display().to_string(),
        source,
    }
}

impl TokenStore for FileTokenStore {
    fn load<'a>(
        &'a self,
        processor: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, TokenStoreError>> {
        let path = self.path(processor);
        Box::pin(async move {
            let read = tokio::task::spawn_blocking({
                let path = path.clone();
                move || std::fs::read_to_string(path)
            })
            .await
            .map_err(|e| io(&path)(std::io::Error::other(e)))?;
            match read {
                Ok(text) => text
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| TokenStoreError::Corrupt {
                        store: path.display().to_string(),
                        content: text.chars().take(40).collect(),
                    }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(&path)(e)),
            }
        })
    }

    fn store<'a>(
        &'a self,
        processor: &'a str,
        token: i64,
    ) -> BoxFuture<'a, Result<(), TokenStoreError>> {
        let (dir, path) = (self.dir.clone(), self.path(processor));
        Box::pin(async move {
            let shown = path.clone();
            tokio::task::spawn_blocking(move || write_atomically(&dir, &path, token))
                .await
                .map_err(|e| io(&shown)(std::io::Error::other(e)))?
                .map_err(io(&shown))
        })
    }

    fn describe(&self) -> String {
        format!("file:{}", self.dir.display())
    }
}

/// Writes `token` to a temporary file, syncs it and renames it over `path`.
fn write_atomically(dir: &Path, path: &Path, token: i64) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("token.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{token}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself survives a power loss once the folder is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Tokens in memory: lost when the process ends (every start begins at `start`).
#[derive(Debug, Default, Clone)]
pub struct MemoryTokenStore {
    tokens: Arc<Mutex<HashMap<String, i64>>>,
}

impl TokenStore for MemoryTokenStore {
    fn load<'a>(
        &'a self,
        processor: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, TokenStoreError>> {
        let token = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(processor)
            .copied();
        Box::pin(async move { Ok(token) })
    }

    fn store<'a>(
        &'a self,
        processor: &'a str,
        token: i64,
    ) -> BoxFuture<'a, Result<(), TokenStoreError>> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(processor.to_owned(), token);
        Box::pin(async { Ok(()) })
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

impl fmt::Debug for dyn TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenStore({})", self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_store_round_trips_and_refuses_a_corrupt_file() {
        let dir = std::env::temp_dir().join(format!("telamon-token-{}", crate::ids::hex8()));
        let store = FileTokenStore::new(&dir);
        assert_eq!(store.load("p").await.unwrap(), None);
        store.store("p", 41).await.unwrap();
        store.store("p", 42).await.unwrap();
        assert_eq!(store.load("p").await.unwrap(), Some(42));
        assert!(!dir.join("p.token.tmp").exists());
        std::fs::write(dir.join("q.token"), "forty-two").unwrap();
        assert!(matches!(
            store.load("q").await,
            Err(TokenStoreError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
