//! Parsing of configuration values: strategies, gRPC codes, shares, optional durations.

use std::sync::Arc;

use registry_actor::config::InvalidValue;
use tonic::Code;

use crate::policy::Strategy;
use crate::Error;

pub(crate) fn parse_strategy(key: &str, value: &str) -> Result<Strategy, Error> {
    Strategy::parse(value).map_err(|why| Error::Config(InvalidValue::new(key, why)))
}

/// The names of gRPC codes, as in the gRPC spec (`UNAVAILABLE`).
const CODE_NAMES: [(&str, Code); 17] = [
    ("OK", Code::Ok),
    ("CANCELLED", Code::Cancelled),
    ("UNKNOWN", Code::Unknown),
    ("INVALID_ARGUMENT", Code::InvalidArgument),
    ("DEADLINE_EXCEEDED", Code::DeadlineExceeded),
    ("NOT_FOUND", Code::NotFound),
    ("ALREADY_EXISTS", Code::AlreadyExists),
    ("PERMISSION_DENIED", Code::PermissionDenied),
    ("RESOURCE_EXHAUSTED", Code::ResourceExhausted),
    ("FAILED_PRECONDITION", Code::FailedPrecondition),
    ("ABORTED", Code::Aborted),
    ("OUT_OF_RANGE", Code::OutOfRange),
    ("UNIMPLEMENTED", Code::Unimplemented),
    ("INTERNAL", Code::Internal),
    ("UNAVAILABLE", Code::Unavailable),
    ("DATA_LOSS", Code::DataLoss),
    ("UNAUTHENTICATED", Code::Unauthenticated),
];

pub(crate) fn code_name(code: Code) -> String {
    CODE_NAMES
        .iter()
        .find(|(_, c)| *c == code)
        .map_or_else(|| format!("{}", code as i32), |(n, _)| (*n).to_owned())
}

pub(crate) fn parse_codes(key: &str, names: &[String]) -> Result<Arc<[Code]>, Error> {
    names
        .iter()
        .map(|name| {
            let upper = name.trim().to_ascii_uppercase();
            CODE_NAMES
                .iter()
                .find(|(n, _)| *n == upper)
                .map(|(_, c)| *c)
                .or_else(|| {
                    upper
                        .parse::<i32>()
                        .ok()
                        .filter(|n| (0..=16).contains(n))
                        .map(Code::from_i32)
                })
                .ok_or_else(|| {
                    Error::Config(InvalidValue::new(
                        key,
                        format!("`{name}` is not a gRPC code such as UNAVAILABLE"),
                    ))
                })
        })
        .collect()
}

pub(crate) fn parse_at<T: std::str::FromStr<Err = InvalidValue>>(
    key: &str,
    value: &str,
) -> Result<T, Error> {
    value
        .parse()
        .map_err(|why: InvalidValue| Error::Config(InvalidValue::new(key, why.reason())))
}

pub(crate) fn check_share(key: &str, share: f64) -> Result<(), Error> {
    if (0.0..=1.0).contains(&share) {
        Ok(())
    } else {
        Err(Error::Config(InvalidValue::new(
            key,
            format!("{share} is not a share between 0 and 1"),
        )))
    }
}

/// `Option<Duration>` as an optional duration string.
pub(crate) mod opt_duration {
    use std::time::Duration;

    use registry_actor::config::duration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| duration::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
