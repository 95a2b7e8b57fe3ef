//! `watch SERVICE`: one line per change of a service's keys.
//!
//! It reads the current keys (revision `r`) and watches from `r + 1`. A
//! broken stream is resumed at the revision after the last change printed,
//! so nothing is missed or printed twice; a history compacted past that
//! point cannot be resumed and ends the command with an error.

use std::time::Duration;

use registry_actor::etcd_client::{EventType, GetOptions, WatchOptions};
use registry_actor::{service_prefix, RegistryConfig};
use serde_json::json;

use crate::failure::Failure;
use crate::nodes::{labels_cell, Entry};
use crate::output::{cell, print, print_json};
use crate::registry::Registry;

/// The wait before a broken watch is opened again.
const RESUME_DELAY: Duration = Duration::from_secs(1);

/// Prints every change until `count` changes were printed (or for ever).
pub(crate) async fn run(
    config: &RegistryConfig,
    service: &str,
    count: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    let registry = Registry::connect(config).await?;
    let prefix = service_prefix(config.prefix(), service);
    let mut client = registry.client.clone();
    let current = registry
        .request(
            &format!("list {prefix}"),
            client.get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ),
        )
        .await?;
    let mut next = current.header().map_or(0, |h| h.revision()) + 1;
    let mut printed = 0u64;
    let mut announced = false;
    loop {
        if count.is_some_and(|count| printed >= count) {
            return Ok(());
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(next);
        let mut stream = match registry
            .request(
                &format!("watch {prefix}"),
                client.watch(prefix.as_str(), Some(options)),
            )
            .await
        {
            Ok(stream) => stream,
            Err(why) if announced => {
                eprintln!("grpc-cluster: {why}; trying again");
                tokio::time::sleep(RESUME_DELAY).await;
                continue;
            }
            Err(why) => return Err(why),
        };
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    eprintln!("grpc-cluster: the watch stream ended; resuming at revision {next}");
                    break;
                }
                Err(e) => {
                    eprintln!(
                        "grpc-cluster: the watch stream failed ({e}); resuming at revision {next}"
                    );
                    break;
                }
            };
            if message.created() && !announced {
                announced = true;
                eprintln!(
                    "grpc-cluster: watching {prefix} from revision {next} ({} keys now)",
                    current.count()
                );
            }
            if message.canceled() {
                if message.compact_revision() > 0 {
                    return Err(Failure::new(format!(
                        "etcd compacted its history past revision {next} \
                         (compacted to {}); run watch again",
                        message.compact_revision()
                    )));
                }
                eprintln!(
                    "grpc-cluster: the watch was cancelled ({}); resuming at revision {next}",
                    message.cancel_reason()
                );
                break;
            }
            for event in message.events() {
                let Some(kv) = event.kv() else { continue };
                next = next.max(kv.mod_revision() + 1);
                let entry = Entry::decode(kv, service, config.max_value_bytes());
                let change = match event.event_type() {
                    EventType::Delete => "removed",
                    EventType::Put if event.prev_kv().is_some() => "updated",
                    EventType::Put => "added",
                };
                if json {
                    let line = if change == "removed" {
                        json!({"change": change, "revision": kv.mod_revision(),
                            "key": entry.key, "id": entry.id()})
                    } else {
                        let mut line = entry.to_json(None);
                        line["change"] = json!(change);
                        line["revision"] = json!(kv.mod_revision());
                        line
                    };
                    print_json(&line);
                } else {
                    print(&format!(
                        "{} {}\n",
                        kv.mod_revision(),
                        describe(change, &entry)
                    ));
                }
                printed += 1;
                if count.is_some_and(|count| printed >= count) {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(RESUME_DELAY).await;
    }
}

/// One change for people: `added echo-1 127.0.0.1:5000 version=v1 … static`.
fn describe(change: &str, entry: &Entry) -> String {
    if change == "removed" {
        return format!("removed {}", entry.id());
    }
    match &entry.node {
        Ok(node) => format!(
            "{change} {} {} version={} group={} zone={} weight={} labels={} {}",
            node.id(),
            node.addr(),
            cell(node.version()),
            cell(node.group()),
            cell(node.zone()),
            node.weight(),
            labels_cell(node),
            match entry.lease {
                0 => "static".to_owned(),
                lease => format!("lease={lease:x}"),
            }
        ),
        Err(why) => format!("{change} MALFORMED {}: {why}", entry.key),
    }
}
