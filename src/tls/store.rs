//! The live credentials: loaded at start, replaced whole when the files
//! change, and the rustls configs derived from them, rebuilt for the next
//! handshake after each change.
//!
//! Rebuilding (rather than swapping a certificate inside one config) also
//! drops the old configs' TLS session caches and ticket keys, so a session
//! from before a CA change is never resumed without the new checks.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tracing::error;

use super::Credentials;

/// The credentials in force.
#[derive(Debug)]
pub struct CredentialStore {
    current: ArcSwap<Credentials>,
    generation: AtomicU64,
}

impl CredentialStore {
    /// A store holding `creds`.
    pub fn new(creds: Credentials) -> Self {
        Self {
            current: ArcSwap::from_pointee(creds),
            generation: AtomicU64::new(0),
        }
    }

    /// The credentials in force.
    pub fn current(&self) -> Arc<Credentials> {
        self.current.load_full()
    }

    /// Bumped by every replacement.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts `creds` in force for new handshakes. Returns `false`, and
    /// changes nothing, when they are the same files as before.
    pub fn replace(&self, creds: Credentials) -> bool {
        if self.current.load().digest == creds.digest {
            return false;
        }
        self.current.store(Arc::new(creds));
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }
}

type Build<C> = dyn Fn(&Credentials) -> Result<Arc<C>, rustls::Error> + Send + Sync;

/// A rustls config (server or client) made from the credentials in force,
/// rebuilt on first use after they change.
pub struct Derived<C> {
    store: Arc<CredentialStore>,
    build: Box<Build<C>>,
    cached: Mutex<(u64, Arc<C>)>,
}

impl<C> Derived<C> {
    /// Builds the config once now, so a setting rustls refuses is an error
    /// at start-up or config reload rather than at the first handshake.
    pub fn new(
        store: Arc<CredentialStore>,
        build: impl Fn(&Credentials) -> Result<Arc<C>, rustls::Error> + Send + Sync + 'static,
    ) -> Result<Self, rustls::Error> {
        let generation = store.generation();
        let config = build(&store.current())?;
        Ok(Self {
            store,
            build: Box::new(build),
            cached: Mutex::new((generation, config)),
        })
    }

    /// The config for the next handshake.
    pub fn get(&self) -> Arc<C> {
        let generation = self.store.generation();
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if cached.0 != generation {
            match (self.build)(&self.store.current()) {
                Ok(config) => *cached = (generation, config),
                // Credentials are validated before they are stored, so this
                // is not expected; the previous config keeps serving.
                Err(e) => {
                    error!(error = %e, "cannot rebuild the TLS config; keeping the previous one");
                    cached.0 = generation;
                }
            }
        }
        cached.1.clone()
    }
}

impl<C> fmt::Debug for Derived<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Derived")
            .field("generation", &self.store.generation())
            .finish_non_exhaustive()
    }
}
