//! Fetching symbol files from symbol servers into a downstream store.
//!
//! [`SymbolLocator`] first searches the local directories of the symbol path
//! ([`find_symbol_file`]); when nothing is there, each `srv*<downstream>*<url>` (or
//! `symsrv*symsrv.dll*<downstream>*<url>`) element is asked, in order, for:
//! 1. `<url>/<name>/<GUID><AGE>/<name>` and the CAB-compressed `<name>.pd_` (through the
//!    [`symsrv`] crate, which downloads and unpacks);
//! 2. `<url>/<name>/<GUID><AGE>/file.ptr` (`PATH:<path>` redirects to a local or share path);
//! 3. the ISF forms `<url>/<name>/<GUID>-<AGE>.json.xz` and `<url>/<name>/<GUID><AGE>/<stem>.json.xz`.
//!
//! Only the PDB name, GUID and age leave the machine (they are the URL). A download lands in a
//! staging directory under the downstream store and is verified there (a PDB: MSF magic, then
//! GUID and age read with the `pdb` crate; an ISF table: it parses) before it is renamed into
//! `<downstream>/<name>/<GUID><AGE>/`, so a partial or corrupt file never becomes a cached one.
//! A PDB that every server lacks (all forms answered 404) is remembered in
//! `<downstream>/kds-not-found.txt` (`<unix time> <url>` lines) for a day, so the next run asks
//! nothing. Every step is logged in WinDbg's `SYMSRV:` wording for `!sym noisy`.
//!
//! The `symsrv` crate is async (tokio + reqwest); [`SymbolLocator::locate`] runs it on a small
//! current-thread runtime, so callers stay synchronous.
//!
//! ```
//! use kds_runtime::symbols::fetch::SymbolLocator;
//! use kds_runtime::symbols::sympath::SymbolPath;
//! use kds_runtime::symbols::PdbIdentity;
//!
//! let pdb = PdbIdentity {
//!     name: "ntkrnlmp.pdb".into(),
//!     guid: "68A17FAF3012B7846079AEECDBE0A583".parse().unwrap(),
//!     age: 1,
//! };
//! let locator = SymbolLocator::new(SymbolPath::parse("/nonexistent/kds-doc").unwrap());
//! let err = locator.locate(&pdb).unwrap_err();
//! assert!(err.to_string().starts_with("no symbol table for ntkrnlmp.pdb"));
//! ```

use super::store::{find_symbol_file, pdb_stem, Candidate, SymbolFileKind, SymbolSearch};
use super::sympath::{is_symsrv_dll, SymbolPath, SymbolPathElement};
use super::{load_isf_file, PdbIdentity};
use std::collections::HashMap;
use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// The name of the negative-cache file in a downstream store.
pub const NEGATIVE_CACHE_FILE: &str = "kds-not-found.txt";

/// The staging directory (under the downstream store) downloads land in before verification.
pub const STAGING_DIR: &str = ".kds-partial";

/// Reports download progress, e.g. to drive a progress bar.
pub trait DownloadProgress: Send + Sync {
    /// A download of `url` started (the server answered with a success status).
    fn started(&self, url: &str);
    /// `bytes` of `total` (when the server said) have arrived.
    fn progress(&self, url: &str, bytes: u64, total: Option<u64>);
    /// The download ended, successfully or not.
    fn finished(&self, url: &str);
}

static DEFAULT_PROGRESS: OnceLock<Arc<dyn DownloadProgress>> = OnceLock::new();

/// Set the progress observer every [`FetchOptions::default`] uses (the CLI sets one that draws
/// a bar on a terminal). Only the first call counts.
pub fn set_default_progress(progress: Arc<dyn DownloadProgress>) {
    let _ = DEFAULT_PROGRESS.set(progress);
}

