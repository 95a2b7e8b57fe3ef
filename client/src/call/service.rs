//! [`Service`]: the runtime state the calls of one service share.

use std::sync::Arc;

use actix::Addr;
use arc_swap::{ArcSwap, ArcSwapOption};
use tonic::metadata::{Ascii, MetadataKey, MetadataMap};

use crate::budget::RetryBudget;
use crate::config::ServicePolicy;
use crate::observe::ServiceMetrics;
use crate::picker::SharedPicker;
use crate::throttle::AdaptiveThrottle;
use crate::PickerActor;

/// One service as its calls see it: the picker's published snapshot, the
/// retry budget and the resolved settings, each read without a lock.
pub(crate) struct Service {
    pub(crate) name: Arc<str>,
    /// The actor that owns every change; calls message it only before the
    /// first node set and to connect a node picked for the first time.
    pub(crate) picker: Addr<PickerActor>,
    pub(crate) shared: Arc<SharedPicker>,
    /// Replaced whole when a reload changes the budget's settings.
    pub(crate) budget: ArcSwap<RetryBudget>,
    /// The adaptive throttle, `None` when off; replaced whole when a reload
    /// changes its settings.
    pub(crate) throttle: ArcSwapOption<AdaptiveThrottle>,
    /// Replaced whole on every reload.
    pub(crate) settings: ArcSwap<ServiceSettings>,
    /// The service's metric handles.
    pub(crate) metrics: ServiceMetrics,
}

/// The settings calls of one service use, resolved once per configuration.
#[derive(Debug)]
pub(crate) struct ServiceSettings {
    pub(crate) policy: ServicePolicy,
    /// `x-caller` and `authorization`, sent with every call.
    pub(crate) base_metadata: MetadataMap,
    /// Whether calls carry an `x-request-id`.
    pub(crate) request_id: bool,
    /// The inbound metadata keys inherited calls carry.
    pub(crate) propagate: Arc<[MetadataKey<Ascii>]>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
