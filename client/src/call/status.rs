//! The metadata of calls and answers: `grpc-timeout`, the server's retry
//! pushback, `x-request-id`.

use std::cell::RefCell;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::Status;

/// The metadata key of a server's retry pushback, in milliseconds (gRFC A6).
pub const RETRY_PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";

/// The metadata key of the deadline an attempt carries.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// [`GRPC_TIMEOUT`] as a header name, made once rather than parsed per call.
pub(crate) const GRPC_TIMEOUT_HEADER: http::HeaderName =
    http::HeaderName::from_static(GRPC_TIMEOUT);

/// `remaining` as a `grpc-timeout` value, rounded down: in microseconds under
/// a second, in milliseconds from a second on (the next units past 8 digits).
/// Milliseconds keep the value the same across the calls of a busy client
/// with the same timeout, which HPACK then sends as one table index.
pub(crate) fn grpc_timeout(remaining: Duration) -> http::HeaderValue {
    const MAX: u64 = 99_999_999;
    // In 64 bits: every value below is at most `MAX` (the digits are
    // divided out one by one, and 128-bit division is a call each).
    let secs = remaining.as_secs();
    let (value, unit) = if secs == 0 {
        (u64::from(remaining.subsec_micros()), b'u')
    } else if secs <= MAX / 1000 {
        (secs * 1000 + u64::from(remaining.subsec_millis()), b'm')
    } else if secs <= MAX {
        (secs, b'S')
    } else {
        ((secs / 3600).min(MAX), b'H')
    };
    // At most 8 digits and the unit, written from the end.
    let mut text = [0u8; 9];
    let mut at = text.len() - 1;
    text[at] = unit;
    let mut rest = value;
    loop {
        at -= 1;
        text[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 || at == 0 {
            break;
        }
    }
    http::HeaderValue::from_bytes(&text[at..])
        .unwrap_or_else(|_| http::HeaderValue::from_static("1S"))
}

/// The duration a `grpc-timeout` value says: 1 to 8 digits and a unit (`H`,
/// `M`, `S`, `m`, `u`, `n`); `None` when it is not one.
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The server's pushback: `None` when absent, `Some(None)` when it says "do not
/// retry" (negative or unparsable, per gRFC A6), `Some(Some(d))` to wait `d`.
pub(crate) fn pushback(status: &Status) -> Option<Option<Duration>> {
    let value = status.metadata().get(RETRY_PUSHBACK_KEY)?;
    let ms = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok());
    Some(
        ms.and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis),
    )
}

/// The metadata key of a call's request id.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// [`REQUEST_ID`] as a header name, made once rather than parsed per call.
pub(crate) const REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);

/// 128 random bits in hex: one per call, the same on all its attempts.
///
/// Marked sensitive, so HPACK sends it as a literal that is never indexed: a
/// value seen once would only churn both sides' header tables.
pub(crate) fn request_id() -> MetadataValue<tonic::metadata::Ascii> {
    use rand::{Rng, SeedableRng};
    thread_local! {
        // A fast generator per thread, seeded from the OS-seeded one: request
        // ids need to be unique, not unpredictable.
        static IDS: RefCell<rand::rngs::SmallRng> =
            RefCell::new(rand::rngs::SmallRng::from_rng(&mut rand::rng()));
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id: u128 = IDS.with(|rng| rng.borrow_mut().random());
    let mut text = [0u8; 32];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    let mut value =
        MetadataValue::try_from(&text[..]).unwrap_or_else(|_| MetadataValue::from_static("0"));
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_is_rounded_down_in_the_finest_unit_that_fits() {
        let cases = [
            (Duration::from_nanos(999), "0u"),
            (Duration::from_micros(49_999), "49999u"),
            (Duration::from_millis(999), "999000u"),
            (Duration::from_micros(4_999_876), "4999m"),
            (Duration::from_secs(5), "5000m"),
            (Duration::from_millis(99_999_999), "99999999m"),
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(100_000_000), "27777H"),
            (Duration::from_secs(99_999_999), "99999999S"),
            (Duration::from_secs(u64::MAX), "99999999H"),
        ];
        for (remaining, expected) in cases {
            let value = grpc_timeout(remaining);
            assert_eq!(value.to_str().ok(), Some(expected), "{remaining:?}");
        }
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_bad_ones_do_not() {
        let cases = [
            ("2H", Some(Duration::from_secs(7200))),
            ("3M", Some(Duration::from_secs(180))),
            ("99999999S", Some(Duration::from_secs(99_999_999))),
            ("4999m", Some(Duration::from_millis(4999))),
            ("0u", Some(Duration::ZERO)),
            ("17n", Some(Duration::from_nanos(17))),
            ("", None),
            ("m", None),
            ("123456789m", None),
            ("-1m", None),
            ("12x", None),
            ("1.5S", None),
            ("5é", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_grpc_timeout(text), expected, "{text:?}");
        }
        for remaining in [Duration::from_micros(49_999), Duration::from_secs(5)] {
            let text = grpc_timeout(remaining);
            let back = parse_grpc_timeout(text.to_str().expect("ascii"));
            assert_eq!(back, Some(remaining));
        }
    }

    #[test]
    fn request_ids_are_32_lowercase_hex_digits_and_differ() {
        let a = request_id();
        let b = request_id();
        let text = a.to_str().expect("ascii");
        assert_eq!(text.len(), 32);
        assert!(text
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
        assert!(a.is_sensitive());
    }
}