/// How downloads behave.
#[derive(Clone)]
pub struct FetchOptions {
    /// The longest one request may take, connection to last byte.
    pub timeout: Duration,
    /// The longest a connection may take to open.
    pub connect_timeout: Duration,
    /// Further attempts after a failure that is not "not found" (connection, timeout, short body).
    pub retries: u32,
    /// How long a remembered miss stands.
    pub negative_cache_ttl: Duration,
    pub progress: Option<Arc<dyn DownloadProgress>>,
}

impl Default for FetchOptions {
    fn default() -> FetchOptions {
        FetchOptions {
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            retries: 2,
            negative_cache_ttl: Duration::from_secs(24 * 60 * 60),
            progress: DEFAULT_PROGRESS.get().cloned(),
        }
    }
}

impl fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchOptions")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retries", &self.retries)
            .field("negative_cache_ttl", &self.negative_cache_ttl)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Something that went wrong while fetching (a miss is not a failure).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FetchFailure {
    #[error("{url}: server unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: no answer within {seconds} s")]
    Timeout { url: String, seconds: u64 },
    #[error("{url}: download failed: {reason}")]
    Download { url: String, reason: String },
    #[error("{url}: the downloaded {file} is not usable ({reason}); it was not cached")]
    Corrupt {
        url: String,
        file: String,
        reason: String,
    },
    #[error("{url}: file.ptr: {reason}")]
    Pointer { url: String, reason: String },
    #[error("{}: {reason}", .path.display())]
    Io { path: PathBuf, reason: String },
    #[error("`{name}` is not a plain file name; no symbol server was asked for it")]
    BadName { name: String },
}

/// A symbol file found locally or downloaded, and what the search did.
#[derive(Debug, Clone)]
#[must_use]
pub struct Located {
    pub file: Candidate,
    pub search: SymbolSearch,
}

/// No symbol file: every place probed, every URL asked and every failure.
#[derive(Debug, Clone, Error)]
pub enum LocateError {
    #[error("{}", .search.describe_miss(.pdb))]
    NotFound {
        pdb: PdbIdentity,
        search: Box<SymbolSearch>,
    },
}

impl LocateError {
    /// The search behind the error.
    pub fn search(&self) -> &SymbolSearch {
        match self {
            LocateError::NotFound { search, .. } => search,
        }
    }
}

/// Finds the symbol file of a PDB identity along a symbol path, downloading when needed.
#[derive(Debug, Clone)]
pub struct SymbolLocator {
    path: SymbolPath,
    options: FetchOptions,
}

impl SymbolLocator {
    #[must_use]
    pub fn new(path: SymbolPath) -> SymbolLocator {
        SymbolLocator::with_options(path, FetchOptions::default())
    }

    #[must_use]
    pub fn with_options(path: SymbolPath, options: FetchOptions) -> SymbolLocator {
        SymbolLocator { path, options }
    }

    /// The file for `pdb`, or an error listing every place probed.
    pub fn locate(&self, pdb: &PdbIdentity) -> Result<Located, LocateError> {
        let search = self.search(pdb);
        match search.found.clone() {
            Some(file) => Ok(Located { file, search }),
            None => Err(LocateError::NotFound {
                pdb: pdb.clone(),
                search: Box::new(search),
            }),
        }
    }

