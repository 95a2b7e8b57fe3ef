//! `nodes`: the nodes of a service as etcd holds them, and how one key is
//! shown (also by `watch`).

use registry_actor::etcd_client::KeyValue;
use registry_actor::{service_prefix, Node, RegistryConfig};
use serde_json::{json, Value};

use crate::failure::Failure;
use crate::output::{cell, print, print_json, Table};
use crate::registry::Registry;

/// One key of a service: a node, or a value readers skip.
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) lease: i64,
    pub(crate) node: Result<Node, String>,
}

impl Entry {
    /// Decodes `kv` as the registry does.
    pub(crate) fn decode(kv: &KeyValue, service: &str, max_value_bytes: usize) -> Self {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let node = if kv.value().len() > max_value_bytes {
            Err(format!(
                "value of {} bytes is above the limit of {max_value_bytes} bytes \
                 (registry.max_value_bytes)",
                kv.value().len()
            ))
        } else {
            Node::decode(&key, service, kv.value()).map_err(|e| e.kind().to_string())
        };
        Self {
            key,
            lease: kv.lease(),
            node,
        }
    }

    /// The id as the key names it.
    pub(crate) fn id(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }

    /// The entry as JSON; `ttl` is the lease's seconds left, when known.
    pub(crate) fn to_json(&self, ttl: Option<i64>) -> Value {
        let lease = match self.lease {
            0 => Value::Null,
            id => json!({ "id": format!("{id:x}"), "ttl_secs": ttl }),
        };
        match &self.node {
            Ok(node) => json!({
                "key": self.key, "node": node, "static": self.lease == 0, "lease": lease,
            }),
            Err(why) => json!({
                "key": self.key, "malformed": why, "static": self.lease == 0, "lease": lease,
            }),
        }
    }
}

/// `LEASE` column: `static`, or the seconds left.
fn lease_cell(lease: i64, ttl: Option<i64>) -> String {
    match (lease, ttl) {
        (0, _) => "static".to_owned(),
        (_, Some(ttl)) if ttl >= 0 => format!("{ttl}s"),
        (_, Some(_)) => "expired".to_owned(),
        (lease, None) => format!("{lease:x}"),
    }
}

/// `LABELS` column: `k=v,k=v`.
pub(crate) fn labels_cell(node: &Node) -> String {
    let labels: Vec<String> = node
        .labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    cell(&labels.join(","))
}

/// `nodes SERVICE`.
pub(crate) async fn list(
    config: &RegistryConfig,
    service: &str,
    json: bool,
) -> Result<(), Failure> {
    let registry = Registry::connect(config).await?;
    let prefix = service_prefix(config.prefix(), service);
    let (keys, revision) = registry.list(&prefix).await?;
    let mut client = registry.client.clone();
    let mut entries = Vec::with_capacity(keys.len());
    for kv in &keys {
        let entry = Entry::decode(kv, service, config.max_value_bytes());
        let ttl = match entry.lease {
            0 => None,
            lease => {
                let left = registry
                    .request(
                        &format!("read the lease of {}", entry.key),
                        client.lease_time_to_live(lease, None),
                    )
                    .await?;
                Some(left.ttl())
            }
        };
        entries.push((entry, ttl));
    }
    if json {
        let nodes: Vec<Value> = entries.iter().map(|(e, ttl)| e.to_json(*ttl)).collect();
        print_json(&json!({
            "service": service,
            "revision": revision,
            "nodes": nodes,
        }));
        return Ok(());
    }
    let mut table = Table::new(vec![
        "ID", "ADDR", "VERSION", "GROUP", "ZONE", "WEIGHT", "LABELS", "LEASE",
    ]);
    let mut malformed = Vec::new();
    for (entry, ttl) in &entries {
        match &entry.node {
            Ok(node) => table.push(vec![
                node.id().to_owned(),
                node.addr().to_owned(),
                cell(node.version()),
                cell(node.group()),
                cell(node.zone()),
                node.weight().to_string(),
                labels_cell(node),
                lease_cell(entry.lease, *ttl),
            ]),
            Err(why) => {
                table.push(vec![
                    entry.id().to_owned(),
                    "MALFORMED".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    lease_cell(entry.lease, *ttl),
                ]);
                malformed.push(format!("MALFORMED {}: {why}\n", entry.key));
            }
        }
    }
    print(&table.render());
    for line in malformed {
        print(&line);
    }
    Ok(())
}
