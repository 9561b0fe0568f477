//! Finding the symbol table for a PDB identity in the local directories of a symbol path.
//!
//! Each local directory (plain directories, `cache*` directories, the stores of `srv*`
//! elements) is probed, in this order, for:
//! 1. `<dir>/<pdb>/<GUID>-<AGE>.json.xz` and `.json` (Volatility ISF tables, as in `symbols/`);
//! 2. `<dir>/windows/<pdb>/<GUID>-<AGE>.json.xz` and `.json` (a Volatility 3 `symbols` dir);
//! 3. `<dir>/<pdb>/<GUID><AGE hex>/` holding `<stem>.json.xz`, `<stem>.json` or `<pdb>` itself
//!    (the symbol store layout, with an ISF table beside or instead of the PDB).
//!
//! Names are matched case-insensitively, as on the Windows stores they come from: when the
//! exact name is absent the directory is listed to find it in another case.
//!
//! ```
//! use kds_runtime::symbols::store::find_symbol_file;
//! use kds_runtime::symbols::sympath::SymbolPath;
//! use kds_runtime::symbols::PdbIdentity;
//!
//! let pdb = PdbIdentity {
//!     name: "ntkrnlmp.pdb".into(),
//!     guid: "68A17FAF3012B7846079AEECDBE0A583".parse().unwrap(),
//!     age: 1,
//! };
//! let path = SymbolPath::parse("/nonexistent/kds-doc;srv*https://msdl.microsoft.com/download/symbols").unwrap();
//! let search = find_symbol_file(&path, &pdb);
//! assert!(search.found.is_none());
//! assert!(search.describe_miss(&pdb).starts_with(
//!     "no symbol table for ntkrnlmp.pdb 68A17FAF3012B7846079AEECDBE0A583-1; looked in:\n  \
//!      /nonexistent/kds-doc/ntkrnlmp.pdb/68A17FAF3012B7846079AEECDBE0A583-1.json.xz\n"
//! ));
//! ```

use super::fetch::FetchFailure;
use super::sympath::{is_symsrv_dll, SymbolPath, SymbolPathElement, MICROSOFT_SYMBOL_SERVER};
use super::PdbIdentity;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a found file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SymbolFileKind {
    /// A Volatility ISF table, plain JSON.
    IsfJson,
    /// A Volatility ISF table, xz-compressed JSON.
    IsfJsonXz,
    /// A real PDB (store layout).
    Pdb,
}

/// A file that should hold the symbols of a PDB identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The path as it exists on disk (real case).
    pub path: PathBuf,
    pub kind: SymbolFileKind,
}

/// The outcome of a search, found or not, with everything needed to explain a miss.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[must_use]
pub struct SymbolSearch {
    pub found: Option<Candidate>,
    /// Every path probed, in order (the found one last).
    pub looked_in: Vec<PathBuf>,
    /// Symbol-path elements not searched, each with the reason.
    pub skipped: Vec<String>,
    /// Every URL requested (or skipped as a remembered miss), in order.
    pub asked: Vec<String>,
    /// What went wrong on the way (server down, timeouts, corrupt downloads).
    pub failures: Vec<FetchFailure>,
    /// What was done, in WinDbg's `SYMSRV:` wording (for `!sym noisy`).
    pub log: Vec<String>,
}

impl SymbolSearch {
    /// The message for a miss: the identity, every path probed and every element skipped.
    #[must_use]
    pub fn describe_miss(&self, pdb: &PdbIdentity) -> String {
        let mut out = format!("no symbol table for {pdb}");
        if self.looked_in.is_empty() {
            out.push_str(
                "; the symbol path names no local directory (set it with -y or _NT_SYMBOL_PATH)",
            );
        } else {
            out.push_str("; looked in:");
            for path in &self.looked_in {
                let _ = write!(out, "\n  {}", path.display());
            }
        }
        if !self.asked.is_empty() {
            out.push_str("\nasked:");
            for url in &self.asked {
                let _ = write!(out, "\n  {url}");
            }
        }
        if !self.failures.is_empty() {
            out.push_str("\nfailed:");
            for failure in &self.failures {
                let _ = write!(out, "\n  {failure}");
            }
        }
        if !self.skipped.is_empty() {
            out.push_str("\nskipped:");
            for reason in &self.skipped {
                let _ = write!(out, "\n  {reason}");
            }
        }
        out
    }
}

