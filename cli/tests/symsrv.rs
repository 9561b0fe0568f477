//! `-y srv*<downstream>*<url>` for `kds info` and `kds run`: the demo's table is served by a
//! local HTTP server on 127.0.0.1, downloaded into the downstream store once, then used from
//! there with no request.

mod common;

use common::{kds, repo};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const DEMO: &str = "examples/demo/MEMORY.DMP";
const TABLE: &str = "ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz";

/// Serves `/symbols/<TABLE>` and answers 404 to the rest; returns the URL and the request log.
fn serve_table() -> (String, Arc<Mutex<Vec<String>>>) {
    let body = std::fs::read(repo().join("examples/symbols").join(TABLE)).expect("demo table");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = requests.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header != "\r\n" {
                header.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(path.clone());
            if path == format!("/symbols/{TABLE}") {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            } else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    (format!("http://127.0.0.1:{port}/symbols"), requests)
}

#[test]
fn srv_path_downloads_once_then_serves_from_the_downstream_store() {
    let (url, requests) = serve_table();
    let down = std::env::temp_dir().join(format!("kds-cli-symsrv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&down);
    let sympath = format!("srv*{}*{url}", down.display());

    let out = kds(&["info", "-z", DEMO, "-y", &sympath]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cached = down.join(TABLE);
    assert!(
        stdout.contains(&format!("{} (1752 types)", cached.display())),
        "{stdout}"
    );
    assert!(!requests.lock().unwrap().is_empty());

    // Let any request still in flight land before counting afresh.
    std::thread::sleep(std::time::Duration::from_millis(300));
    requests.lock().unwrap().clear();
    let out = kds(&[
        "run",
        "-z",
        DEMO,
        "-y",
        &sympath,
        "-c",
        "!process 0 0 System",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Image: System"));
    assert!(
        requests.lock().unwrap().is_empty(),
        "{:?}",
        requests.lock().unwrap()
    );
    let _ = std::fs::remove_dir_all(&down);
}
