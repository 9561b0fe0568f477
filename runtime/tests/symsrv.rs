//! Symbol-server downloads against a local HTTP server on 127.0.0.1 serving a real store
//! layout: plain PDB, CAB-compressed `.pd_`, `file.ptr`, ISF table; 404, truncated and corrupt
//! bodies, and a server that is down. PDBs are made with clang + lld-link (see `.ci/run`).

use kds_runtime::symbols::fetch::{
    FetchFailure, FetchOptions, SymbolLocator, NEGATIVE_CACHE_FILE, STAGING_DIR,
};
use kds_runtime::symbols::store::SymbolFileKind;
use kds_runtime::symbols::sympath::SymbolPath;
use kds_runtime::symbols::{Guid, PdbIdentity};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What the server answers for a path.
#[derive(Clone)]
enum Reply {
    Body(Vec<u8>),
    /// Announce the full length, send half, close.
    Truncated(Vec<u8>),
}

/// A one-request-per-connection HTTP/1.1 server counting the requests it gets.
struct Server {
    port: u16,
    files: Arc<Mutex<HashMap<String, Reply>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let files: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, r) = (files.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (f, r) = (f.clone(), r.clone());
                std::thread::spawn(move || serve(stream, &f, &r));
            }
        });
        Server {
            port,
            files,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/symbols", self.port)
    }

    fn put(&self, path: &str, reply: Reply) {
        self.files
            .lock()
            .unwrap()
            .insert(format!("/symbols/{path}"), reply);
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Forget the requests so far, once in-flight ones have landed: `symsrv` asks for the PDB
    /// and the `.pd_` at once and drops the loser, whose request may still arrive.
    fn reset(&self) {
        let mut seen = usize::MAX;
        loop {
            std::thread::sleep(Duration::from_millis(150));
            let now = self.requests.lock().unwrap().len();
            if now == seen {
                break;
            }
            seen = now;
        }
        self.requests.lock().unwrap().clear();
    }
}

fn serve(
    mut stream: TcpStream,
    files: &Mutex<HashMap<String, Reply>>,
    requests: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    requests.lock().unwrap().push(path.clone());
    let reply = files.lock().unwrap().get(&path).cloned();
    let _ = match reply {
        None => stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        Some(Reply::Body(body)) => stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| stream.write_all(&body)),
        Some(Reply::Truncated(body)) => stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| stream.write_all(&body[..body.len() / 2])),
    };
    let _ = stream.flush();
}

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kds-symsrv-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real PDB made by clang + lld-link, and its identity read back with the `pdb` crate.
struct TestPdb {
    bytes: Vec<u8>,
    id: PdbIdentity,
}

fn make_pdb(name: &str, source: &str) -> TestPdb {
    let dir = TempDir::new("cc");
    std::fs::write(dir.0.join("x.c"), source).unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.current_dir(&dir.0).output().unwrap_or_else(|e| {
            panic!("cannot run {cmd:?}: {e} (install clang and lld: apt-get install -y clang lld)")
        });
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    };
    run(Command::new("clang").args([
        "--target=x86_64-pc-windows-msvc",
        "-gcodeview",
        "-g",
        "-c",
        "x.c",
        "-o",
        "x.obj",
    ]));
    run(Command::new("lld-link").args([
        "/nodefaultlib",
        "/dll",
        "/noentry",
        "/debug",
        &format!("/pdb:{name}"),
        "/out:x.dll",
        "x.obj",
    ]));
    let bytes = std::fs::read(dir.0.join(name)).unwrap();
    let mut parsed = pdb::PDB::open(Cursor::new(bytes.clone())).unwrap();
    let info = parsed.pdb_information().unwrap();
    let age = parsed
        .debug_information()
        .ok()
        .and_then(|d| d.age())
        .unwrap_or(info.age);
    let (d1, d2, d3, d4) = info.guid.as_fields();
    let id = PdbIdentity {
        name: name.to_string(),
        guid: Guid {
            data1: d1,
            data2: d2,
            data3: d3,
            data4: *d4,
        },
        age,
    };
    TestPdb { bytes, id }
}

fn test_pdb() -> &'static TestPdb {
    static PDB: OnceLock<TestPdb> = OnceLock::new();
    PDB.get_or_init(|| make_pdb("kdsprobe.pdb", "int kds_probe(int x) { return x + 1; }\n"))
}

fn other_pdb() -> &'static TestPdb {
    static PDB: OnceLock<TestPdb> = OnceLock::new();
    PDB.get_or_init(|| make_pdb("kdsother.pdb", "int kds_other(int x) { return x * 3; }\n"))
}

