//! [`PickerView`]: the picks a picker actor publishes, read without it.

use std::sync::Arc;
use std::time::Duration;

use super::messages::{Pick, PickAll};
use super::picked::Picked;
use super::shared::{Fast, SharedPicker};
use crate::connection::Home;
use crate::Error;

/// The snapshot a [`PickerActor`](super::PickerActor) publishes, read the way
/// calls read it: without a message and without a lock. A pick here never
/// waits for the actor, not even while it rebuilds its candidates for a new
/// node set.
///
/// A picked node carries its connection on the current runtime when one has
/// been made there (calls make it through the actor); a view does not make
/// connections.
///
/// # Examples
///
/// ```no_run
/// use actix::prelude::*;
/// use cluster_client::{Pick, PickerActor, PickerConfig};
/// use registry_actor::{RegistryActor, RegistryConfig};
///
/// # #[actix::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = RegistryConfig::default();
/// let registry = RegistryActor::new(registry_actor::connect(&config).await?, &config).start();
/// let actor = PickerActor::new("echo", PickerConfig::default(), registry);
/// let view = actor.view();
/// let _picker = actor.start();
/// // ... once the node set has arrived:
/// let picked = view.pick(&Pick::new())?;
/// println!("a call would go to {}", picked.node().addr());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PickerView {
    shared: Arc<SharedPicker>,
}

impl PickerView {
    pub(crate) fn from_shared(shared: Arc<SharedPicker>) -> Self {
        Self { shared }
    }

    /// Picks one node as a call would.
    ///
    /// # Errors
    ///
    /// As [`Picker::pick`](super::Picker::pick), and
    /// [`Error::NotDiscovered`] (having waited 0) before the first node set.
    pub fn pick(&self, pick: &Pick) -> Result<Picked, Error> {
        let home = Home::of_caller(false).key();
        let fast = self
            .shared
            .pick(pick.selector.as_ref(), &pick.exclude, pick.hash_key, home);
        self.answer(fast)
    }

    /// Every node matching `pick`'s selector, as a broadcast would call.
    ///
    /// # Errors
    ///
    /// As [`Picker::pick_all`](super::Picker::pick_all), and
    /// [`Error::NotDiscovered`] before the first node set.
    pub fn pick_all(&self, pick: &PickAll) -> Result<Vec<Picked>, Error> {
        let home = Home::of_caller(false).key();
        let fast = self.shared.pick_all(pick.selector.as_ref(), home);
        self.answer(fast)
    }

    fn answer<T>(&self, fast: Fast<T>) -> Result<T, Error> {
        match fast {
            Fast::Done(result) => result,
            Fast::Attach(picked) => Ok(picked),
            Fast::Wait => Err(Error::NotDiscovered {
                service: self.shared.service(),
                waited: Duration::ZERO,
                etcd: None,
                cause: None,
            }),
        }
    }
}
