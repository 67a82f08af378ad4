//! A literal every match of a pattern must contain, found once at configuration so
//! that most requests are turned away by a substring search instead of the regex
//! engine (regex-lite has no literal optimisations of its own, and the regex ran for
//! every request).

/// The longest run of plain characters that any match of `pattern` must contain, if
/// one can be told without a full parse; `None` when unsure (alternation, flags such
/// as `(?i)`) — the regex then decides alone. Only characters outside groups count,
/// and a character a quantifier may drop (`s?`, `a*`, `b{0,2}`) ends a run.
pub fn required(pattern: &str) -> Option<String> {
    if pattern.contains('|') || pattern.contains("(?") {
        return None;
    }
    let chars: Vec<char> = pattern.chars().collect();
    let (mut best, mut run) = (String::new(), String::new());
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let literal = match c {
            '\\' => {
                i += 1;
                match chars.get(i) {
                    // `\<`, `\>`: word boundaries, not characters.
                    Some('<' | '>') => None,
                    // `\.`, `\/`, `\?`: the character itself.
                    Some(&e) if !e.is_ascii_alphanumeric() => Some(e),
                    // `\x2F`, `\u002F`, `\U0000002F`: a character by its code, whose
                    // digits are not characters to match: unsure.
                    Some('x' | 'u' | 'U') => return None,
                    // `\d`, `\b`, `\n`, ...: a class or an assertion.
                    Some(_) => None,
                    None => return None,
                }
            }
            '[' => {
                i = skip_class(&chars, i)?;
                None
            }
            '(' => {
                depth += 1;
                None
            }
            ')' => {
                depth = depth.checked_sub(1)?;
                None
            }
            '{' => {
                // A counted repetition's bounds are not characters to match.
                while chars.get(i)? != &'}' {
                    i += 1;
                }
                None
            }
            '.' | '^' | '$' | '*' | '+' | '?' | '}' => None,
            c => Some(c),
        };
        i += 1;
        let optional = matches!(chars.get(i), Some('?' | '*' | '{'));
        match literal {
            Some(c) if depth == 0 && !optional => {
                run.push(c);
                // `a+`: one `a` is required, but what follows need not be next to it.
                if chars.get(i) == Some(&'+') {
                    keep_longer(&mut best, &mut run);
                }
            }
            _ => keep_longer(&mut best, &mut run),
        }
    }
    keep_longer(&mut best, &mut run);
    (best.len() >= 2).then_some(best)
}

/// Past the character class opening at `chars[open]`: the index of its `]`.
fn skip_class(chars: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if chars.get(i) == Some(&'^') {
        i += 1;
    }
    // A `]` first in the class is a member, not its end.
    if chars.get(i) == Some(&']') {
        i += 1;
    }
    loop {
        match chars.get(i)? {
            '\\' => i += 2,
            '[' if chars.get(i + 1) == Some(&':') => {
                // `[:alpha:]` inside a class.
                i += 2;
                while chars.get(i)? != &']' {
                    i += 1;
                }
                i += 1;
            }
            ']' => return Some(i),
            _ => i += 1,
        }
    }
}

fn keep_longer(best: &mut String, run: &mut String) {
    if run.len() > best.len() {
        std::mem::swap(best, run);
    }
    run.clear();
}

#[cfg(test)]
mod tests {
    use super::required;
    use regex_lite::Regex;

    #[test]
    fn finds_the_required_run() {
        let r = |p: &str| required(p);
        assert_eq!(
            r(r"^https?://old\.example\.com/(.*)").as_deref(),
            Some("://old.example.com/")
        );
        assert_eq!(r(r"^http://h:8080/(.*)").as_deref(), Some("http://h:8080/"));
        assert_eq!(r(r"^(.*)$"), None);
        assert_eq!(r(r"a|b"), None, "alternation: unsure");
        assert_eq!(r(r"(?i)^http://x/"), None, "flags: unsure");
        assert_eq!(r(r"/api(/v1)?/users").as_deref(), Some("/users"));
        assert_eq!(r(r"ab+cd").as_deref(), Some("ab"));
        assert_eq!(r(r"x[a-z]{2}yz\d").as_deref(), Some("yz"));
        assert_eq!(r(r"a{2,}bc").as_deref(), Some("bc"));
        assert_eq!(r(r"[]x]abc").as_deref(), Some("abc"));
        assert_eq!(r(r"\"), None, "a trailing backslash");
        assert_eq!(r(r"a)"), None, "an unbalanced group");
    }

    /// Found by fuzzing (fuzz/, target `redirect_literal`): escapes that are not the
    /// character after the backslash were taken for literals, and a rule using them
    /// never redirected a URL without that text.
    #[test]
    fn escapes_that_are_not_characters_are_not_literals() {
        for (pattern, url) in [
            (r"\\\<!?", r"x\s"),
            (r"\<docs/", "/docs/a"),
            (r"/docs\>", "/docs/a"),
            (r"/a\x2Fb", "/a/b"),
            (r"/a\u002Fb", "/a/b"),
            (r"/a\U0000002Fb", "/a/b"),
            (r"/a\x{2F}b", "/a/b"),
        ] {
            let re = Regex::new(pattern).unwrap();
            assert!(re.is_match(url), "{pattern} should match {url}");
            let lit = required(pattern);
            assert!(
                lit.as_deref().is_none_or(|l| url.contains(l)),
                "{pattern} matches {url} but its literal {lit:?} is not in it"
            );
        }
    }

    /// The literal never turns away a URL the regex matches.
    #[test]
    fn never_rejects_a_match() {
        let patterns = [
            r"^https?://old\.example\.com/(.*)",
            r"/api(/v1)?/users",
            r"ab+cd",
            r"x[a-z]{2}yz\d",
            r"colou?r/(\w+)",
            r"^http://[^/]+/docs/",
            r"\.php$",
            r"a{2,}bc",
        ];
        let urls = [
            "http://old.example.com/a",
            "https://old.example.com/",
            "http://h/api/users",
            "http://h/api/v1/users",
            "abbbcd",
            "xqqyz7",
            "color/red",
            "colour/blue",
            "http://h/docs/x",
            "http://h/index.php",
            "aaabc",
            "http://new.example.com/a",
        ];
        for p in patterns {
            let re = Regex::new(p).unwrap();
            let lit = required(p);
            for u in urls {
                if re.is_match(u) {
                    assert!(
                        lit.as_deref().is_none_or(|l| u.contains(l)),
                        "{p} matches {u} but its literal {lit:?} is not in it"
                    );
                }
            }
        }
    }
}
