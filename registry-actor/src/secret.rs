//! [`Secret`]: a configured secret (token, password) that never shows in
//! `Debug` output, logs or errors.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string from the configuration. Its `Debug` prints `<redacted>`;
/// only [`expose`](Self::expose) gives the value, for the one place that sends
/// it.
///
/// # Examples
///
/// ```
/// use registry_actor::Secret;
///
/// let token = Secret::new("s3cret");
/// assert_eq!(format!("{token:?}"), "<redacted>");
/// assert_eq!(token.expose(), "s3cret");
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
