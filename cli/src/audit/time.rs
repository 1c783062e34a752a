//! Times on the command line and in reports: milliseconds since the Unix epoch, read from and written as
//! UTC dates (`2026-11-25`, `2026-11-25T14:30:00Z`) without a date library.

use anyhow::bail;
use hearth_models::calendar::{civil_from_days, days_from_civil};

/// Parses `1700000000000` (ms), `2026-11-25` (midnight UTC) or `2026-11-25T14:30:00Z` (the `Z` optional,
/// a space allowed instead of `T`).
pub fn parse(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(s.parse()?);
    }
    let (date, clock) = match s.split_once(['T', ' ']) {
        Some((d, c)) => (d, c.trim_end_matches('Z')),
        None => (s, "00:00:00"),
    };
    let num = |x: &str, what: &str| -> anyhow::Result<i64> {
        x.parse::<i64>().map_err(|_| anyhow::anyhow!("time {s:?}: {what} {x:?} is not a number"))
    };
    let d: Vec<&str> = date.split('-').collect();
    let c: Vec<&str> = clock.split(':').collect();
    let ([y, mo, da], [h, mi, rest @ ..]) = (d.as_slice(), c.as_slice()) else {
        bail!("time {s:?}: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS]Z or milliseconds since the epoch");
    };
    let (y, mo, da, h, mi) =
        (num(y, "year")?, num(mo, "month")?, num(da, "day")?, num(h, "hour")?, num(mi, "minute")?);
    let sec = match rest {
        [] => 0,
        [sec] => num(sec, "second")?,
        _ => bail!("time {s:?}: too many ':'"),
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || sec > 60 || y < 1970 {
        bail!("time {s:?} is out of range");
    }
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + sec;
    Ok(u64::try_from(secs)? * 1000)
}

/// `2026-11-25T14:30:00.123Z`.
pub fn format(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", r / 3600, r / 60 % 60, r % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_nonsense() {
        assert_eq!(parse("1970-01-01").unwrap(), 0);
        assert_eq!(parse("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000);
        assert_eq!(parse("2023-11-14 22:13:20").unwrap(), 1_700_000_000_000);
        assert_eq!(parse("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(format(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format(parse("2024-02-29T23:59").unwrap()), "2024-02-29T23:59:00.000Z");
        for bad in ["", "yesterday", "2024-13-01", "2024-01-01T25:00", "2024-01", "1960-01-01"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