/// Search the local directories of `path`, in order, for the table or PDB of `pdb`.
pub fn find_symbol_file(path: &SymbolPath, pdb: &PdbIdentity) -> SymbolSearch {
    let mut search = SymbolSearch::default();
    let mut searched: Vec<&Path> = Vec::new();
    let mut has_cache = false;
    for element in &path.elements {
        if matches!(element, SymbolPathElement::Cache(dir) if !dir.as_os_str().is_empty()) {
            has_cache = true;
        }
        for dir in element.local_dirs() {
            if searched.contains(&dir) {
                continue;
            }
            searched.push(dir);
            if let Some(reason) = unreachable_here(dir) {
                search.skipped.push(format!("{} : {reason}", dir.display()));
                continue;
            }
            if let Some(found) = probe_dir(dir, pdb, &mut search.looked_in) {
                search.found = Some(found);
                return search;
            }
        }
        if let Some(reason) = not_searched(element, has_cache) {
            search.skipped.push(format!("{element} : {reason}"));
        }
    }
    search
}

/// Why (part of) an element is not searched locally, if it is not.
fn not_searched(element: &SymbolPathElement, has_cache: bool) -> Option<String> {
    const DOWNLOAD: &str =
        "kds downloads only into a named downstream store (srv*<dir>*<url> or cache*<dir> before it)";
    match element {
        SymbolPathElement::Directory(_) => None,
        SymbolPathElement::Cache(dir) if dir.as_os_str().is_empty() => {
            Some("kds has no default cache directory; name one (cache*<dir>)".into())
        }
        SymbolPathElement::Cache(_) => None,
        SymbolPathElement::Server { upstream, .. } if upstream.is_empty() => Some(format!(
            "the default symbol store ({MICROSOFT_SYMBOL_SERVER}): {DOWNLOAD}"
        )),
        SymbolPathElement::SymSrv { dll, .. } if !is_symsrv_dll(dll) => {
            Some(format!("only symsrv.dll stores are understood, not {dll}"))
        }
        SymbolPathElement::Server { .. } | SymbolPathElement::SymSrv { .. } => {
            let default_downstream = matches!(
                element,
                SymbolPathElement::Server { downstream: Some(d), .. } if d.as_os_str().is_empty()
            ) || matches!(
                element,
                SymbolPathElement::SymSrv { parts, .. } if parts.first().is_some_and(String::is_empty)
            );
            let mut reasons = Vec::new();
            if default_downstream {
                reasons.push(
                    "kds has no default downstream store; name one (srv*<dir>*<url>)".to_string(),
                );
            }
            let named_downstream = has_cache
                || element
                    .local_dirs()
                    .first()
                    .is_some_and(|d| !d.as_os_str().is_empty());
            let remote = element.remote_stores();
            if !remote.is_empty() && !named_downstream && !default_downstream {
                reasons.push(format!("{}: {DOWNLOAD}", remote.join(", ")));
            }
            (!reasons.is_empty()).then(|| reasons.join("; "))
        }
    }
}

/// Paths that only mean something on Windows (UNC shares, drive letters), elsewhere.
fn unreachable_here(dir: &Path) -> Option<&'static str> {
    if cfg!(windows) {
        return None;
    }
    let text = dir.to_string_lossy();
    let bytes = text.as_bytes();
    if text.starts_with(r"\\") {
        Some("a UNC share is only reachable on Windows")
    } else if bytes.len() >= 3
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && (bytes[2] == b'\\' || bytes[2] == b'/')
    {
        Some("a drive-letter path is only reachable on Windows")
    } else {
        None
    }
}

