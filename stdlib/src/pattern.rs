//! WinDbg's wildcard patterns (`nt!Ps*`, `lm m nt*`): `*` any run, `?` one character, any
//! case.

/// Whether `text` matches `pattern`.
#[must_use]
pub fn matches_wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matching with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches_wildcard;

    #[test]
    fn wildcards_match_like_windbg() {
        assert!(matches_wildcard("Ps*", "PsActiveProcessHead"));
        assert!(matches_wildcard("ps*head", "PsActiveProcessHead"));
        assert!(matches_wildcard("*", ""));
        assert!(matches_wildcard("K?SwapContext", "KiSwapContext"));
        assert!(!matches_wildcard("Ps*", "KiSwapContext"));
        assert!(!matches_wildcard("nt", "ntdll"));
        assert!(matches_wildcard("*a*b*c", "xxaxxbxxc"));
        assert!(!matches_wildcard("*a*b*c", "xxaxxbxx"));
    }
}
