//! Messages of the [`ConnectionActor`](super::ConnectionActor).

use actix::prelude::*;

/// Stops the actor once its calls in flight have ended (its node left).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Close;
