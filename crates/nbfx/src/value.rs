//! The fixed-size value types of MC-NBFX text records (2.2.3) and how .NET prints them.
//!
//! .NET's reader turns every typed record into text with `XmlConvert` / `XmlConverter`; we print
//! the same strings so that a document converted to XML text here reads like one converted by
//! WCF: `INF`/`-INF`/`NaN` for non-finite doubles, shortest round-trip digits with an `E+XX`
//! exponent outside the plain range, decimals with their scale, `DateTime` with at most seven
//! fraction digits and its kind (`Z`), `TimeSpan` as `xs:duration`, GUIDs in lowercase.

use std::fmt;

/// A 16-byte GUID in .NET `Guid.ToByteArray` order (MC-NBFX 2.2.3.27 UuidText): Data1 u32 LE,
/// Data2 u16 LE, Data3 u16 LE, then eight bytes as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// A random (version 4, RFC 9562 §5.4) GUID made of `random`, 16 random bytes: the
    /// version and variant bits are set, the other 122 bits are the caller's.
    pub fn v4(random: [u8; 16]) -> Self {
        let mut b = random;
        // Wire order: the version nibble tops Data3, stored little-endian (byte 7); the
        // variant bits top byte 8, which is stored as is.
        b[7] = (b[7] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Self(b)
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
            return None;
        }
        let mut hex = [0u8; 16];
        let mut n = 0;
        let mut chars = text.chars().filter(|&c| c != '-');
        while n < 16 {
            let hi = chars.next()?.to_digit(16)?;
            let lo = chars.next()?.to_digit(16)?;
            hex[n] = (hi * 16 + lo) as u8;
            n += 1;
        }
        // The text is in display order; the wire wants the first three groups little-endian.
        let mut out = hex;
        out[0..4].copy_from_slice(&[hex[3], hex[2], hex[1], hex[0]]);
        out[4..6].copy_from_slice(&[hex[5], hex[4]]);
        out[6..8].copy_from_slice(&[hex[7], hex[6]]);
        Some(Self(out))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for byte in &b[10..] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A .NET `decimal` (MC-NBFX 2.2.3.10 DecimalText): 96-bit magnitude, sign and a scale of 0–28.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Decimal {
    /// Power of ten the magnitude is divided by, 0–28.
    pub scale: u8,
    /// Sign.
    pub negative: bool,
    /// The 96-bit magnitude (`hi << 64 | lo`); only the low 96 bits may be set.
    pub magnitude: u128,
}

impl Decimal {
    /// Largest scale .NET allows.
    pub const MAX_SCALE: u8 = 28;

    /// Decodes the 16-byte wire image (u16 reserved, u8 scale, u8 sign, u32 hi, u64 lo).
    /// `None` if the reserved bits are set or the scale is above 28, which .NET rejects too.
    pub fn from_bytes(b: [u8; 16]) -> Option<Self> {
        if b[0] != 0 || b[1] != 0 || b[2] > Self::MAX_SCALE || (b[3] != 0 && b[3] != 0x80) {
            return None;
        }
        let hi = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let lo = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        Some(Self {
            scale: b[2],
            negative: b[3] == 0x80,
            magnitude: (u128::from(hi) << 64) | u128::from(lo),
        })
    }

    /// The 16-byte wire image.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[2] = self.scale.min(Self::MAX_SCALE);
        b[3] = if self.negative { 0x80 } else { 0 };
        b[4..8].copy_from_slice(&((self.magnitude >> 64) as u32).to_le_bytes());
        b[8..16].copy_from_slice(&(self.magnitude as u64).to_le_bytes());
        b
    }

    /// Parses `-?digits(.digits)?` keeping the scale (`"12.750"` has scale 3, as in .NET).
    pub fn parse(text: &str) -> Option<Self> {
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if int.is_empty() && frac.is_empty() || frac.len() > usize::from(Self::MAX_SCALE) {
            return None;
        }
        let mut magnitude: u128 = 0;
        for c in int.chars().chain(frac.chars()) {
            magnitude = magnitude
                .checked_mul(10)?
                .checked_add(u128::from(c.to_digit(10)?))?;
        }
        if magnitude >> 96 != 0 {
            return None;
        }
        Some(Self {
            scale: frac.len() as u8,
            negative,
            magnitude,
        })
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.magnitude.to_string();
        let scale = usize::from(self.scale);
        if self.negative && self.magnitude != 0 {
            f.write_str("-")?;
        }
        if scale == 0 {
            return f.write_str(&digits);
        }
        if digits.len() <= scale {
            write!(f, "0.{}{digits}", "0".repeat(scale - digits.len()))
        } else {
            let (int, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{int}.{frac}")
        }
    }
}

/// The kind of a [`DateTime`], from the top two bits of the wire value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DateTimeKind {
    /// No zone (0).
    #[default]
    Unspecified,
    /// UTC (1), printed with `Z`.
    Utc,
    /// Local time (2); the ticks on the wire are UTC, printed here with `+00:00`.
    Local,
}

