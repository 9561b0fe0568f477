//! The symbol path: `_NT_SYMBOL_PATH` syntax, as WinDbg and DbgHelp read it.
//!
//! A symbol path is a `;`-separated list of elements; empty elements are skipped. Each is
//! - a directory (`c:\symbols`, `/srv/symbols`, `\\server\share`);
//! - `cache*<dir>`: a cache for the elements after it (`cache*` alone: the default cache);
//! - `srv*<store>*...*<store>`: a symbol server chain, leftmost store first. With one store it
//!   is read directly; with several the first is the downstream store the others are copied
//!   into (`srv**<url>`: the default downstream store). `srv*` alone means the default store;
//! - `symsrv*<dll>*<store>*...`: the same with a named server DLL (`srv*` is shorthand for
//!   `symsrv*symsrv.dll*`).
//!
//! Keywords are case-insensitive and recognised only before the first `*` of an element, so
//! drive letters and URLs inside stores are never mistaken for syntax.
//!
//! ```
//! use kds_runtime::symbols::sympath::{SymbolPath, SymbolPathElement};
//! use std::path::Path;
//!
//! let path = SymbolPath::parse(r"c:\mysyms;SRV*c:\cache*https://msdl.microsoft.com/download/symbols")
//!     .unwrap();
//! assert_eq!(path.local_dirs(), vec![Path::new(r"c:\mysyms"), Path::new(r"c:\cache")]);
//! assert_eq!(
//!     path.to_string(),
//!     r"c:\mysyms;srv*c:\cache*https://msdl.microsoft.com/download/symbols"
//! );
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The public Microsoft symbol store, what WinDbg's default store (`srv*`, `.symfix`) means.
pub const MICROSOFT_SYMBOL_SERVER: &str = "https://msdl.microsoft.com/download/symbols";

/// One `;`-separated element of a symbol path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolPathElement {
    /// A plain directory (or UNC share), searched as it is.
    Directory(PathBuf),
    /// `cache*<dir>`: where symbols from the elements after it are cached. Empty: the default.
    Cache(PathBuf),
    /// `srv*...`: a symbol server chain.
    Server {
        /// The first of several stores, into which the others are copied; `Some("")` for
        /// `srv**<url>` (the default downstream store); `None` with fewer than two stores.
        downstream: Option<PathBuf>,
        /// The stores after the downstream one, or the only store: URLs, directories or UNC
        /// paths. Empty for `srv*` alone (the default store).
        upstream: Vec<String>,
    },
    /// `symsrv*<dll>*<store>*...`: a chain served by a named DLL.
    SymSrv { dll: String, parts: Vec<String> },
}

/// A parsed symbol path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SymbolPath {
    pub elements: Vec<SymbolPathElement>,
}

/// Why a symbol path was rejected. Element numbers count from 1, empty elements included.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SymbolPathError {
    #[error("symbol path element {index} `{element}`: `symsrv*` must name the server DLL (symsrv*symsrv.dll*<store>)")]
    MissingServerDll { index: usize, element: String },
    #[error(
        "symbol path element {index} `{element}`: `symsrv*{dll}` names no store after the DLL"
    )]
    NoStores {
        index: usize,
        element: String,
        dll: String,
    },
    #[error("symbol path element {index} `{element}`: store {position} between `*` is empty (only the first store may be left empty, meaning the default downstream store)")]
    EmptyStore {
        index: usize,
        element: String,
        position: usize,
    },
    #[error("symbol path element {index} `{element}`: `cache*` takes one directory, found {count} separated by `*`")]
    CacheTakesOneDirectory {
        index: usize,
        element: String,
        count: usize,
    },
    #[error("symbol path element {index} `{element}`: `{keyword}` before `*` is not a keyword (expected srv*, symsrv* or cache*)")]
    UnknownKeyword {
        index: usize,
        element: String,
        keyword: String,
    },
    #[error("symbol path element {index} `{element}` is a URL: write `srv*{element}` to use it as a symbol server")]
    BareUrl { index: usize, element: String },
    /// An error in one of the sources [`SymbolPath::from_sources`] combines.
    #[error("in {origin}: {inner}")]
    In {
        origin: &'static str,
        inner: Box<SymbolPathError>,
    },
    #[error("{variable} is not valid Unicode")]
    NotUnicode { variable: &'static str },
}

impl SymbolPath {
    /// Parse `_NT_SYMBOL_PATH` syntax.
    pub fn parse(text: &str) -> Result<SymbolPath, SymbolPathError> {
        let mut elements = Vec::new();
        for (i, raw) in text.split(';').enumerate() {
            let element = raw.trim();
            if !element.is_empty() {
                elements.push(parse_element(i + 1, element)?);
            }
        }
        Ok(SymbolPath { elements })
    }

