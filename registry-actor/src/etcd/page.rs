//! Full reads of a prefix, page by page, and the identity of the cluster that
//! answered.
//!
//! A prefix of 100,000 nodes does not fit one gRPC message (4 MiB by default),
//! so a full read asks for [`PAGE_KEYS`] keys at a time: the first page at the
//! newest revision `r`, every next one at revision `r` too (one consistent
//! snapshot, whichever member answers) starting just after the last key of the
//! page before. A page whose answer is too large for the decoding limit (values
//! far above `registry.max_value_bytes`) is asked again with half the keys.

use etcd_client::{GetOptions, KeyValue, ResponseHeader};
use tonic::Code;

use super::Etcd;
use crate::Error;

/// Keys per page of a full read.
pub(crate) const PAGE_KEYS: usize = 1000;

/// Which cluster answered, and at which revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClusterIdentity {
    pub(crate) cluster_id: u64,
    pub(crate) revision: i64,
}

impl ClusterIdentity {
    pub(crate) fn of(header: Option<&ResponseHeader>) -> Self {
        Self {
            cluster_id: header.map_or(0, ResponseHeader::cluster_id),
            revision: header.map_or(0, ResponseHeader::revision),
        }
    }

    /// Whether `now` is another cluster than `self` (a different cluster id),
    /// or the same one gone back in time (a revision below the last one seen: a
    /// restore from backup). Either way whatever was seen before is void.
    pub(crate) fn replaced_by(&self, now: &Self) -> bool {
        let other_cluster = self.cluster_id != 0 && now.cluster_id != self.cluster_id;
        other_cluster || now.revision < self.revision
    }
}

/// Reads every key under `prefix`, page by page, handing each to `each`;
/// answers the identity of the first page (its revision is the snapshot's).
///
/// # Errors
///
/// When a page cannot be read from any member (or its revision was compacted
/// meanwhile: the caller starts over).
pub(crate) async fn read_prefix(
    etcd: &Etcd,
    prefix: &str,
    mut each: impl FnMut(&KeyValue),
) -> Result<ClusterIdentity, Error> {
    let end = prefix_end(prefix.as_bytes());
    let op = format!("get {prefix}");
    let mut from = prefix.as_bytes().to_vec();
    let mut identity: Option<ClusterIdentity> = None;
    let mut limit = PAGE_KEYS;
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        if let Some(id) = identity {
            // The rest of the snapshot: any member that has applied it answers
            // without a round through the leader.
            options = options.with_revision(id.revision).with_serializable();
        }
        let key = from.clone();
        let page = etcd
            .read(&op, |mut kv| {
                let (key, options) = (key.clone(), options.clone());
                async move { kv.get(key, Some(options)).await }
            })
            .await;
        let page = match page {
            Ok(page) => page,
            Err(e) if limit > 1 && too_large(&e) => {
                limit /= 2;
                continue;
            }
            Err(e) => return Err(e),
        };
        let id = *identity.get_or_insert_with(|| ClusterIdentity::of(page.header()));
        for kv in page.kvs() {
            each(kv);
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(id),
        }
    }
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the key space.
    vec![0]
}

/// Whether a read failed because its answer was larger than the decoding limit.
fn too_large(error: &Error) -> bool {
    let Error::Etcd { source, .. } = error else {
        return false;
    };
    match source.as_ref() {
        etcd_client::Error::GRpcStatus(status) => status.code() == Code::OutOfRange,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn another_cluster_or_an_older_revision_replaces_what_was_seen() {
        let seen = ClusterIdentity {
            cluster_id: 7,
            revision: 100,
        };
        let same = |cluster_id, revision| ClusterIdentity {
            cluster_id,
            revision,
        };
        assert!(!seen.replaced_by(&same(7, 100)));
        assert!(!seen.replaced_by(&same(7, 250)));
        assert!(seen.replaced_by(&same(8, 250)), "a new cluster id");
        assert!(seen.replaced_by(&same(7, 99)), "a revision gone back");
        let unknown = same(0, 0);
        assert!(!unknown.replaced_by(&same(8, 1)), "nothing seen yet");
    }
}