/// Probe one directory in the documented order, recording each path tried.
fn probe_dir(dir: &Path, pdb: &PdbIdentity, looked_in: &mut Vec<PathBuf>) -> Option<Candidate> {
    let isf_stem = pdb.isf_stem();
    let isf_files = [
        (format!("{isf_stem}.json.xz"), SymbolFileKind::IsfJsonXz),
        (format!("{isf_stem}.json"), SymbolFileKind::IsfJson),
    ];
    // 1 and 2: ISF tables under <dir>/<pdb>/ and <dir>/windows/<pdb>/.
    for prefix in [&[][..], &["windows"][..]] {
        let mut components: Vec<&str> = prefix.to_vec();
        components.push(&pdb.name);
        for (file, kind) in &isf_files {
            components.push(file);
            if let Some(found) = probe(dir, &components, *kind, looked_in) {
                return Some(found);
            }
            components.pop();
        }
    }
    // 3: store layout <dir>/<pdb>/<GUID><AGE hex>/.
    let key = pdb.store_key();
    let stem = pdb_stem(&pdb.name);
    let store_files = [
        (format!("{stem}.json.xz"), SymbolFileKind::IsfJsonXz),
        (format!("{stem}.json"), SymbolFileKind::IsfJson),
        (pdb.name.clone(), SymbolFileKind::Pdb),
    ];
    for (file, kind) in &store_files {
        if let Some(found) = probe(dir, &[&pdb.name, &key, file], *kind, looked_in) {
            return Some(found);
        }
    }
    None
}

/// `ntkrnlmp.pdb` -> `ntkrnlmp`; a name without the extension stays as it is.
pub(crate) fn pdb_stem(name: &str) -> &str {
    match name.len().checked_sub(4) {
        Some(cut) if name.is_char_boundary(cut) && name[cut..].eq_ignore_ascii_case(".pdb") => {
            &name[..cut]
        }
        _ => name,
    }
}

/// Record `dir/components...` as probed and return it if it exists as a file, in any case.
fn probe(
    dir: &Path,
    components: &[&str],
    kind: SymbolFileKind,
    looked_in: &mut Vec<PathBuf>,
) -> Option<Candidate> {
    let mut expected = dir.to_path_buf();
    expected.extend(components);
    looked_in.push(expected);
    let mut real = dir.to_path_buf();
    for component in components {
        real = resolve_case_insensitive(&real, component)?;
    }
    real.is_file().then_some(Candidate { path: real, kind })
}