    /// The symbol path kds starts with: `-y` when given, else `_NT_ALT_SYMBOL_PATH` followed by
    /// `_NT_SYMBOL_PATH` (WinDbg searches the alternate path first). Unset variables count as
    /// empty; the result may have no elements.
    pub fn from_env_and_arg(arg: Option<&str>) -> Result<SymbolPath, SymbolPathError> {
        let var = |variable: &'static str| match std::env::var(variable) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(SymbolPathError::NotUnicode { variable }),
        };
        if arg.is_some() {
            return SymbolPath::from_sources(arg, None, None);
        }
        let main = var("_NT_SYMBOL_PATH")?;
        let alt = var("_NT_ALT_SYMBOL_PATH")?;
        SymbolPath::from_sources(None, main.as_deref(), alt.as_deref())
    }

    /// [`SymbolPath::from_env_and_arg`] with the sources given: `arg` (`-y`) wins; otherwise
    /// the elements of `alt` come before those of `main`. Errors name the source.
    pub fn from_sources(
        arg: Option<&str>,
        main: Option<&str>,
        alt: Option<&str>,
    ) -> Result<SymbolPath, SymbolPathError> {
        let parse_from = |origin: &'static str, text: &str| {
            SymbolPath::parse(text).map_err(|e| SymbolPathError::In {
                origin,
                inner: Box::new(e),
            })
        };
        if let Some(arg) = arg {
            return parse_from("-y", arg);
        }
        let mut elements = Vec::new();
        if let Some(alt) = alt {
            elements.extend(parse_from("_NT_ALT_SYMBOL_PATH", alt)?.elements);
        }
        if let Some(main) = main {
            elements.extend(parse_from("_NT_SYMBOL_PATH", main)?.elements);
        }
        Ok(SymbolPath { elements })
    }

    /// Every local directory the path names, in search order, each once: plain directories,
    /// cache directories, downstream stores and store paths that are not URLs. Defaults
    /// (empty paths) are left out.
    #[must_use]
    pub fn local_dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = Vec::new();
        for dir in self.elements.iter().flat_map(SymbolPathElement::local_dirs) {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    }

    /// No element at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }
}

impl SymbolPathElement {
    /// The local directories of this element, in search order (see [`SymbolPath::local_dirs`]).
    #[must_use]
    pub fn local_dirs(&self) -> Vec<&Path> {
        match self {
            SymbolPathElement::Directory(dir) | SymbolPathElement::Cache(dir) => {
                non_empty(dir).into_iter().collect()
            }
            SymbolPathElement::Server {
                downstream,
                upstream,
            } => downstream
                .as_deref()
                .and_then(non_empty)
                .into_iter()
                .chain(local_stores(upstream))
                .collect(),
            SymbolPathElement::SymSrv { dll, parts } if is_symsrv_dll(dll) => {
                local_stores(parts).collect()
            }
            SymbolPathElement::SymSrv { .. } => Vec::new(),
        }
    }

