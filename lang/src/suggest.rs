//! "Did you mean ...?": the closest known name to a misspelt one.

/// The candidate closest to `word` by edit distance (adjacent transpositions count as one
/// edit), if it is close enough to be a likely typo: at most one edit for short words, two
/// for longer ones and three for long ones. Ties go to the earlier candidate.
#[must_use]
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let len = word.chars().count();
    let limit = match len {
        0..=2 => 0,
        3..=4 => 1,
        5..=10 => 2,
        _ => 3,
    };
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        if c == word {
            continue;
        }
        let d = strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase());
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn finds_typos_and_ignores_strangers() {
        let names = ["!process", ".process", "!peb", "!pte"];
        assert_eq!(closest("!proces", names), Some("!process"));
        assert_eq!(closest(".porcess", names), Some(".process"));
        assert_eq!(closest("!pbe", names), Some("!peb"));
        assert_eq!(closest("!analyze", names), None);
        assert_eq!(closest("x", ["k"]), None);
    }
}
