//! Text forms of the time types that [`ferry_nbfx::value`] does not parse: `xs:dateTime` with
//! any UTC offset, and `xs:duration`.

use ferry_nbfx::{DateTime, DateTimeKind, TimeSpan};

/// Ticks (100 ns) per second.
const TICKS_PER_SECOND: i64 = 10_000_000;
/// Ticks per day.
const TICKS_PER_DAY: i64 = 86_400 * TICKS_PER_SECOND;

/// Parses `xs:dateTime`: no zone (unspecified), `Z` (UTC), or an offset `±hh:mm`, which .NET
/// reads as a local time; its UTC ticks are kept with [`DateTimeKind::Local`], the binary form.
/// Fraction digits past the seventh (beyond 100 ns) are dropped.
pub fn parse_datetime(text: &str) -> Option<DateTime> {
    let (body, offset) = split_offset(text)?;
    let body = truncate_fraction(body);
    let parsed = DateTime::parse(&body)?;
    match offset {
        None => Some(parsed),
        Some(0) if text.ends_with('Z') => Some(DateTime {
            ticks: parsed.ticks,
            kind: DateTimeKind::Utc,
        }),
        Some(minutes) => {
            let ticks =
                i64::try_from(parsed.ticks).ok()? - i64::from(minutes) * 60 * TICKS_PER_SECOND;
            Some(DateTime {
                ticks: u64::try_from(ticks).ok()?,
                kind: DateTimeKind::Local,
            })
        }
    }
}

/// Splits `Z` or `±hh:mm` off the end: `(rest, offset in minutes)`.
fn split_offset(text: &str) -> Option<(&str, Option<i32>)> {
    if let Some(body) = text.strip_suffix('Z') {
        return Some((body, Some(0)));
    }
    let time_start = text.find('T')?;
    let tail = &text[time_start..];
    match tail.rfind(['+', '-']) {
        Some(pos) => {
            let (body, zone) = text.split_at(time_start + pos);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
            if h > 14 || m > 59 {
                return None;
            }
            Some((body, Some(sign * (h * 60 + m))))
        }
        None => Some((text, None)),
    }
}

fn truncate_fraction(body: &str) -> String {
    match body.split_once('.') {
        Some((whole, frac)) if frac.len() > 7 => format!("{whole}.{}", &frac[..7]),
        _ => body.to_owned(),
    }
}

/// Parses `xs:duration` into ticks the way .NET's `XmlConvert.ToTimeSpan` does: `-?PnYnMnDTnHnMn.nS`,
/// a year counting 365 days and a month 30. `None` for bad syntax or a value outside
/// `TimeSpan`'s range.
pub fn parse_duration(text: &str) -> Option<TimeSpan> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let rest = rest.strip_prefix('P')?;
    if rest.is_empty() {
        return None;
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut ticks: i64 = 0;
    let mut add = |n: i64, unit: i64| -> Option<()> {
        ticks = ticks.checked_add(n.checked_mul(unit)?)?;
        Some(())
    };
    for (n, unit) in fields(date, b"YMD")? {
        let unit = match unit {
            b'Y' => 365 * TICKS_PER_DAY,
            b'M' => 30 * TICKS_PER_DAY,
            _ => TICKS_PER_DAY,
        };
        add(n.parse().ok()?, unit)?;
    }
    if let Some(time) = time {
        for (n, unit) in fields(time, b"HMS")? {
            match unit {
                b'H' => add(n.parse().ok()?, 3600 * TICKS_PER_SECOND)?,
                b'M' => add(n.parse().ok()?, 60 * TICKS_PER_SECOND)?,
                _ => {
                    let (whole, frac) = n.split_once('.').unwrap_or((n, ""));
                    if !frac.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    add(
                        if whole.is_empty() {
                            0
                        } else {
                            whole.parse().ok()?
                        },
                        TICKS_PER_SECOND,
                    )?;
                    let digits: String =
                        frac.chars().chain(std::iter::repeat('0')).take(7).collect();
                    add(digits.parse().ok()?, 1)?;
                }
            }
        }
    }
    Some(TimeSpan(if negative { -ticks } else { ticks }))
}

/// Splits `1D` / `2H30M5.5S` into (number, designator) pairs; designators must appear in the
/// order of `units`, each at most once, and every number must be non-empty digits (a fraction
/// only for seconds, checked by the caller).
fn fields<'a>(text: &'a str, units: &[u8]) -> Option<Vec<(&'a str, u8)>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut allowed = units;
    for (i, b) in text.bytes().enumerate() {
        if b.is_ascii_digit() || (b == b'.' && units == b"HMS") {
            continue;
        }
        let pos = allowed.iter().position(|&u| u == b)?;
        let n = &text[start..i];
        if n.is_empty() || (b != b'S' && n.contains('.')) {
            return None;
        }
        out.push((n, b));
        allowed = &allowed[pos + 1..];
        start = i + 1;
    }
    (start == text.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT0S"), Some(TimeSpan(0)));
        assert_eq!(
            parse_duration("P1DT2H3M4.5S"),
            Some(TimeSpan(
                TICKS_PER_DAY + (2 * 3600 + 3 * 60 + 4) * TICKS_PER_SECOND + 5_000_000
            ))
        );
        assert_eq!(parse_duration("-PT0.0000001S"), Some(TimeSpan(-1)));
        assert_eq!(parse_duration("P1Y"), Some(TimeSpan(365 * TICKS_PER_DAY)));
        for bad in [
            "",
            "P",
            "PT",
            "1D",
            "P1H",
            "PT1D",
            "P1.5D",
            "PTS",
            "P1D1D",
            "P99999999999999999999D",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        // What nbfx prints, we parse.
        for ticks in [0, 1, -1, 36_000_000_001, i64::MAX, i64::MIN + 1] {
            let t = TimeSpan(ticks);
            assert_eq!(parse_duration(&t.to_string()), Some(t), "{t}");
        }
    }

    #[test]
    fn datetimes() {
        let utc = parse_datetime("2024-05-17T13:45:30.123Z").unwrap();
        assert_eq!(utc.kind, DateTimeKind::Utc);
        assert_eq!(utc.to_string(), "2024-05-17T13:45:30.123Z");
        let local = parse_datetime("2024-05-17T15:45:30.123+02:00").unwrap();
        assert_eq!((local.ticks, local.kind), (utc.ticks, DateTimeKind::Local));
        let west = parse_datetime("2024-05-17T08:45:30.123-05:00").unwrap();
        assert_eq!(west.ticks, utc.ticks);
        let plain = parse_datetime("2024-05-17T13:45:30.12345678").unwrap();
        assert_eq!(plain.kind, DateTimeKind::Unspecified);
        assert_eq!(plain.to_string(), "2024-05-17T13:45:30.1234567");
        for bad in [
            "",
            "2024-05-17",
            "2024-05-17T13:45:30+2:00",
            "2024-13-01T00:00:00",
            "x",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }
}