/// Ticks (100 ns) in one day.
const TICKS_PER_DAY: u64 = 864_000_000_000;
/// Largest valid tick count: 9999-12-31T23:59:59.9999999.
const MAX_TICKS: u64 = 3_155_378_975_999_999_999;

/// A .NET `DateTime` (MC-NBFX 2.2.3.11 DateTimeText): 62 bits of 100 ns ticks since
/// 0001-01-01T00:00:00 and a [`DateTimeKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DateTime {
    /// Ticks since 0001-01-01, at most 9999-12-31T23:59:59.9999999.
    pub ticks: u64,
    /// The kind.
    pub kind: DateTimeKind,
}

impl DateTime {
    /// Decodes the wire u64; `None` for kind 3 or ticks past year 9999 (.NET rejects both).
    pub fn from_wire(raw: u64) -> Option<Self> {
        let ticks = raw & 0x3FFF_FFFF_FFFF_FFFF;
        let kind = match raw >> 62 {
            0 => DateTimeKind::Unspecified,
            1 => DateTimeKind::Utc,
            2 => DateTimeKind::Local,
            _ => return None,
        };
        (ticks <= MAX_TICKS).then_some(Self { ticks, kind })
    }

    /// The wire u64.
    pub fn to_wire(self) -> u64 {
        let kind = match self.kind {
            DateTimeKind::Unspecified => 0,
            DateTimeKind::Utc => 1,
            DateTimeKind::Local => 2,
        };
        (self.ticks.min(MAX_TICKS)) | (kind << 62)
    }

    /// Builds a value from calendar fields (proleptic Gregorian); `None` if out of range.
    pub fn from_parts(
        (year, month, day): (i64, u32, u32),
        (hour, minute, second): (u32, u32, u32),
        fraction_ticks: u32,
        kind: DateTimeKind,
    ) -> Option<Self> {
        if !(1..=9999).contains(&year)
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
            || fraction_ticks >= 10_000_000
        {
            return None;
        }
        let days = days_from_civil(year, month, day) + 719_162;
        let secs = u64::from(hour * 3600 + minute * 60 + second);
        let ticks = (days as u64) * TICKS_PER_DAY + secs * 10_000_000 + u64::from(fraction_ticks);
        Some(Self { ticks, kind })
    }

