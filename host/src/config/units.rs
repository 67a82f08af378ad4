//! Sizes (`64KiB`, `1MiB`, bare bytes) and durations (`250ms`, `2s`, `1m`, `1h`) as
//! users write them.

use std::time::Duration;

/// Parses a size: bare bytes, or a number with `KiB`, `MiB` or `GiB` (optionally `B`).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "`{text}` is not a size (write bytes, or e.g. 64KiB, 1MiB, 2GiB)"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}` (use bytes, KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a duration: one or more `<number><unit>` parts, unit `ms`, `s`, `m` or `h`
/// (e.g. `250ms`, `1.5s`, `1m30s`). A bare number is refused: its unit would be a guess.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let all = text.trim();
    let bad = || format!("`{all}` is not a duration (write e.g. 250ms, 2s, 1m, 1h)");
    if all.is_empty() {
        return Err(bad());
    }
    let mut rest = all;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let seconds = match unit.trim() {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            "" => {
                return Err(format!(
                    "`{all}` needs a unit (ms, s, m, h or d), e.g. {num}s"
                ));
            }
            other => {
                return Err(format!(
                    "unknown duration unit `{other}` in `{all}` (use ms, s, m, h or d)"
                ));
            }
        };
        total = Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|d| total.checked_add(d))
            .ok_or_else(bad)?;
        rest = next.trim_start();
    }
    Ok(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64 KiB"), Ok(64 * 1024));
        assert!(
            parse_size("64KB")
                .unwrap_err()
                .contains("unknown size unit `KB`")
        );
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        // Days: ACME's `renew_before: 30d`.
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert!(
            parse_duration("5w")
                .unwrap_err()
                .contains("unknown duration unit `w`")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }
}