    /// [`SymbolLocator::locate`] as one [`SymbolSearch`], found or not.
    pub fn search(&self, pdb: &PdbIdentity) -> SymbolSearch {
        let mut search = find_symbol_file(&self.path, pdb);
        for probe in &search.looked_in {
            if search.found.as_ref().is_some_and(|f| {
                f.path == *probe
                    || f.path
                        .to_string_lossy()
                        .eq_ignore_ascii_case(&probe.to_string_lossy())
            }) {
                continue;
            }
            search
                .log
                .push(format!("SYMSRV:  {} not found", probe.display()));
        }
        if let Some(found) = &search.found {
            search
                .log
                .push(format!("SYMSRV:  {} - found", found.path.display()));
            return search;
        }
        let servers = servers(&self.path);
        if servers.is_empty() {
            return search;
        }
        // The name comes from the target: it must not reach outside the store or the URL path.
        let plain = !pdb.name.is_empty()
            && pdb.name != "."
            && pdb.name != ".."
            && !pdb.name.contains(['/', '\\', ':', '?', '#', '%'])
            && !pdb.name.chars().any(char::is_control);
        if !plain {
            search.failures.push(FetchFailure::BadName {
                name: pdb.name.clone(),
            });
            return search;
        }
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                search.failures.push(FetchFailure::Io {
                    path: PathBuf::new(),
                    reason: format!("cannot start the download runtime: {e}"),
                });
                return search;
            }
        };
        let client = match reqwest::Client::builder()
            .timeout(self.options.timeout)
            .connect_timeout(self.options.connect_timeout)
            .http1_only()
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                search.failures.push(FetchFailure::Io {
                    path: PathBuf::new(),
                    reason: format!("cannot create the HTTP client: {e}"),
                });
                return search;
            }
        };
        for (downstream, url) in servers {
            let mut fetch = Fetch {
                options: &self.options,
                client: &client,
                downstream: &downstream,
                url: &url,
                pdb,
                search: &mut search,
            };
            if let Some(found) = runtime.block_on(fetch.run()) {
                search.found = Some(found);
                break;
            }
        }
        search
    }
}

/// Each `(downstream store, url)` pair of the path, in order. Elements without a named
/// downstream store are left out (they are reported as skipped by the local search).
fn servers(path: &SymbolPath) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut cache: Option<PathBuf> = None;
    for element in &path.elements {
        let (down, urls): (Option<PathBuf>, Vec<String>) = match element {
            SymbolPathElement::Cache(dir) => {
                if !dir.as_os_str().is_empty() {
                    cache = Some(dir.clone());
                }
                continue;
            }
            SymbolPathElement::Directory(_) => continue,
            SymbolPathElement::Server {
                downstream,
                upstream,
            } => (
                downstream.clone().filter(|d| !d.as_os_str().is_empty()),
                upstream.clone(),
            ),
            SymbolPathElement::SymSrv { dll, parts } if is_symsrv_dll(dll) => {
                let first_local = parts
                    .iter()
                    .find(|p| !super::sympath::is_url(p))
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from);
                (first_local, parts.clone())
            }
            SymbolPathElement::SymSrv { .. } => continue,
        };
        let Some(down) = down.or_else(|| cache.clone()) else {
            continue;
        };
        for url in urls.into_iter().filter(|u| super::sympath::is_url(u)) {
            out.push((down.clone(), url.trim_end_matches('/').to_string()));
        }
    }
    out
}

/// One server asked for one PDB.
struct Fetch<'a> {
    options: &'a FetchOptions,
    client: &'a reqwest::Client,
    downstream: &'a Path,
    url: &'a str,
    pdb: &'a PdbIdentity,
    search: &'a mut SymbolSearch,
}

/// What one form asked of the server came to.
enum Outcome {
    Found(Candidate),
    Missing,
    Failed,
}

