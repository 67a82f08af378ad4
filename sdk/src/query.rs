//! Query-string helpers for `:path` values: read a parameter, drop a parameter, read
//! a cookie.

/// Decodes `%XX` escapes and `+` (as a space), as forms encode query values.
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|d| char::from(*d).to_digit(16));
        match c {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(c),
            },
            b'+' => out.push(b' '),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// The decoded value of the first parameter `name` in `path`'s query.
pub fn param(path: &str, name: &str) -> Option<Vec<u8>> {
    let (_, query) = path.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name.as_bytes()).then(|| percent_decode(v))
    })
}

/// `path` without any parameter `name` (and without a `?` left dangling).
pub fn without_param(path: &str, name: &str) -> String {
    let Some((p, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            percent_decode(k) != name.as_bytes()
        })
        .collect();
    if kept.iter().all(|s| s.is_empty()) {
        p.to_string()
    } else {
        format!("{p}?{}", kept.join("&"))
    }
}

/// The value of cookie `name` in a `Cookie` header value (`a=1; b=2`).
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        assert_eq!(
            param("/a?x=1&api_key=s%33cret+x", "api_key"),
            Some(b"s3cret x".to_vec())
        );
        assert_eq!(param("/a?api_key", "api_key"), Some(Vec::new()));
        assert_eq!(param("/a?x=1", "api_key"), None);
        assert_eq!(param("/a", "api_key"), None);
        assert_eq!(percent_decode("%zz%4"), b"%zz%4".to_vec());
    }

    #[test]
    fn cookies() {
        assert_eq!(cookie("a=1; session=tok; b=2", "session"), Some("tok"));
        assert_eq!(cookie("session=\"q\"", "session"), Some("q"));
        assert_eq!(cookie("a=1", "session"), None);
    }

    #[test]
    fn removal() {
        assert_eq!(
            without_param("/a?x=1&api_key=k&y=2", "api_key"),
            "/a?x=1&y=2"
        );
        assert_eq!(without_param("/a?api_key=k", "api_key"), "/a");
        assert_eq!(without_param("/a", "api_key"), "/a");
        assert_eq!(without_param("/a?api%5Fkey=k&b", "api_key"), "/a?b");
    }
}