    /// Parses the `xs:dateTime` form [`Display`](fmt::Display) prints (`Z`, `+00:00` or no zone).
    pub fn parse(text: &str) -> Option<Self> {
        let (body, kind) = if let Some(b) = text.strip_suffix('Z') {
            (b, DateTimeKind::Utc)
        } else if let Some(b) = text.strip_suffix("+00:00") {
            (b, DateTimeKind::Local)
        } else {
            (text, DateTimeKind::Unspecified)
        };
        let (date, time) = body.split_once('T')?;
        let mut d = date.splitn(3, '-');
        let year: i64 = d.next()?.parse().ok()?;
        let month: u32 = d.next()?.parse().ok()?;
        let day: u32 = d.next()?.parse().ok()?;
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let mut t = hms.splitn(3, ':');
        let hour: u32 = t.next()?.parse().ok()?;
        let minute: u32 = t.next()?.parse().ok()?;
        let second: u32 = t.next()?.parse().ok()?;
        if frac.len() > 7 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let fraction = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<7}").parse().ok()?
        };
        Self::from_parts((year, month, day), (hour, minute, second), fraction, kind)
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = (self.ticks / TICKS_PER_DAY) as i64;
        let rem = self.ticks % TICKS_PER_DAY;
        let (y, m, d) = civil_from_days(days - 719_162);
        let secs = rem / 10_000_000;
        let frac = rem % 10_000_000;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )?;
        if frac != 0 {
            let s = format!("{frac:07}");
            write!(f, ".{}", s.trim_end_matches('0'))?;
        }
        match self.kind {
            DateTimeKind::Unspecified => Ok(()),
            DateTimeKind::Utc => f.write_str("Z"),
            DateTimeKind::Local => f.write_str("+00:00"),
        }
    }
}

/// A .NET `TimeSpan` (MC-NBFX 2.2.3.26 TimeSpanText): signed 100 ns ticks, printed as
/// `xs:duration` the way `XmlConvert.ToString(TimeSpan)` does (`P1DT2H3M4.5S`, `PT0S`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TimeSpan(pub i64);

impl fmt::Display for TimeSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ticks = self.0.unsigned_abs();
        if self.0 < 0 {
            f.write_str("-")?;
        }
        let days = ticks / TICKS_PER_DAY;
        let rem = ticks % TICKS_PER_DAY;
        let (h, m) = (rem / 36_000_000_000, rem / 600_000_000 % 60);
        let (s, frac) = (rem / 10_000_000 % 60, rem % 10_000_000);
        f.write_str("P")?;
        if days != 0 {
            write!(f, "{days}D")?;
        }
        if rem == 0 {
            return if days == 0 {
                f.write_str("T0S")
            } else {
                Ok(())
            };
        }
        f.write_str("T")?;
        if h != 0 {
            write!(f, "{h}H")?;
        }
        if m != 0 {
            write!(f, "{m}M")?;
        }
        if s != 0 || frac != 0 {
            write!(f, "{s}")?;
            if frac != 0 {
                let digits = format!("{frac:07}");
                write!(f, ".{}", digits.trim_end_matches('0'))?;
            }
            f.write_str("S")?;
        }
        Ok(())
    }
}

/// Formats a double like `XmlConvert.ToString(double)`: `INF`, `-INF`, `NaN`, `-0`, shortest
/// round-trip digits, scientific (`1E+15`, `1E-05`) outside 1e-4 ≤ |x| < 1e15.
pub fn format_double(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "INF".into() } else { "-INF".into() };
    }
    format_shortest(&format!("{v:e}"), 15)
}

/// Formats a float like `XmlConvert.ToString(float)`: as [`format_double`] with the plain range
/// ending at 1e7.
pub fn format_float(v: f32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "INF".into() } else { "-INF".into() };
    }
    format_shortest(&format!("{v:e}"), 7)
}

