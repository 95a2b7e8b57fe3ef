//! The nodes of the scale section's service.

use registry_actor::Node;

/// The service.
pub(super) const SERVICE: &str = "big";
/// The group of the one node calls select.
pub(super) const PROBE_GROUP: &str = "probe";

/// Node `i` of the service: a loopback address where nothing listens.
pub(super) fn node(i: usize) -> Node {
    let addr = format!("127.{}.{}.{}:9", 1 + (i >> 16), (i >> 8) & 255, i & 255);
    Node::new(format!("big-{i:06}"), SERVICE, addr)
        .expect("node")
        .with_version("1.0.0")
}

/// The probe at `addr` with version `{k}.0.0`.
pub(super) fn probe(addr: &str, k: usize) -> Node {
    Node::new("probe", SERVICE, addr)
        .expect("probe node")
        .with_group(PROBE_GROUP)
        .with_version(format!("{k}.0.0"))
}
