//! RFC 3339 timestamps for `org.opencontainers.image.created` without a date crate: the
//! conversion is twenty lines (Howard Hinnant's civil-from-days) and needs no time zone data.

/// Formats seconds since the Unix epoch as `YYYY-MM-DDThh:mm:ssZ`.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The seconds since the Unix epoch of a timestamp exactly as [`rfc3339`] writes it
/// (`YYYY-MM-DDThh:mm:ssZ`); `None` for any other text.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20 || !looks_like_rfc3339(s) || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant), the inverse of the conversion above.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let epoch = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    // Only a canonical text (no 25:61:99, no 02-30) gives its own epoch back.
    (rfc3339(epoch) == s).then_some(epoch)
}

/// True for text shaped like an RFC 3339 timestamp (`2024-01-02T03:04:05Z`, offsets allowed).
pub fn looks_like_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':'
        && [0usize, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert!(super::looks_like_rfc3339("2023-11-14T22:13:20Z"));
        for e in [0, 951_782_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(super::parse_rfc3339(&super::rfc3339(e)), Some(e));
        }
        assert_eq!(super::parse_rfc3339("2023-02-30T00:00:00Z"), None);
        assert_eq!(super::parse_rfc3339("2023-11-14T22:13:20+01:00"), None);
        assert!(!super::looks_like_rfc3339("yesterday"));
    }
}