/// Parses a double printed by [`format_double`] (or any Rust float syntax).
pub fn parse_double(text: &str) -> Option<f64> {
    match text {
        "INF" | "Infinity" => Some(f64::INFINITY),
        "-INF" | "-Infinity" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Turns Rust's shortest `{:e}` output (`-1.25e-3`) into .NET's "R" layout.
fn format_shortest(sci: &str, precision: i32) -> String {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if digits.bytes().all(|d| d == b'0') {
        return format!("{neg}0");
    }
    if exp >= precision || exp < -4 {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{neg}{first}{dot}E{sign}{:02}", exp.unsigned_abs());
    }
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return format!("{neg}0.{zeros}{digits}");
    }
    let int_len = (exp + 1) as usize;
    if digits.len() <= int_len {
        format!("{neg}{digits}{}", "0".repeat(int_len - digits.len()))
    } else {
        let (int, frac) = digits.split_at(int_len);
        format!("{neg}{int}.{frac}")
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use test_case::test_case;

    use super::*;

    #[test]
    fn random_guids_are_version_4_and_print_as_such() {
        for fill in [0x00u8, 0xff, 0x5a] {
            let text = Guid::v4([fill; 16]).to_string();
            assert_eq!(text.len(), 36);
            assert_eq!(&text[14..15], "4", "{text}");
            assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
            assert_eq!(Guid::parse(&text), Some(Guid::v4([fill; 16])));
        }
    }

    #[test_case(1.0 / 3.0, "0.3333333333333333")]
    #[test_case(2.5, "2.5")]
    #[test_case(-7.25, "-7.25")]
    #[test_case(f64::INFINITY, "INF")]
    #[test_case(f64::NEG_INFINITY, "-INF")]
    #[test_case(f64::NAN, "NaN")]
    #[test_case(-0.0, "-0")]
    #[test_case(0.0, "0")]
    #[test_case(1e15, "1E+15")]
    #[test_case(1e14, "100000000000000")]
    #[test_case(0.0001, "0.0001")]
    #[test_case(0.00001, "1E-05")]
    #[test_case(1.5e-300, "1.5E-300")]
    #[test_case(32.489999999999995, "32.489999999999995")]
    fn doubles(v: f64, text: &str) {
        assert_eq!(format_double(v), text);
    }

    #[test_case(0.05f32, "0.05")]
    #[test_case(1e7f32, "1E+07")]
    fn floats(v: f32, text: &str) {
        assert_eq!(format_float(v), text);
    }

    #[test]
    fn guid_display_and_parse() {
        let g = Guid::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap();
        assert_eq!(g.0[..4], [0xe0, 0x04, 0x25, 0x3f]);
        assert_eq!(g.to_string(), "3f2504e0-4f89-11d3-9a0c-0305e82c3301");
    }

    #[test_case("12.75", 2, 1275)]
    #[test_case("0.05", 2, 5)]
    #[test_case("-3", 0, 3)]
    #[test_case("12.750", 3, 12750)]
    fn decimals(text: &str, scale: u8, magnitude: u128) {
        let d = Decimal::parse(text).unwrap();
        assert_eq!((d.scale, d.magnitude), (scale, magnitude));
        assert_eq!(d.to_string(), text);
        assert_eq!(Decimal::from_bytes(d.to_bytes()), Some(d));
    }

    #[test]
    fn datetimes() {
        let dt = DateTime::parse("2024-05-17T13:45:30.123Z").unwrap();
        assert_eq!(dt.to_string(), "2024-05-17T13:45:30.123Z");
        assert_eq!(DateTime::from_wire(dt.to_wire()), Some(dt));
        assert_eq!(
            DateTime::from_wire(0).unwrap().to_string(),
            "0001-01-01T00:00:00"
        );
        let max = DateTime {
            ticks: MAX_TICKS,
            kind: DateTimeKind::Unspecified,
        };
        assert_eq!(max.to_string(), "9999-12-31T23:59:59.9999999");
        assert_eq!(DateTime::from_wire(3 << 62), None);
    }

    #[test_case(0, "PT0S")]
    #[test_case(10_000_000, "PT1S")]
    #[test_case(-15_000_000, "-PT1.5S")]
    #[test_case(TICKS_PER_DAY as i64 + 36_000_000_000 * 2 + 600_000_000 * 3, "P1DT2H3M")]
    #[test_case(TICKS_PER_DAY as i64, "P1D")]
    #[test_case(i64::MIN, "-P10675199DT2H48M5.4775808S")]
    fn timespans(ticks: i64, text: &str) {
        assert_eq!(TimeSpan(ticks).to_string(), text);
    }
}
