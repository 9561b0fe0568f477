//! Hostile input: binary junk, megabyte lines, nesting far past any real playbook. Each must
//! give diagnostics (or parse), never panic, overflow the stack or hang. Every case runs on a
//! thread with the default 2 MiB stack of spawned threads, under a time bound.

use std::time::{Duration, Instant};

/// Generous for a debug build on a small CI machine; release builds are many times faster.
const BOUND: Duration = Duration::from_secs(30);

fn lint_on_small_stack(name: &str, source: String) -> Vec<kds_lang::Diagnostic> {
    let name = name.to_string();
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let start = Instant::now();
            let diagnostics = kds_lang::lint(&source, "garbage.kds");
            let elapsed = start.elapsed();
            assert!(elapsed < BOUND, "{name}: took {elapsed:?}");
            // Rendering must cope with whatever the spans are.
            let text = kds_lang::render(&diagnostics, "garbage.kds", &source);
            assert!(diagnostics.is_empty() || !text.is_empty());
            diagnostics
        })
        .expect("spawn");
    handle.join().expect("no panic, no overflow")
}

fn codes(d: &[kds_lang::Diagnostic]) -> Vec<kds_lang::Code> {
    d.iter().map(|d| d.code).collect()
}

/// xorshift: deterministic bytes without a dependency.
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[test]
fn binary_junk() {
    for seed in 1..=8u64 {
        let bytes = random_bytes(64 << 10, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        assert!(bytes.contains(&0));
        // Invalid UTF-8 never reaches the parser: the CLI rejects the file first (`&str` input).
        assert!(std::str::from_utf8(&bytes).is_err());
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let d = lint_on_small_stack("binary junk", text);
        assert!(!d.is_empty());
        assert!(d.len() <= 2 * kds_lang::MAX_DIAGNOSTICS + 1);
    }
    let nuls = lint_on_small_stack("NULs", "\0".repeat(10_000));
    assert!(!nuls.is_empty());
}

#[test]
fn megabyte_lines() {
    const MB: usize = 1 << 20;
    // Valid, if pointless.
    assert!(lint_on_small_stack("one long name", "a".repeat(MB))
        .iter()
        .all(|d| !d.is_error()));
    assert!(
        lint_on_small_stack("long string", format!("let s = \"{}\"", "x".repeat(MB))).is_empty()
    );
    assert!(
        lint_on_small_stack("long list", format!("let l = [{}1]", "1, ".repeat(MB / 3))).is_empty()
    );
    assert!(lint_on_small_stack("long comment", format!("!vm # {}", "x".repeat(MB))).is_empty());
    // Errors, reported briefly.
    let d = lint_on_small_stack(
        "operator chain",
        format!("let n = {}1", "1 + ".repeat(MB / 4)),
    );
    assert_eq!(codes(&d), [kds_lang::Code::TooDeep]);
    let d = lint_on_small_stack("unary chain", format!("let n = {}1", "-".repeat(MB)));
    assert_eq!(codes(&d), [kds_lang::Code::TooDeep]);
    let d = lint_on_small_stack("many arguments", format!("dq {}", "0 ".repeat(MB / 2)));
    assert_eq!(codes(&d), [kds_lang::Code::CommandArgument]);
    let d = lint_on_small_stack(
        "long pipeline",
        format!("processes{}", " | where a".repeat(MB / 10)),
    );
    assert!(d.is_empty());
    let d = lint_on_small_stack("unclosed string", format!("let s = \"{}", "x".repeat(MB)));
    assert_eq!(codes(&d), [kds_lang::Code::Delimiter]);
    let d = lint_on_small_stack("hex soup", "ffff`".repeat(MB / 5));
    assert!(d.iter().any(|d| d.is_error()));
}

#[test]
fn deep_nesting_is_an_error_not_an_overflow() {
    const N: usize = 100_000;
    for (name, source) in [
        ("parentheses", "(".repeat(N)),
        (
            "balanced parentheses",
            format!("let x = {}1{}", "(".repeat(N), ")".repeat(N)),
        ),
        ("brackets", format!("let x = {}", "[".repeat(N))),
        (
            "calls",
            format!("let x = {}1{}", "f(".repeat(N), ")".repeat(N)),
        ),
        (
            "indexes",
            format!("let x = a{}0{}", "[a[".repeat(N / 2), "]]".repeat(N / 2)),
        ),
        (
            "command parentheses",
            format!("dq {}1{}", "(".repeat(N), ")".repeat(N)),
        ),
        ("poi", format!("dq {}1{}", "poi(".repeat(N), ")".repeat(N))),
        (
            "list types",
            format!("param x: {}int{}", "list<".repeat(N), ">".repeat(N)),
        ),
    ] {
        let d = lint_on_small_stack(name, source);
        assert!(
            d.iter().any(|d| d.code == kds_lang::Code::TooDeep),
            "{name}: {:?}",
            codes(&d)
        );
        assert!(d.len() <= 3, "{name}: {:?}", codes(&d));
    }
    for (name, source) in [
        ("open braces", "{".repeat(N)),
        ("sections", "section \"s\" {\n".repeat(N)),
        ("closing braces", "}".repeat(N)),
        ("lines of open parentheses", "(\n".repeat(N)),
    ] {
        let d = lint_on_small_stack(name, source);
        assert!(!d.is_empty(), "{name}");
        assert!(
            d.len() <= kds_lang::MAX_DIAGNOSTICS * 2 + 1,
            "{name}: {}",
            d.len()
        );
    }
}

#[test]
fn nesting_at_the_limit_still_parses() {
    let n = kds_lang::MAX_BRACKET_DEPTH;
    // Each level of these recurses through the most grammar rules.
    let pipes = format!("let x = {}a{}", "(a | where ".repeat(n), ")".repeat(n));
    let calls = format!("let x = {}1{}", "f(".repeat(n), ")".repeat(n));
    let lists = format!("let x = {}1{}", "[".repeat(n), "]".repeat(n));
    let command = format!("dq {}1{}", "poi(".repeat(n), ")".repeat(n));
    let sections = "section \"s\" {\n".repeat(kds_lang::MAX_SECTION_DEPTH)
        + &"}\n".repeat(kds_lang::MAX_SECTION_DEPTH);
    for (name, source) in [
        ("pipes", pipes),
        ("calls", calls),
        ("lists", lists),
        ("command", command),
        ("sections", sections),
    ] {
        let d = lint_on_small_stack(name, source);
        assert!(d.iter().all(|d| !d.is_error()), "{name}: {d:?}");
    }
    let d = lint_on_small_stack(
        "one too deep",
        format!("let x = {}1{}", "(".repeat(n + 1), ")".repeat(n + 1)),
    );
    assert_eq!(codes(&d), [kds_lang::Code::TooDeep]);
}

#[test]
fn many_errors_are_capped() {
    let d = lint_on_small_stack("bad lines", "let\n".repeat(10_000));
    assert_eq!(d.len(), kds_lang::MAX_DIAGNOSTICS + 1);
    assert_eq!(
        d.last().map(|d| d.code),
        Some(kds_lang::Code::TooManyErrors)
    );
    assert_eq!(
        d.last().map(|d| d.message.as_str()),
        Some("9900 more problems not shown")
    );
}