/// A CAB holding one file, as `<name>.pd_` files on symbol servers are.
fn cab(name: &str, data: &[u8]) -> Vec<u8> {
    let mut builder = cab::CabinetBuilder::new();
    builder
        .add_folder(cab::CompressionType::MsZip)
        .add_file(name);
    let mut writer = builder.build(Cursor::new(Vec::new())).unwrap();
    while let Some(mut file) = writer.next_file().unwrap() {
        file.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn store_path(id: &PdbIdentity, file: &str) -> String {
    format!("{}/{}/{file}", id.name, id.store_key())
}

fn options() -> FetchOptions {
    FetchOptions {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        retries: 1,
        ..FetchOptions::default()
    }
}

fn locator(down: &Path, url: &str) -> SymbolLocator {
    let path = SymbolPath::parse(&format!("srv*{}*{url}", down.display())).unwrap();
    SymbolLocator::with_options(path, options())
}

fn cached(down: &Path, id: &PdbIdentity) -> PathBuf {
    down.join(&id.name).join(id.store_key()).join(&id.name)
}

#[test]
fn found_in_the_downstream_store_asks_nothing() {
    let server = Server::start();
    let down = TempDir::new("down");
    let pdb = test_pdb();
    let path = cached(&down.0, &pdb.id);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &pdb.bytes).unwrap();
    let located = locator(&down.0, &server.url()).locate(&pdb.id).unwrap();
    assert_eq!(located.file.path, path);
    assert_eq!(located.file.kind, SymbolFileKind::Pdb);
    assert!(server.requests().is_empty());
    assert_eq!(
        located.search.log.last().unwrap(),
        &format!("SYMSRV:  {} - found", path.display())
    );
}

#[test]
fn downloaded_then_served_from_the_cache() {
    let server = Server::start();
    let down = TempDir::new("down");
    let pdb = test_pdb();
    server.put(
        &store_path(&pdb.id, &pdb.id.name),
        Reply::Body(pdb.bytes.clone()),
    );
    let located = locator(&down.0, &server.url()).locate(&pdb.id).unwrap();
    let path = cached(&down.0, &pdb.id);
    assert_eq!(located.file.path, path);
    assert_eq!(std::fs::read(&path).unwrap(), pdb.bytes);
    let url = format!("{}/{}", server.url(), store_path(&pdb.id, &pdb.id.name));
    assert!(
        located.search.log.contains(&format!(
            "SYMSRV:  {} from {url}: {} bytes - copied",
            path.display(),
            pdb.bytes.len()
        )),
        "{:#?}",
        located.search.log
    );
    assert!(!down.0.join(STAGING_DIR).exists());
    // Only the name, GUID and age are in what was asked.
    for request in server.requests() {
        assert!(request.starts_with(&format!("/symbols/{}/{}/", pdb.id.name, pdb.id.store_key())));
    }

    server.reset();
    let again = locator(&down.0, &server.url()).locate(&pdb.id).unwrap();
    assert_eq!(again.file.path, path);
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[test]
fn compressed_pd_underscore_is_unpacked() {
    let server = Server::start();
    let down = TempDir::new("down");
    let pdb = test_pdb();
    let compressed = pdb.id.name.replace(".pdb", ".pd_");
    server.put(
        &store_path(&pdb.id, &compressed),
        Reply::Body(cab(&pdb.id.name, &pdb.bytes)),
    );
    let located = locator(&down.0, &server.url()).locate(&pdb.id).unwrap();
    assert_eq!(located.file.path, cached(&down.0, &pdb.id));
    assert_eq!(std::fs::read(&located.file.path).unwrap(), pdb.bytes);
    assert!(!down.0.join(STAGING_DIR).exists());
}

#[test]
fn file_ptr_redirects_to_a_local_path() {
    let server = Server::start();
    let down = TempDir::new("down");
    let share = TempDir::new("share");
    let pdb = test_pdb();
    let target = share.0.join("elsewhere.pdb");
    std::fs::write(&target, &pdb.bytes).unwrap();
    server.put(
        &store_path(&pdb.id, "file.ptr"),
        Reply::Body(format!("PATH:{}", target.display()).into_bytes()),
    );
    let located = locator(&down.0, &server.url()).locate(&pdb.id).unwrap();
    assert_eq!(located.file.path, cached(&down.0, &pdb.id));
    assert_eq!(std::fs::read(&located.file.path).unwrap(), pdb.bytes);
    assert!(located
        .search
        .log
        .iter()
        .any(|l| l.ends_with(&format!("file.ptr points to {}", target.display()))));
}

#[test]
fn isf_table_on_the_server() {
    let server = Server::start();
    let down = TempDir::new("down");
    let table = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/symbols/ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz"),
    )
    .unwrap();
    let id = PdbIdentity {
        name: "ntkrnlmp.pdb".into(),
        guid: "C339CA26E8E26BB7F4C9BB7B8244A46A".parse().unwrap(),
        age: 1,
    };
    server.put(
        "ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz",
        Reply::Body(table.clone()),
    );
    let located = locator(&down.0, &server.url()).locate(&id).unwrap();
    let path = down
        .0
        .join("ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz");
    assert_eq!(located.file.path, path);
    assert_eq!(located.file.kind, SymbolFileKind::IsfJsonXz);
    assert_eq!(std::fs::read(&path).unwrap(), table);

    server.reset();
    let _ = locator(&down.0, &server.url()).locate(&id).unwrap();
    assert!(server.requests().is_empty());
}

#[test]
fn not_found_is_remembered() {
    let server = Server::start();
    let down = TempDir::new("down");
    let pdb = other_pdb();
    let err = locator(&down.0, &server.url()).locate(&pdb.id).unwrap_err();
    let search = err.search();
    assert!(search.failures.is_empty(), "{:?}", search.failures);
    let pdb_url = format!("{}/{}", server.url(), store_path(&pdb.id, &pdb.id.name));
    assert!(search
        .log
        .contains(&format!("SYMSRV:  {pdb_url} not found")));
    assert!(!server.requests().is_empty());
    assert!(down.0.join(NEGATIVE_CACHE_FILE).is_file());
    assert!(err.to_string().contains(&pdb_url), "{err}");

    server.reset();
    let err = locator(&down.0, &server.url()).locate(&pdb.id).unwrap_err();
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert!(err
        .search()
        .log
        .last()
        .unwrap()
        .contains("not found (remembered at"));

    // An expired entry is asked again.
    let expired = FetchOptions {
        negative_cache_ttl: Duration::ZERO,
        ..options()
    };
    let path = SymbolPath::parse(&format!("srv*{}*{}", down.0.display(), server.url())).unwrap();
    let _ = SymbolLocator::with_options(path, expired).locate(&pdb.id);
    assert!(!server.requests().is_empty());
}

#[test]
fn server_down_is_a_clear_error_within_the_timeout() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let down = TempDir::new("down");
    let pdb = test_pdb();
    let started = Instant::now();
    let err = locator(&down.0, &format!("http://127.0.0.1:{port}/symbols"))
        .locate(&pdb.id)
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20));
    let search = err.search();
    assert!(
        matches!(
            search.failures.first(),
            Some(FetchFailure::Unreachable { .. })
        ),
        "{:?}",
        search.failures
    );
    assert!(err.to_string().contains("server unreachable"), "{err}");
    // A failure is not a miss: nothing is remembered.
    assert!(!down.0.join(NEGATIVE_CACHE_FILE).exists());
}