impl Fetch<'_> {
    fn key_url(&self) -> String {
        format!("{}/{}/{}", self.url, self.pdb.name, self.pdb.store_key())
    }

    async fn run(&mut self) -> Option<Candidate> {
        let pdb_url = format!("{}/{}", self.key_url(), self.pdb.name);
        if let Some(since) = negative_cache_hit(self.downstream, &pdb_url, self.options) {
            self.search.asked.push(pdb_url.clone());
            self.search.log.push(format!(
                "SYMSRV:  {pdb_url} not found (remembered at {since} in {})",
                self.downstream.join(NEGATIVE_CACHE_FILE).display()
            ));
            return None;
        }
        let staging = match Staging::new(self.downstream) {
            Ok(s) => s,
            Err(failure) => {
                self.search.failures.push(failure);
                return None;
            }
        };
        let mut all_missing = true;
        for step in 0..3 {
            let outcome = match step {
                0 => self.fetch_pdb(&staging).await,
                1 => self.fetch_pointer(&staging).await,
                _ => self.fetch_isf(&staging).await,
            };
            match outcome {
                Outcome::Found(c) => return Some(c),
                Outcome::Missing => {}
                Outcome::Failed => {
                    all_missing = false;
                    // A server that is down or silent is not asked for the other forms.
                    if matches!(
                        self.search.failures.last(),
                        Some(FetchFailure::Unreachable { .. } | FetchFailure::Timeout { .. })
                    ) {
                        break;
                    }
                }
            }
        }
        if all_missing {
            remember_miss(self.downstream, &pdb_url, self.search);
        }
        None
    }

    /// The PDB, plain or compressed, through `symsrv`.
    async fn fetch_pdb(&mut self, staging: &Staging) -> Outcome {
        let pdb_url = format!("{}/{}", self.key_url(), self.pdb.name);
        let mut attempt = 0;
        loop {
            let observer = Arc::new(Observer::new(self.options.progress.clone()));
            let mut downloader =
                symsrv::SymsrvDownloader::new(vec![symsrv::NtSymbolPathEntry::Chain {
                    dll: "symsrv.dll".into(),
                    cache_paths: vec![symsrv::CachePath::Path(staging.dir.clone())],
                    urls: vec![self.url.to_string()],
                }]);
            downloader.set_observer(Some(observer.clone()));
            let key = self.pdb.store_key();
            let result = tokio::time::timeout(
                self.options.timeout,
                downloader.get_file(&self.pdb.name, &key),
            )
            .await;
            let events = observer.take();
            self.search.asked.extend(events.asked.iter().cloned());
            let failure = match result {
                Err(_) => {
                    self.search.log.push(format!(
                        "SYMSRV:  {pdb_url} - no answer within {} s",
                        self.options.timeout.as_secs()
                    ));
                    FetchFailure::Timeout {
                        url: pdb_url.clone(),
                        seconds: self.options.timeout.as_secs(),
                    }
                }
                Ok(Ok(path)) => {
                    let (url, bytes) = events.completed.first().cloned().unwrap_or_default();
                    return self.admit_pdb(staging, &path, &url, bytes);
                }
                Ok(Err(e)) => {
                    let mut failure = None;
                    for (url, reason) in &events.failed {
                        let line = match reason {
                            FailReason::NotFound => format!("SYMSRV:  {url} not found"),
                            FailReason::Connect(reason) => {
                                failure.get_or_insert_with(|| FetchFailure::Unreachable {
                                    url: url.clone(),
                                    reason: reason.clone(),
                                });
                                format!("SYMSRV:  {url} - {reason}")
                            }
                            FailReason::Other(reason) => {
                                failure.get_or_insert_with(|| FetchFailure::Download {
                                    url: url.clone(),
                                    reason: reason.clone(),
                                });
                                format!("SYMSRV:  {url} - {reason}")
                            }
                        };
                        self.search.log.push(line);
                    }
                    match (failure, e) {
                        (Some(f), _) => f,
                        (None, symsrv::Error::NotFound) => return Outcome::Missing,
                        (None, e) => FetchFailure::Download {
                            url: pdb_url.clone(),
                            reason: e.to_string(),
                        },
                    }
                }
            };
            attempt += 1;
            // A silent server is not waited for again.
            if attempt > self.options.retries || matches!(failure, FetchFailure::Timeout { .. }) {
                self.search.failures.push(failure);
                return Outcome::Failed;
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
    }

    /// Verify a PDB in the staging directory and move it into the store.
    fn admit_pdb(&mut self, staging: &Staging, path: &Path, url: &str, bytes: u64) -> Outcome {
        if let Err(reason) = verify_pdb(path, self.pdb) {
            self.search.log.push(format!(
                "SYMSRV:  {url} - {} is not a valid PDB: {reason}",
                self.pdb.name
            ));
            self.search.failures.push(FetchFailure::Corrupt {
                url: url.to_string(),
                file: self.pdb.name.clone(),
                reason,
            });
            let _ = std::fs::remove_file(path);
            return Outcome::Failed;
        }
        let dest = self
            .downstream
            .join(&self.pdb.name)
            .join(self.pdb.store_key())
            .join(&self.pdb.name);
        match staging.commit(path, &dest) {
            Ok(()) => {
                let bytes = if bytes == 0 {
                    std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0)
                } else {
                    bytes
                };
                self.search.log.push(format!(
                    "SYMSRV:  {} from {url}: {bytes} bytes - copied",
                    dest.display()
                ));
                Outcome::Found(Candidate {
                    path: dest,
                    kind: SymbolFileKind::Pdb,
                })
            }
            Err(failure) => {
                self.search.failures.push(failure);
                Outcome::Failed
            }
        }
    }

    /// `file.ptr`: `PATH:<path>` names where the file is; `MSG:<text>` says why it is not.
    async fn fetch_pointer(&mut self, staging: &Staging) -> Outcome {
        let url = format!("{}/file.ptr", self.key_url());
        let body = match self.get(&url).await {
            Ok(Some(body)) => body,
            Ok(None) => return Outcome::Missing,
            Err(()) => return Outcome::Failed,
        };
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        let target = if let Some(p) = text.strip_prefix("PATH:") {
            PathBuf::from(p.trim())
        } else {
            let reason = match text.strip_prefix("MSG:") {
                Some(msg) => format!("the server says: {}", msg.trim()),
                None => format!("neither PATH: nor MSG: in `{text}`"),
            };
            self.search.log.push(format!("SYMSRV:  {url} - {reason}"));
            self.search
                .failures
                .push(FetchFailure::Pointer { url, reason });
            return Outcome::Failed;
        };
        self.search
            .log
            .push(format!("SYMSRV:  {url} points to {}", target.display()));
        let staged = staging.dir.join(&self.pdb.name);
        match std::fs::copy(&target, &staged) {
            Ok(bytes) => {
                let shown = target.display().to_string();
                self.admit_pdb(staging, &staged, &shown, bytes)
            }
            Err(e) => {
                let reason = format!("{} cannot be read: {e}", target.display());
                self.search.log.push(format!("SYMSRV:  {url} - {reason}"));
                self.search
                    .failures
                    .push(FetchFailure::Pointer { url, reason });
                Outcome::Failed
            }
        }
    }

    /// Volatility ISF tables: `<name>/<GUID>-<AGE>.json.xz`, then `<name>/<key>/<stem>.json.xz`.
    async fn fetch_isf(&mut self, staging: &Staging) -> Outcome {
        let forms = [
            format!(
                "{}/{}/{}.json.xz",
                self.url,
                self.pdb.name,
                self.pdb.isf_stem()
            ),
            format!("{}/{}.json.xz", self.key_url(), pdb_stem(&self.pdb.name)),
        ];
        let mut outcome = Outcome::Missing;
        for url in forms {
            let body = match self.get(&url).await {
                Ok(Some(body)) => body,
                Ok(None) => continue,
                Err(()) => {
                    outcome = Outcome::Failed;
                    continue;
                }
            };
            let file = format!("{}.json.xz", self.pdb.isf_stem());
            let staged = staging.dir.join(&file);
            if let Err(e) = std::fs::write(&staged, &body) {
                self.search.failures.push(FetchFailure::Io {
                    path: staged,
                    reason: e.to_string(),
                });
                return Outcome::Failed;
            }
            if let Err(e) = load_isf_file(&staged) {
                let reason = e.to_string();
                self.search
                    .log
                    .push(format!("SYMSRV:  {url} - not a valid ISF table: {reason}"));
                self.search
                    .failures
                    .push(FetchFailure::Corrupt { url, file, reason });
                outcome = Outcome::Failed;
                continue;
            }
            let dest = self.downstream.join(&self.pdb.name).join(&file);
            if let Err(failure) = staging.commit(&staged, &dest) {
                self.search.failures.push(failure);
                return Outcome::Failed;
            }
            self.search.log.push(format!(
                "SYMSRV:  {} from {url}: {} bytes - copied",
                dest.display(),
                body.len()
            ));
            return Outcome::Found(Candidate {
                path: dest,
                kind: SymbolFileKind::IsfJsonXz,
            });
        }
        outcome
    }

    /// GET `url` with retries: `Ok(None)` for 404 (logged), `Err` after recording a failure.
    async fn get(&mut self, url: &str) -> Result<Option<Vec<u8>>, ()> {
        let mut attempt = 0;
        loop {
            self.search.asked.push(url.to_string());
            let result = async {
                let response = self.client.get(url).send().await?;
                if response.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                let response = response.error_for_status()?;
                if let Some(p) = &self.options.progress {
                    p.started(url);
                }
                let total = response.content_length();
                let mut response = response;
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    body.extend_from_slice(&chunk);
                    if let Some(p) = &self.options.progress {
                        p.progress(url, body.len() as u64, total);
                    }
                }
                if let Some(p) = &self.options.progress {
                    p.finished(url);
                }
                Ok(Some(body))
            }
            .await;
            let error: reqwest::Error = match result {
                Ok(None) => {
                    self.search.log.push(format!("SYMSRV:  {url} not found"));
                    return Ok(None);
                }
                Ok(Some(body)) => return Ok(Some(body)),
                Err(e) => e,
            };
            let reason = error_chain(&error);
            self.search.log.push(format!("SYMSRV:  {url} - {reason}"));
            attempt += 1;
            if attempt > self.options.retries || error.is_timeout() {
                let failure = if error.is_timeout() {
                    FetchFailure::Timeout {
                        url: url.to_string(),
                        seconds: self.options.timeout.as_secs(),
                    }
                } else if error.is_connect() {
                    FetchFailure::Unreachable {
                        url: url.to_string(),
                        reason,
                    }
                } else {
                    FetchFailure::Download {
                        url: url.to_string(),
                        reason,
                    }
                };
                self.search.failures.push(failure);
                return Err(());
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
    }
}

/// An error with its sources, `a: b: c`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// A private directory under the downstream store, removed on drop.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new(downstream: &Path) -> Result<Staging, FetchFailure> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = downstream
            .join(STAGING_DIR)
            .join(format!("{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| FetchFailure::Io {
            path: dir.clone(),
            reason: format!("cannot create the staging directory: {e}"),
        })?;
        Ok(Staging { dir })
    }

    /// Move a verified file into place (a rename within the store's file system).
    fn commit(&self, staged: &Path, dest: &Path) -> Result<(), FetchFailure> {
        let io = |path: &Path, e: std::io::Error| FetchFailure::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::rename(staged, dest).map_err(|e| io(dest, e))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(parent) = self.dir.parent() {
            // Only removes it when no other run is using it.
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// The MSF 7.00 signature every PDB starts with.
const MSF_MAGIC: &[u8; 32] = b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0";

/// Check that `path` is a PDB of `pdb`: MSF magic, then GUID and age from its streams.
pub fn verify_pdb(path: &Path, pdb: &PdbIdentity) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut magic = [0u8; 32];
    file.read_exact(&mut magic)
        .map_err(|_| "shorter than an MSF header".to_string())?;
    if &magic != MSF_MAGIC {
        return Err("no MSF 7.00 signature".into());
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut parsed = pdb::PDB::open(file).map_err(|e| format!("unreadable MSF: {e}"))?;
    let info = parsed
        .pdb_information()
        .map_err(|e| format!("unreadable PDB information stream: {e}"))?;
    let (d1, d2, d3, d4) = info.guid.as_fields();
    let guid = super::Guid {
        data1: d1,
        data2: d2,
        data3: d3,
        data4: *d4,
    };
    let age = parsed
        .debug_information()
        .ok()
        .and_then(|dbi| dbi.age())
        .unwrap_or(info.age);
    if guid != pdb.guid || age != pdb.age {
        return Err(format!("it is {guid}-{age}, not {}-{}", pdb.guid, pdb.age));
    }
    Ok(())
}

/// When `url` was remembered as missing in `downstream`, if that has not expired.
fn negative_cache_hit(downstream: &Path, url: &str, options: &FetchOptions) -> Option<u64> {
    let text = std::fs::read_to_string(downstream.join(NEGATIVE_CACHE_FILE)).ok()?;
    let now = unix_now();
    text.lines()
        .filter_map(|line| {
            let (time, entry) = line.split_once(' ')?;
            Some((time.parse::<u64>().ok()?, entry))
        })
        .filter(|(time, entry)| {
            *entry == url && now.saturating_sub(*time) < options.negative_cache_ttl.as_secs()
        })
        .map(|(time, _)| time)
        .max()
}

/// Append `url` to the negative cache of `downstream`.
fn remember_miss(downstream: &Path, url: &str, search: &mut SymbolSearch) {
    let path = downstream.join(NEGATIVE_CACHE_FILE);
    let result = std::fs::create_dir_all(downstream).and_then(|()| {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        file.write_all(format!("{} {url}\n", unix_now()).as_bytes())
    });
    if let Err(e) = result {
        search.failures.push(FetchFailure::Io {
            path,
            reason: format!("cannot remember the miss: {e}"),
        });
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
enum FailReason {
    NotFound,
    Connect(String),
    Other(String),
}

#[derive(Debug, Default)]
struct Events {
    urls: HashMap<u64, String>,
    asked: Vec<String>,
    failed: Vec<(String, FailReason)>,
    completed: Vec<(String, u64)>,
}

/// Collects what `symsrv` reports and forwards progress.
struct Observer {
    events: Mutex<Events>,
    progress: Option<Arc<dyn DownloadProgress>>,
}

impl Observer {
    fn new(progress: Option<Arc<dyn DownloadProgress>>) -> Observer {
        Observer {
            events: Mutex::new(Events::default()),
            progress,
        }
    }

    fn take(&self) -> Events {
        match self.events.lock() {
            Ok(mut e) => std::mem::take(&mut *e),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Events) -> T) -> T {
        match self.events.lock() {
            Ok(mut e) => f(&mut e),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    fn url(&self, id: u64) -> String {
        self.with(|e| e.urls.get(&id).cloned().unwrap_or_default())
    }
}

impl symsrv::SymsrvObserver for Observer {
    fn on_new_download_before_connect(&self, download_id: u64, url: &str) {
        self.with(|e| {
            e.urls.insert(download_id, url.to_string());
            e.asked.push(url.to_string());
        });
    }

    fn on_download_started(&self, download_id: u64) {
        if let Some(p) = &self.progress {
            p.started(&self.url(download_id));
        }
    }

    fn on_download_progress(&self, download_id: u64, bytes_so_far: u64, total_bytes: Option<u64>) {
        if let Some(p) = &self.progress {
            p.progress(&self.url(download_id), bytes_so_far, total_bytes);
        }
    }

    fn on_download_completed(
        &self,
        download_id: u64,
        uncompressed_size_in_bytes: u64,
        _time_until_headers: Duration,
        _time_until_completed: Duration,
    ) {
        let url = self.url(download_id);
        if let Some(p) = &self.progress {
            p.finished(&url);
        }
        self.with(|e| e.completed.push((url, uncompressed_size_in_bytes)));
    }

    fn on_download_failed(&self, download_id: u64, reason: symsrv::DownloadError) {
        let url = self.url(download_id);
        use symsrv::DownloadError as E;
        // `symsrv` keeps the cause inside without naming it as the source: walk it ourselves.
        let reason = match &reason {
            E::StatusError(s) if s.as_u16() == 404 => FailReason::NotFound,
            E::OpenFailed(inner) => FailReason::Connect(error_chain(inner.as_ref())),
            E::Timeout => FailReason::Connect(reason.to_string()),
            E::ErrorDuringDownloading(inner) => FailReason::Other(format!(
                "the body ended early or was malformed: {}",
                error_chain(inner)
            )),
            E::ErrorWhileWritingDownloadedFile(inner) => {
                FailReason::Other(format!("cannot write the download: {}", error_chain(inner)))
            }
            _ => FailReason::Other(error_chain(&reason)),
        };
        self.with(|e| e.failed.push((url, reason)));
    }

    fn on_download_canceled(&self, download_id: u64) {
        if let Some(p) = &self.progress {
            p.finished(&self.url(download_id));
        }
    }

    fn on_new_cab_extraction(&self, _extraction_id: u64, _dest_path: &Path) {}
    fn on_cab_extraction_progress(&self, _id: u64, _bytes_so_far: u64, _total_bytes: u64) {}
    fn on_cab_extraction_completed(
        &self,
        _extraction_id: u64,
        _total_uncompressed_size: u64,
        _time_until_completed: Duration,
    ) {
    }
    fn on_cab_extraction_failed(&self, _id: u64, reason: symsrv::CabExtractionError) {
        let reason = FailReason::Other(format!("CAB extraction failed: {}", error_chain(&reason)));
        self.with(|e| e.failed.push((String::new(), reason)));
    }
    fn on_cab_extraction_canceled(&self, _extraction_id: u64) {}
    fn on_file_created(&self, _path: &Path, _size_in_bytes: u64) {}
    fn on_file_accessed(&self, _path: &Path) {}
    fn on_file_missed(&self, _path: &Path) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers_of(text: &str) -> Vec<(String, String)> {
        servers(&SymbolPath::parse(text).unwrap())
            .into_iter()
            .map(|(d, u)| (d.display().to_string(), u))
            .collect()
    }

    #[test]
    fn each_server_with_its_downstream_store() {
        let pair = |d: &str, u: &str| (d.to_string(), u.to_string());
        assert_eq!(
            servers_of(
                "/syms;srv*/down*https://a.example/s/;symsrv*symsrv.dll*/d2*http://b.example"
            ),
            vec![
                pair("/down", "https://a.example/s"),
                pair("/d2", "http://b.example")
            ]
        );
        // `cache*` names the downstream store of the servers after it.
        assert_eq!(
            servers_of("cache*/c;srv*https://a.example;srv*/own*https://b.example"),
            vec![
                pair("/c", "https://a.example"),
                pair("/own", "https://b.example")
            ]
        );
        // No downstream store (or the default one), another DLL, the default server: not asked.
        assert!(servers_of(
            "srv*https://a.example;srv**https://b.example;symsrv*other.dll*/d*https://c.example;srv*"
        )
        .is_empty());
    }

    #[test]
    fn names_that_leave_the_store_are_not_asked_for() {
        let path = SymbolPath::parse("srv*/nonexistent/kds-down*http://127.0.0.1:9").unwrap();
        for name in ["../evil.pdb", "a/b.pdb", r"..\\x.pdb", "x.pdb?q", ".."] {
            let pdb = PdbIdentity {
                name: name.into(),
                guid: super::super::Guid::default(),
                age: 1,
            };
            let search = SymbolLocator::new(path.clone()).search(&pdb);
            assert_eq!(
                search.failures,
                vec![FetchFailure::BadName { name: name.into() }]
            );
            assert!(search.asked.is_empty());
        }
    }

    #[test]
    fn negative_cache_entries_expire() {
        let dir = std::env::temp_dir().join(format!("kds-negcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut search = SymbolSearch::default();
        remember_miss(&dir, "http://x/a.pdb/K/a.pdb", &mut search);
        assert!(search.failures.is_empty());
        let options = FetchOptions::default();
        assert!(negative_cache_hit(&dir, "http://x/a.pdb/K/a.pdb", &options).is_some());
        assert!(negative_cache_hit(&dir, "http://x/b.pdb/K/b.pdb", &options).is_none());
        std::fs::write(
            dir.join(NEGATIVE_CACHE_FILE),
            format!(
                "{} http://x/old.pdb/K/old.pdb\ngarbage line\n",
                unix_now() - 2 * 86_400
            ),
        )
        .unwrap();
        assert!(negative_cache_hit(&dir, "http://x/old.pdb/K/old.pdb", &options).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
