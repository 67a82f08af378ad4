//! The `redirect` filter's shortcut: the literal it finds in a pattern (requests
//! without it skip the regex) must be in every URL the regex matches.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The pattern, a NUL, then a URL.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((pattern, url)) = text.split_once('\0') else {
        return;
    };
    let Ok(re) = regex_lite::Regex::new(pattern) else {
        return;
    };
    if let Some(literal) = redirect::literal::required(pattern) {
        assert!(
            !re.is_match(url) || url.contains(&literal),
            "{pattern:?} matches {url:?}, which lacks its required literal {literal:?}"
        );
    }
});