#[test]
fn truncated_download_is_not_cached() {
    let server = Server::start();
    let down = TempDir::new("down");
    let pdb = test_pdb();
    server.put(
        &store_path(&pdb.id, &pdb.id.name),
        Reply::Truncated(pdb.bytes.clone()),
    );
    let err = locator(&down.0, &server.url()).locate(&pdb.id).unwrap_err();
    assert!(err.to_string().contains(&pdb.id.name), "{err}");
    assert!(!err.search().failures.is_empty());
    assert!(!cached(&down.0, &pdb.id).exists());
    assert!(!down.0.join(STAGING_DIR).exists());
    assert!(!down.0.join(NEGATIVE_CACHE_FILE).exists());
}

#[test]
fn corrupt_or_mismatched_pdb_is_not_cached() {
    let server = Server::start();
    let down = TempDir::new("down");
    let pdb = test_pdb();
    let mut garbage = pdb.bytes.clone();
    garbage[..8].copy_from_slice(b"NOT A PD");
    server.put(&store_path(&pdb.id, &pdb.id.name), Reply::Body(garbage));
    let err = locator(&down.0, &server.url()).locate(&pdb.id).unwrap_err();
    assert!(
        matches!(err.search().failures.first(), Some(FetchFailure::Corrupt { file, .. }) if *file == pdb.id.name),
        "{:?}",
        err.search().failures
    );
    assert!(err.to_string().contains("no MSF 7.00 signature"), "{err}");
    assert!(!cached(&down.0, &pdb.id).exists());

    // A valid PDB of another build under this key: GUID/age mismatch.
    let other = other_pdb();
    server.put(
        &store_path(&pdb.id, &pdb.id.name),
        Reply::Body(other.bytes.clone()),
    );
    let err = locator(&down.0, &server.url()).locate(&pdb.id).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("it is {}-{}", other.id.guid, other.id.age)),
        "{err}"
    );
    assert!(!cached(&down.0, &pdb.id).exists());
    assert!(!down.0.join(STAGING_DIR).exists());
}

#[test]
fn silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and never answer.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let down = TempDir::new("down");
    let pdb = test_pdb();
    let path = SymbolPath::parse(&format!(
        "srv*{}*http://127.0.0.1:{port}/symbols",
        down.0.display()
    ))
    .unwrap();
    let options = FetchOptions {
        timeout: Duration::from_secs(1),
        ..options()
    };
    let started = Instant::now();
    let err = SymbolLocator::with_options(path, options)
        .locate(&pdb.id)
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err.search().failures.as_slice(),
            [FetchFailure::Timeout { seconds: 1, .. }]
        ),
        "{:?}",
        err.search().failures
    );
    assert!(err.to_string().contains("no answer within 1 s"), "{err}");
    assert!(!down.0.join(NEGATIVE_CACHE_FILE).exists());
    assert!(!cached(&down.0, &pdb.id).exists());
}
