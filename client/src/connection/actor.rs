//! The [`ConnectionActor`].

use std::time::Duration;

use actix::prelude::*;
use tracing::debug;

use super::handle::Connection;
use super::messages::Close;

/// One node's connection: owns its long-lived channel, hands out the
/// [`Connection`] calls use, and stops once its node left and its calls ended.
pub struct ConnectionActor {
    connection: Connection,
    closing: bool,
}

impl std::fmt::Debug for ConnectionActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionActor")
            .field("connection", &self.connection)
            .field("closing", &self.closing)
            .finish()
    }
}

impl ConnectionActor {
    pub(crate) fn new(connection: Connection) -> Self {
        Self {
            connection,
            closing: false,
        }
    }

    /// The handle calls use.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        debug!(node = %self.connection.node(), "connection closed");
    }
}

impl Handler<Close> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        self.closing = true;
        if self.connection.in_flight() == 0 {
            ctx.stop();
            return;
        }
        // Calls run in their own tasks; look in on them until the last ends.
        ctx.run_interval(CLOSE_POLL, |act, ctx| {
            if act.connection.in_flight() == 0 {
                ctx.stop();
            }
        });
    }
}

/// How often a closing actor checks whether its last call ended.
const CLOSE_POLL: Duration = Duration::from_millis(20);
