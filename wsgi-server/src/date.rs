//! The `Date` header value (RFC 9110 §5.6.7 IMF-fixdate), formatted once per
//! second per thread: the codec has no clock, so the server passes it in.

use std::cell::RefCell;

thread_local! {
    static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Wall-clock time since the epoch as (seconds, nanoseconds), read from
/// the clock directly: `SystemTime::duration_since` is a checked
/// subtraction of ~40 instructions, and requests ask twice each (this
/// header, and a thread's busy stamp). 0 before the epoch.
pub fn unix_time() -> (u64, u32) {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) } != 0 || now.tv_sec < 0 {
        return (0, 0);
    }
    (now.tv_sec as u64, now.tv_nsec as u32)
}

/// A monotonic clock in nanoseconds (from an arbitrary start), read
/// directly: `Instant::elapsed`'s checked subtraction costs ~40
/// instructions, and every request's duration is taken.
pub fn monotonic_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return 0;
    }
    (now.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(now.tv_nsec as u64)
}

/// Calls `use_date` with the current IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn with_http_date<R>(use_date: impl FnOnce(&[u8]) -> R) -> R {
    let now = unix_time().0;
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != now {
            *cache = (now, format_imf_fixdate(now));
        }
        use_date(&cache.1)
    })
}

/// Formats seconds since the epoch as IMF-fixdate.
pub fn format_imf_fixdate(seconds: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = seconds / 86_400;
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two_digits(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let year = year.clamp(0, 9999) as u32;
    two_digits(&mut out[12..14], year / 100);
    two_digits(&mut out[14..16], year % 100);
    two_digits(&mut out[17..19], (second_of_day / 3600) as u32);
    two_digits(&mut out[20..22], (second_of_day / 60 % 60) as u32);
    two_digits(&mut out[23..25], (second_of_day % 60) as u32);
    out
}

fn two_digits(out: &mut [u8], value: u32) {
    out[0] = b'0' + (value / 10 % 10) as u8;
    out[1] = b'0' + (value % 10) as u8;
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let cases: &[(u64, &str)] = &[
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_795_305_600, "Sun, 22 Nov 2026 00:00:00 GMT"),
            (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT"),
        ];
        for (seconds, expect) in cases {
            assert_eq!(
                std::str::from_utf8(&format_imf_fixdate(*seconds)).unwrap(),
                *expect
            );
        }
    }

    /// The clock read directly agrees with `SystemTime`'s.
    #[test]
    fn unix_time_is_the_system_time() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let (seconds, nanos) = unix_time();
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let read = std::time::Duration::new(seconds, nanos);
        assert!(
            before <= read && read <= after,
            "{before:?} {read:?} {after:?}"
        );
    }

    /// The monotonic clock read directly moves as `Instant` does.
    #[test]
    fn monotonic_nanos_follow_instant() {
        let start = std::time::Instant::now();
        let first = monotonic_nanos();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = monotonic_nanos();
        let measured = start.elapsed().as_nanos() as u64;
        assert!(second - first >= 5_000_000, "{first} {second}");
        assert!(
            second - first <= measured,
            "{} > {measured}",
            second - first
        );
    }
}
