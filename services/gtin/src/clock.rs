//! Calendar helpers shared by the snapshot (file names, `updated` dates), the sync job (`UPD_DT`,
//! report names) and the API (`"updated":"2024-01-31"`). Hand-written because the service only needs
//! UTC civil dates, not a time-zone library. Durations (`--every`, `--drain-timeout`) are
//! Go's, read by the serving kit.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A calendar date held as the integer `yyyymmdd`, the form both the legacy export and the snapshot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("date must be 8 digits YYYYMMDD, got {0:?}")]
    Format(String),
    #[error("no such date {0}")]
    NoSuchDay(u32),
}

impl Date {
    /// Parses `YYYYMMDD`, checking that the day exists. Years outside 1900..=2999 are treated as typos.
    pub fn parse_yyyymmdd(text: &str) -> Result<Date, DateError> {
        if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DateError::Format(text.chars().take(32).collect()));
        }
        let value: u32 = text.parse().map_err(|_| DateError::Format(text.to_string()))?;
        Date::from_u32(value).ok_or(DateError::NoSuchDay(value))
    }

    /// Accepts `yyyymmdd` as an integer if it names a real day.
    pub fn from_u32(value: u32) -> Option<Date> {
        let (y, m, d) = (value / 10_000, value / 100 % 100, value % 100);
        let valid = (1900..=2999).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m);
        valid.then_some(Date(value))
    }

    pub fn as_u32(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.0 / 10_000, self.0 / 100 % 100, self.0 % 100)
    }
}

fn is_leap(y: u32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A UTC wall-clock instant split into fields, for file names and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: u32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl UtcTime {
    pub fn from_unix(secs: u64) -> UtcTime {
        let mut days = secs / 86_400;
        let rest = secs % 86_400;
        let mut year = 1970u32;
        loop {
            let len = if is_leap(year) { 366 } else { 365 };
            if days < len {
                break;
            }
            days -= len;
            year += 1;
        }
        let mut month = 1u32;
        loop {
            let len = u64::from(days_in_month(year, month));
            if days < len {
                break;
            }
            days -= len;
            month += 1;
        }
        UtcTime {
            year,
            month,
            day: days as u32 + 1,
            hour: (rest / 3600) as u32,
            minute: (rest / 60 % 60) as u32,
            second: (rest % 60) as u32,
        }
    }

    pub fn now() -> UtcTime {
        UtcTime::from_unix(unix_now())
    }

    /// `yyyymmddThhmmss`: sorts the same as time, fits in a file name.
    pub fn compact(&self) -> String {
        format!("{:04}{:02}{:02}T{:02}{:02}{:02}", self.year, self.month, self.day, self.hour, self.minute, self.second)
    }

    /// RFC 3339 in UTC, for reports.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked_and_formatted() {
        assert_eq!(Date::parse_yyyymmdd("20240131").unwrap().to_string(), "2024-01-31");
        assert_eq!(Date::parse_yyyymmdd("20240229").unwrap().as_u32(), 20_240_229);
        assert_eq!(Date::parse_yyyymmdd("20230229"), Err(DateError::NoSuchDay(20_230_229)));
        assert_eq!(Date::parse_yyyymmdd("20241301"), Err(DateError::NoSuchDay(20_241_301)));
        assert!(Date::parse_yyyymmdd("2024-01-3").is_err());
        assert!(Date::parse_yyyymmdd("").is_err());
        assert!(Date::parse_yyyymmdd("+2024013").is_err());
        assert!(Date::from_u32(19_000_229).is_none());
        assert!(Date::from_u32(20_000_229).is_some());
    }

    #[test]
    fn unix_seconds_become_utc_fields() {
        assert_eq!(UtcTime::from_unix(0).compact(), "19700101T000000");
        // 2024-02-29T12:34:56Z, a leap day.
        assert_eq!(UtcTime::from_unix(1_709_210_096).rfc3339(), "2024-02-29T12:34:56Z");
        assert_eq!(UtcTime::from_unix(1_735_689_599).compact(), "20241231T235959");
    }
}