    /// The stores of this element that are URLs (to download from), in order.
    #[must_use]
    pub fn remote_stores(&self) -> Vec<&str> {
        match self {
            SymbolPathElement::Server { upstream, .. } => upstream
                .iter()
                .map(String::as_str)
                .filter(|s| is_url(s))
                .collect(),
            SymbolPathElement::SymSrv { parts, .. } => parts
                .iter()
                .map(String::as_str)
                .filter(|s| is_url(s))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// `symsrv.dll` in any case: the server DLL whose store layout kds knows.
#[must_use]
pub fn is_symsrv_dll(dll: &str) -> bool {
    dll.eq_ignore_ascii_case("symsrv.dll")
}

/// An `http://` or `https://` store.
#[must_use]
pub fn is_url(store: &str) -> bool {
    let lower = store.get(..8).unwrap_or(store).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn non_empty(dir: &Path) -> Option<&Path> {
    (!dir.as_os_str().is_empty()).then_some(dir)
}

fn local_stores(stores: &[String]) -> impl Iterator<Item = &Path> {
    stores
        .iter()
        .filter(|s| !s.is_empty() && !is_url(s))
        .map(Path::new)
}

fn parse_element(index: usize, element: &str) -> Result<SymbolPathElement, SymbolPathError> {
    let Some((keyword, rest)) = element.split_once('*') else {
        if is_url(element) {
            return Err(SymbolPathError::BareUrl {
                index,
                element: element.to_string(),
            });
        }
        return Ok(SymbolPathElement::Directory(PathBuf::from(element)));
    };
    let stores = |rest: &str| -> Result<Vec<String>, SymbolPathError> {
        let parts: Vec<String> = rest.split('*').map(|p| p.trim().to_string()).collect();
        // The first of several may be empty (`srv**url`: the default downstream store).
        let first_may_be_empty = usize::from(parts.len() > 1);
        if let Some(position) = parts
            .iter()
            .enumerate()
            .skip(first_may_be_empty)
            .find(|(_, p)| p.is_empty())
            .map(|(i, _)| i + 1)
        {
            return Err(SymbolPathError::EmptyStore {
                index,
                element: element.to_string(),
                position,
            });
        }
        Ok(parts)
    };
    match keyword.trim().to_ascii_lowercase().as_str() {
        "srv" => {
            if rest.trim().is_empty() {
                return Ok(SymbolPathElement::Server {
                    downstream: None,
                    upstream: Vec::new(),
                });
            }
            let mut parts = stores(rest)?;
            let downstream = (parts.len() > 1).then(|| PathBuf::from(parts.remove(0)));
            Ok(SymbolPathElement::Server {
                downstream,
                upstream: parts,
            })
        }
        "cache" => {
            let count = rest.split('*').count();
            if count > 1 {
                return Err(SymbolPathError::CacheTakesOneDirectory {
                    index,
                    element: element.to_string(),
                    count,
                });
            }
            Ok(SymbolPathElement::Cache(PathBuf::from(rest.trim())))
        }
        "symsrv" => {
            let (dll, rest) = rest.split_once('*').unwrap_or((rest, ""));
            let dll = dll.trim();
            if dll.is_empty() {
                return Err(SymbolPathError::MissingServerDll {
                    index,
                    element: element.to_string(),
                });
            }
            if rest.trim().is_empty() {
                return Err(SymbolPathError::NoStores {
                    index,
                    element: element.to_string(),
                    dll: dll.to_string(),
                });
            }
            Ok(SymbolPathElement::SymSrv {
                dll: dll.to_string(),
                parts: stores(rest)?,
            })
        }
        _ => Err(SymbolPathError::UnknownKeyword {
            index,
            element: element.to_string(),
            keyword: keyword.to_string(),
        }),
    }
}

/// Canonical text: lower-case keywords, no empty elements, `;` between elements.
impl fmt::Display for SymbolPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, element) in self.elements.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{element}")?;
        }
        Ok(())
    }
}

