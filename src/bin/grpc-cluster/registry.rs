//! Talking to etcd: connecting, bounded requests, and the commands that read
//! or write keys (`services`, `register`, `deregister`).

use std::collections::BTreeMap;
use std::future::Future;

use registry_actor::etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use registry_actor::{node_key, Etcd, Node, RegistryConfig};
use serde_json::json;

use crate::args::NodeArgs;
use crate::failure::Failure;
use crate::output::{print, print_json, Table};

/// A client of the configured etcd, and how long each request may take.
pub(crate) struct Registry {
    /// Every member, for reads that move between them.
    etcd: Etcd,
    pub(crate) client: Client,
    pub(crate) config: RegistryConfig,
}

impl Registry {
    /// Connects to `config.endpoints()` with its TLS and credentials.
    pub(crate) async fn connect(config: &RegistryConfig) -> Result<Self, Failure> {
        let etcd = registry_actor::connect(config).await?;
        Ok(Self {
            client: etcd.client(),
            etcd,
            config: config.clone(),
        })
    }

    /// Runs `request` within `registry.request_timeout`; a failure names the
    /// endpoints and what was asked.
    pub(crate) async fn request<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, registry_actor::etcd_client::Error>>,
    ) -> Result<T, Failure> {
        let endpoints = self.config.endpoints().join(",");
        match tokio::time::timeout(self.config.request_timeout(), request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(Failure::new(format!(
                "etcd at {endpoints} failed to {what}: {e}"
            ))),
            Err(_) => Err(Failure::new(format!(
                "etcd at {endpoints} did not answer to {what} within {:?} \
                 (registry.request_timeout); is it running there?",
                self.config.request_timeout()
            ))),
        }
    }

    /// Every key under `prefix` and the revision read at; a failure names
    /// the endpoints.
    pub(crate) async fn list(
        &self,
        prefix: &str,
    ) -> Result<(Vec<registry_actor::etcd_client::KeyValue>, i64), Failure> {
        self.etcd.list_prefix(prefix).await.map_err(|e| {
            Failure::new(format!(
                "etcd at {}: {e}",
                self.config.endpoints().join(",")
            ))
        })
    }

    /// The prefix every service lives under, with its trailing slash.
    pub(crate) fn root(&self) -> String {
        format!("{}/", self.config.prefix().trim_end_matches('/'))
    }
}

/// `services`: every service with at least one key, and its key count.
pub(crate) async fn services(config: &RegistryConfig, json: bool) -> Result<(), Failure> {
    let registry = Registry::connect(config).await?;
    let root = registry.root();
    let (keys, _) = registry.list(&root).await?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for kv in &keys {
        let key = String::from_utf8_lossy(kv.key());
        if let Some((service, _id)) = key
            .strip_prefix(root.as_str())
            .and_then(|k| k.split_once('/'))
        {
            *counts.entry(service.to_owned()).or_default() += 1;
        }
    }
    if json {
        let services: Vec<_> = counts
            .iter()
            .map(|(name, nodes)| json!({"service": name, "keys": nodes}))
            .collect();
        print_json(&json!({ "prefix": config.prefix(), "services": services }));
    } else {
        let mut table = Table::new(vec!["SERVICE", "KEYS"]);
        for (name, keys) in &counts {
            table.push(vec![name.clone(), keys.to_string()]);
        }
        print(&table.render());
    }
    Ok(())
}

/// `register`: writes a static node, validated as the registry reads it.
pub(crate) async fn register(
    config: &RegistryConfig,
    args: NodeArgs,
    json: bool,
) -> Result<(), Failure> {
    let mut node = Node::new(&args.id, &args.service, &args.addr)?
        .with_version(args.version)
        .with_group(args.group)
        .with_zone(args.zone)
        .with_weight(args.weight);
    for (k, v) in args.labels {
        node = node.with_label(k, v);
    }
    let key = node.key(config.prefix());
    let value = node.encode();
    // What readers will do with it: the same decoder, the same size limit.
    Node::decode(&key, node.service(), &value)?;
    if value.len() > config.max_value_bytes() {
        return Err(Failure::new(format!(
            "the value of {key} is {} bytes, above registry.max_value_bytes ({})",
            value.len(),
            config.max_value_bytes()
        )));
    }
    let registry = Registry::connect(config).await?;
    let mut client = registry.client.clone();
    let mut txn = Txn::new();
    if !args.replace {
        txn = txn.when([Compare::version(key.as_str(), CompareOp::Equal, 0)]);
    }
    let txn = txn.and_then([TxnOp::put(key.as_str(), value, None)]);
    let answer = registry
        .request(&format!("put {key}"), client.txn(txn))
        .await?;
    if !answer.succeeded() {
        return Err(Failure::new(format!(
            "node `{}` of service `{}` is already registered ({key}); \
             pass --replace to overwrite it",
            node.id(),
            node.service()
        )));
    }
    if json {
        print_json(&json!({ "registered": node, "key": key }));
    } else {
        print(&format!("registered {node} at {key} (static)\n"));
    }
    Ok(())
}

/// `deregister`: deletes a static node.
pub(crate) async fn deregister(
    config: &RegistryConfig,
    service: &str,
    id: &str,
    json: bool,
) -> Result<(), Failure> {
    let registry = Registry::connect(config).await?;
    let key = node_key(config.prefix(), service, id);
    let mut client = registry.client.clone();
    let current = registry
        .request(&format!("get {key}"), client.get(key.as_str(), None))
        .await?;
    let Some(kv) = current.kvs().first() else {
        return Err(Failure::new(format!(
            "no node `{id}` in service `{service}` (no key {key})"
        )));
    };
    if kv.lease() != 0 {
        return Err(Failure::new(format!(
            "node `{id}` of service `{service}` is kept by a running server \
             (lease {:x}), which would write it back; pause or stop that server",
            kv.lease()
        )));
    }
    // Delete only the static value read above, not one a server put since.
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            kv.mod_revision(),
        )])
        .and_then([TxnOp::delete(key.as_str(), None)]);
    let answer = registry
        .request(&format!("delete {key}"), client.txn(txn))
        .await?;
    if !answer.succeeded() {
        return Err(Failure::new(format!(
            "{key} changed while deregistering; look again with `grpc-cluster nodes {service}`"
        )));
    }
    if json {
        print_json(&json!({ "deregistered": id, "service": service, "key": key }));
    } else {
        print(&format!("deregistered {service}/{id} ({key})\n"));
    }
    Ok(())
}