/// `dir/name` if it exists; else the entry of `dir` whose name equals `name` ignoring ASCII
/// case (the first in sorted order, for a stable answer on case-sensitive file systems).
fn resolve_case_insensitive(dir: &Path, name: &str) -> Option<PathBuf> {
    let exact = dir.join(name);
    if exact.exists() {
        return Some(exact);
    }
    let mut matches: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|entry| entry.path())
        .collect();
    matches.sort();
    matches.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const GUID: &str = "68A17FAF3012B7846079AEECDBE0A583";

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("kds-store-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn file(&self, rel: &str) -> PathBuf {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, b"{}").unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn kernel(age: u32) -> PdbIdentity {
        PdbIdentity {
            name: "ntkrnlmp.pdb".into(),
            guid: GUID.parse().unwrap(),
            age,
        }
    }

    fn path_of(dirs: &[&Path]) -> SymbolPath {
        let text: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        SymbolPath::parse(&text.join(";")).unwrap()
    }

    #[test]
    fn volatility_layout_prefers_xz() {
        let t = TempDir::new("vol");
        t.file(&format!("ntkrnlmp.pdb/{GUID}-1.json"));
        let xz = t.file(&format!("ntkrnlmp.pdb/{GUID}-1.json.xz"));
        let search = find_symbol_file(&path_of(&[&t.0]), &kernel(1));
        assert_eq!(
            search.found,
            Some(Candidate {
                path: xz.clone(),
                kind: SymbolFileKind::IsfJsonXz
            })
        );
        assert_eq!(search.looked_in, vec![xz]);
        assert!(search.skipped.is_empty());
    }

    #[test]
    fn volatility_layout_plain_json() {
        let t = TempDir::new("json");
        let json = t.file(&format!("ntkrnlmp.pdb/{GUID}-26.json"));
        let search = find_symbol_file(&path_of(&[&t.0]), &kernel(26));
        assert_eq!(
            search.found,
            Some(Candidate {
                path: json,
                kind: SymbolFileKind::IsfJson
            })
        );
        assert_eq!(search.looked_in.len(), 2);
    }

    #[test]
    fn volatility3_symbols_directory() {
        let t = TempDir::new("vol3");
        let xz = t.file(&format!("windows/ntkrnlmp.pdb/{GUID}-1.json.xz"));
        let search = find_symbol_file(&path_of(&[&t.0]), &kernel(1));
        assert_eq!(search.found.map(|c| c.path), Some(xz));
        assert_eq!(search.looked_in.len(), 3);
    }

    #[test]
    fn store_layout_isf_and_pdb() {
        let t = TempDir::new("store");
        // Age 26 is `1A` in the store key.
        let pdb = t.file(&format!("ntkrnlmp.pdb/{GUID}1A/ntkrnlmp.pdb"));
        let search = find_symbol_file(&path_of(&[&t.0]), &kernel(26));
        assert_eq!(
            search.found,
            Some(Candidate {
                path: pdb,
                kind: SymbolFileKind::Pdb
            })
        );
        assert_eq!(
            search.looked_in[4..],
            [
                t.0.join(format!("ntkrnlmp.pdb/{GUID}1A/ntkrnlmp.json.xz")),
                t.0.join(format!("ntkrnlmp.pdb/{GUID}1A/ntkrnlmp.json")),
                t.0.join(format!("ntkrnlmp.pdb/{GUID}1A/ntkrnlmp.pdb")),
            ]
        );

        let isf = t.file(&format!("ntkrnlmp.pdb/{GUID}1A/ntkrnlmp.json.xz"));
        let search = find_symbol_file(&path_of(&[&t.0]), &kernel(26));
        assert_eq!(
            search.found,
            Some(Candidate {
                path: isf,
                kind: SymbolFileKind::IsfJsonXz
            })
        );
    }

    #[test]
    fn downstream_store_of_a_server_element_is_searched() {
        let t = TempDir::new("srv");
        let pdb = t.file(&format!("ntkrnlmp.pdb/{GUID}1/ntkrnlmp.pdb"));
        let path = SymbolPath::parse(&format!(
            "srv*{}*https://msdl.microsoft.com/download/symbols",
            t.0.display()
        ))
        .unwrap();
        let search = find_symbol_file(&path, &kernel(1));
        assert_eq!(search.found.map(|c| c.path), Some(pdb));
        assert!(search.skipped.is_empty());
    }

    #[test]
    fn names_match_in_any_case() {
        let t = TempDir::new("case");
        let real = t.file(&format!("NTKRNLMP.PDB/{}-1.json.xz", GUID.to_lowercase()));
        let search = find_symbol_file(&path_of(&[&t.0]), &kernel(1));
        assert_eq!(search.found.map(|c| c.path), Some(real));
        // The probe is recorded in the expected case.
        assert_eq!(
            search.looked_in,
            vec![t.0.join(format!("ntkrnlmp.pdb/{GUID}-1.json.xz"))]
        );

        let t = TempDir::new("case-store");
        let real = t.file(&format!(
            "NtKrnlMp.pdb/{}1/NTKRNLMP.PDB",
            GUID.to_lowercase()
        ));
        let search = find_symbol_file(&path_of(&[&t.0]), &kernel(1));
        assert_eq!(
            search.found,
            Some(Candidate {
                path: real,
                kind: SymbolFileKind::Pdb
            })
        );
    }

    #[test]
    fn first_directory_wins_and_directories_are_searched_once() {
        let a = TempDir::new("first-a");
        let b = TempDir::new("first-b");
        b.file(&format!("ntkrnlmp.pdb/{GUID}-1.json.xz"));
        let found_in_a = a.file(&format!("windows/ntkrnlmp.pdb/{GUID}-1.json"));
        let search = find_symbol_file(&path_of(&[&a.0, &b.0]), &kernel(1));
        assert_eq!(search.found.map(|c| c.path), Some(found_in_a));

        let empty = TempDir::new("once");
        let path = SymbolPath::parse(&format!(
            "{0};cache*{0};srv*{0}*https://a.example",
            empty.0.display()
        ))
        .unwrap();
        assert_eq!(find_symbol_file(&path, &kernel(1)).looked_in.len(), 7);
    }

    #[test]
    fn a_directory_is_not_a_table() {
        let t = TempDir::new("dir");
        fs::create_dir_all(t.0.join(format!("ntkrnlmp.pdb/{GUID}-1.json.xz"))).unwrap();
        assert_eq!(find_symbol_file(&path_of(&[&t.0]), &kernel(1)).found, None);
    }

    #[test]
    fn miss_lists_every_probe_and_every_skip() {
        let t = TempDir::new("miss");
        let path = SymbolPath::parse(&format!(
            "{};srv*https://msdl.microsoft.com/download/symbols;cache*;symsrv*other.dll*x",
            t.0.display()
        ))
        .unwrap();
        let pdb = kernel(1);
        let search = find_symbol_file(&path, &pdb);
        assert_eq!(search.found, None);
        let d = t.0.display();
        let expected = format!(
            "no symbol table for ntkrnlmp.pdb {GUID}-1; looked in:
  {d}/ntkrnlmp.pdb/{GUID}-1.json.xz
  {d}/ntkrnlmp.pdb/{GUID}-1.json
  {d}/windows/ntkrnlmp.pdb/{GUID}-1.json.xz
  {d}/windows/ntkrnlmp.pdb/{GUID}-1.json
  {d}/ntkrnlmp.pdb/{GUID}1/ntkrnlmp.json.xz
  {d}/ntkrnlmp.pdb/{GUID}1/ntkrnlmp.json
  {d}/ntkrnlmp.pdb/{GUID}1/ntkrnlmp.pdb
skipped:
  srv*https://msdl.microsoft.com/download/symbols : https://msdl.microsoft.com/download/symbols: kds downloads only into a named downstream store (srv*<dir>*<url> or cache*<dir> before it)
  cache* : kds has no default cache directory; name one (cache*<dir>)
  symsrv*other.dll*x : only symsrv.dll stores are understood, not other.dll"
        );
        assert_eq!(search.describe_miss(&pdb), expected);
    }

    #[test]
    fn miss_with_no_local_directory() {
        let path = SymbolPath::parse("srv*;srv**https://a.example").unwrap();
        let pdb = kernel(2);
        let search = find_symbol_file(&path, &pdb);
        assert_eq!(
            search.describe_miss(&pdb),
            format!(
                "no symbol table for ntkrnlmp.pdb {GUID}-2; the symbol path names no local directory (set it with -y or _NT_SYMBOL_PATH)
skipped:
  srv* : the default symbol store (https://msdl.microsoft.com/download/symbols): kds downloads only into a named downstream store (srv*<dir>*<url> or cache*<dir> before it)
  srv**https://a.example : kds has no default downstream store; name one (srv*<dir>*<url>)"
            )
        );
    }

    #[cfg(not(windows))]
    #[test]
    fn windows_only_paths_are_skipped_elsewhere() {
        let path = SymbolPath::parse(r"c:\symbols;srv*\\server\share").unwrap();
        let search = find_symbol_file(&path, &kernel(1));
        assert!(search.looked_in.is_empty());
        assert_eq!(
            search.skipped,
            vec![
                r"c:\symbols : a drive-letter path is only reachable on Windows".to_string(),
                r"\\server\share : a UNC share is only reachable on Windows".to_string(),
            ]
        );
    }

    #[test]
    fn pdb_stems() {
        assert_eq!(pdb_stem("ntkrnlmp.pdb"), "ntkrnlmp");
        assert_eq!(pdb_stem("HAL.PDB"), "HAL");
        assert_eq!(pdb_stem("odd"), "odd");
        assert_eq!(pdb_stem("é.pdb"), "é");
    }
}