impl fmt::Display for SymbolPathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SymbolPathElement::Directory(dir) => write!(f, "{}", dir.display()),
            SymbolPathElement::Cache(dir) => write!(f, "cache*{}", dir.display()),
            SymbolPathElement::Server {
                downstream,
                upstream,
            } => {
                f.write_str("srv*")?;
                if let Some(down) = downstream {
                    write!(f, "{}*", down.display())?;
                }
                f.write_str(&upstream.join("*"))
            }
            SymbolPathElement::SymSrv { dll, parts } => {
                write!(f, "symsrv*{dll}*{}", parts.join("*"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<SymbolPathElement> {
        SymbolPath::parse(text).unwrap().elements
    }

    fn dir(p: &str) -> SymbolPathElement {
        SymbolPathElement::Directory(PathBuf::from(p))
    }

    fn server(down: Option<&str>, up: &[&str]) -> SymbolPathElement {
        SymbolPathElement::Server {
            downstream: down.map(PathBuf::from),
            upstream: up.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn plain_directories_with_drive_letters_and_shares() {
        assert_eq!(
            parse(r"C:\Dir1;C:\Dir2\DirA;C:\Dir2\DirB"),
            vec![dir(r"C:\Dir1"), dir(r"C:\Dir2\DirA"), dir(r"C:\Dir2\DirB")]
        );
        assert_eq!(
            parse(r"\\someshare\symbols;/opt/syms"),
            vec![dir(r"\\someshare\symbols"), dir("/opt/syms")]
        );
        // A directory called `srv` is a directory: keywords need their `*`.
        assert_eq!(parse("srv;cache"), vec![dir("srv"), dir("cache")]);
    }

    #[test]
    fn empty_elements_and_surrounding_spaces_are_skipped() {
        assert_eq!(parse(r" ;;c:\a ; ;d:\b;"), vec![dir(r"c:\a"), dir(r"d:\b")]);
        assert_eq!(SymbolPath::parse("").unwrap(), SymbolPath::default());
        assert!(SymbolPath::parse(" ; ").unwrap().is_empty());
    }

    #[test]
    fn srv_with_url_only() {
        assert_eq!(
            parse("srv*https://msdl.microsoft.com/download/symbols"),
            vec![server(None, &[MICROSOFT_SYMBOL_SERVER])]
        );
    }

    #[test]
    fn srv_with_downstream_store_documented_example() {
        // "Using a Symbol Server": srv*DownstreamStore*https://msdl.microsoft.com/download/symbols
        assert_eq!(
            parse(r"SRV*c:\websymbols*http://msdl.microsoft.com/download/symbols"),
            vec![server(
                Some(r"c:\websymbols"),
                &["http://msdl.microsoft.com/download/symbols"]
            )]
        );
        // "Advanced SymSrv Use": srv*DownstreamStore*\\Server\Share and srv*\\Server\Share.
        assert_eq!(
            parse(r"srv*c:\localcache*\\Server\Share;srv*\\Server\Share"),
            vec![
                server(Some(r"c:\localcache"), &[r"\\Server\Share"]),
                server(None, &[r"\\Server\Share"])
            ]
        );
    }

    #[test]
    fn cascading_downstream_stores() {
        let el =
            parse(r"srv*c:\localcache*\\interim\store*https://msdl.microsoft.com/download/symbols");
        assert_eq!(
            el,
            vec![server(
                Some(r"c:\localcache"),
                &[r"\\interim\store", MICROSOFT_SYMBOL_SERVER]
            )]
        );
        let path = SymbolPath { elements: el };
        assert_eq!(
            path.local_dirs(),
            vec![Path::new(r"c:\localcache"), Path::new(r"\\interim\store")]
        );
        assert_eq!(
            path.elements[0].remote_stores(),
            vec![MICROSOFT_SYMBOL_SERVER]
        );
    }

    #[test]
    fn default_stores() {
        // `.symfix` shows "Symbol search path is: srv*": the default store.
        assert_eq!(parse("srv*"), vec![server(None, &[])]);
        // Two asterisks in a row: the default downstream store.
        assert_eq!(
            parse(r"srv**\\Server\Share"),
            vec![server(Some(""), &[r"\\Server\Share"])]
        );
        // `cache*` alone: the default cache.
        assert_eq!(
            parse(r"cache*;srv*https://x.example/s"),
            vec![
                SymbolPathElement::Cache(PathBuf::new()),
                server(None, &["https://x.example/s"])
            ]
        );
        let path = SymbolPath::parse(r"cache*;srv**\\Server\Share").unwrap();
        assert_eq!(path.local_dirs(), vec![Path::new(r"\\Server\Share")]);
    }

    #[test]
    fn cache_and_symfix_expanded_form() {
        // `.symfix c:\myCache` expands to this.
        let path =
            SymbolPath::parse(r"cache*c:\myCache;SRV*https://msdl.microsoft.com/download/symbols")
                .unwrap();
        assert_eq!(
            path.elements,
            vec![
                SymbolPathElement::Cache(PathBuf::from(r"c:\myCache")),
                server(None, &[MICROSOFT_SYMBOL_SERVER])
            ]
        );
        assert_eq!(path.local_dirs(), vec![Path::new(r"c:\myCache")]);
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(
            parse(
                r"Srv*c:\s*https://a.example;CACHE*d:\c;SymSrv*SYMSRV.DLL*e:\x*https://b.example"
            ),
            vec![
                server(Some(r"c:\s"), &["https://a.example"]),
                SymbolPathElement::Cache(PathBuf::from(r"d:\c")),
                SymbolPathElement::SymSrv {
                    dll: "SYMSRV.DLL".into(),
                    parts: vec![r"e:\x".into(), "https://b.example".into()]
                }
            ]
        );
    }

    #[test]
    fn symsrv_forms_from_the_documentation() {
        assert_eq!(
            parse(r"symsrv*symsrv.dll*c:\down*\\Server\Share;symsrv*other.dll*\\Server\Share"),
            vec![
                SymbolPathElement::SymSrv {
                    dll: "symsrv.dll".into(),
                    parts: vec![r"c:\down".into(), r"\\Server\Share".into()]
                },
                SymbolPathElement::SymSrv {
                    dll: "other.dll".into(),
                    parts: vec![r"\\Server\Share".into()]
                }
            ]
        );
        // Only symsrv.dll stores count as local directories.
        let path =
            SymbolPath::parse(r"symsrv*symsrv.dll*c:\down*https://a.example;symsrv*other.dll*d:\x")
                .unwrap();
        assert_eq!(path.local_dirs(), vec![Path::new(r"c:\down")]);
    }

    #[test]
    fn local_dirs_keep_order_and_drop_repeats() {
        let path = SymbolPath::parse(
            r"/a;cache*/c;srv*/c*https://x.example;/b;/a;srv*/d;srv*https://y.example",
        )
        .unwrap();
        assert_eq!(
            path.local_dirs(),
            vec![
                Path::new("/a"),
                Path::new("/c"),
                Path::new("/b"),
                Path::new("/d")
            ]
        );
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let text = r" SRV*c:\cache*https://msdl.microsoft.com/download/symbols ;; C:\Dir1;Cache*d:\c;srv**\\s\x;srv*;symsrv*symsrv.dll*e:\x*https://b.example;";
        let path = SymbolPath::parse(text).unwrap();
        let canonical = r"srv*c:\cache*https://msdl.microsoft.com/download/symbols;C:\Dir1;cache*d:\c;srv**\\s\x;srv*;symsrv*symsrv.dll*e:\x*https://b.example";
        assert_eq!(path.to_string(), canonical);
        assert_eq!(SymbolPath::parse(canonical).unwrap(), path);
        assert_eq!(SymbolPath::parse("cache*").unwrap().to_string(), "cache*");
    }

    #[test]
    fn errors_name_the_element_and_what_is_wrong() {
        let err = |text: &str| SymbolPath::parse(text).unwrap_err().to_string();
        assert_eq!(
            err(r"c:\a;symsrv*"),
            "symbol path element 2 `symsrv*`: `symsrv*` must name the server DLL (symsrv*symsrv.dll*<store>)"
        );
        assert_eq!(
            err("symsrv*symsrv.dll"),
            "symbol path element 1 `symsrv*symsrv.dll`: `symsrv*symsrv.dll` names no store after the DLL"
        );
        assert_eq!(
            err(r"srv*c:\cache*"),
            r"symbol path element 1 `srv*c:\cache*`: store 2 between `*` is empty (only the first store may be left empty, meaning the default downstream store)"
        );
        assert_eq!(
            SymbolPath::parse(r";;srv*c:\a**https://x.example").unwrap_err(),
            SymbolPathError::EmptyStore {
                index: 3,
                element: r"srv*c:\a**https://x.example".into(),
                position: 2
            }
        );
        assert_eq!(
            err(r"cache*c:\a*c:\b"),
            r"symbol path element 1 `cache*c:\a*c:\b`: `cache*` takes one directory, found 2 separated by `*`"
        );
        assert_eq!(
            err(r"svr*c:\s*https://msdl.microsoft.com/download/symbols"),
            r"symbol path element 1 `svr*c:\s*https://msdl.microsoft.com/download/symbols`: `svr` before `*` is not a keyword (expected srv*, symsrv* or cache*)"
        );
        assert_eq!(
            err("https://msdl.microsoft.com/download/symbols"),
            "symbol path element 1 `https://msdl.microsoft.com/download/symbols` is a URL: write `srv*https://msdl.microsoft.com/download/symbols` to use it as a symbol server"
        );
    }

    #[test]
    fn sources_combine_as_windbg_does() {
        let path = SymbolPath::from_sources(None, Some("/main"), Some("/alt")).unwrap();
        assert_eq!(path.elements, vec![dir("/alt"), dir("/main")]);
        // -y wins over both variables.
        let path = SymbolPath::from_sources(Some("/y"), Some("/main"), Some("/alt")).unwrap();
        assert_eq!(path.elements, vec![dir("/y")]);
        assert!(SymbolPath::from_sources(None, None, None)
            .unwrap()
            .is_empty());
        assert_eq!(
            SymbolPath::from_sources(None, Some("/ok;cache*a*b"), None)
                .unwrap_err()
                .to_string(),
            "in _NT_SYMBOL_PATH: symbol path element 2 `cache*a*b`: `cache*` takes one directory, found 2 separated by `*`"
        );
        assert!(matches!(
            SymbolPath::from_sources(Some("svr*x"), None, None).unwrap_err(),
            SymbolPathError::In { origin: "-y", .. }
        ));
    }

    #[test]
    fn from_env_and_arg_prefers_the_argument() {
        // Reads no environment when -y is given, so this is safe beside other tests.
        let path = SymbolPath::from_env_and_arg(Some(r"srv*/cache*https://a.example")).unwrap();
        assert_eq!(
            path.elements,
            vec![server(Some("/cache"), &["https://a.example"])]
        );
    }
}
