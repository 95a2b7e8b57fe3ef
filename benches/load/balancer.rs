//! Section `balancer`: three nodes, tonic's `Channel::balance_list` with the
//! cluster call's deadline against the cluster client's `round_robin` and
//! `least_request`: calls/s at 64, and which node answered.

use std::fmt::Write as _;
use std::net::SocketAddr;

use cluster_client::{Balancer, ClientConfig, Strategy};
use tonic::transport::Channel;

use crate::cluster::{endpoint, listed_client, Setup};
use crate::harness::{
    interleave, Caller, Measure, Row, Via, CHUNKS, CONCURRENCY, THROUGHPUT_CALLS,
};
use crate::report::{ratio, ratio_text, table_head, value, Report, Target};

/// Nodes of the section (service `echo3`).
pub(crate) const NODES: usize = 3;

/// tonic's balancer over the section's nodes: the first [`NODES`] of `addrs`.
pub(crate) fn balance_list(addrs: &[SocketAddr]) -> Channel {
    Channel::balance_list(addrs[..NODES].iter().map(|a| endpoint(*a)))
}

pub(crate) async fn run(report: &mut Report, setup: &Setup) {
    let client = |balancer| {
        let config = ClientConfig::default().with_balancer(balancer);
        listed_client(&setup.registry, config, "echo3", NODES)
    };
    let balanced = balance_list(&setup.addrs);
    let rr = client(Balancer::RoundRobin).await;
    let lr = client(Balancer::LeastRequest).await;
    let mut rows = [
        Row::new(
            "tonic `Channel::balance_list` + deadline",
            Caller::Raw(balanced, Some(setup.deadline)),
        ),
        Row::new(
            "`ClientHandle::call` failfast, round_robin",
            Caller::Cluster(Via::handle(&rr).await, "echo3", Strategy::Failfast),
        ),
        Row::new(
            "`ClientHandle::call` failfast, least_request",
            Caller::Cluster(Via::handle(&lr).await, "echo3", Strategy::Failfast),
        ),
    ];
    let rounds = setup.rounds;
    interleave(&mut rows, rounds, "balancer", Measure::THROUGHPUT).await;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Balancing over {NODES} nodes: tonic's balancer vs the cluster client\n\n\
         `balance_list` calls carry `Request::set_timeout({:?})`, the cluster call's deadline. \
         {THROUGHPUT_CALLS} calls at c={CONCURRENCY} per row and round (in {CHUNKS} chunks, \
         the rows taking turns chunk by chunk); {rounds} rounds. Medians (range); ratio = \
         median of the per-round ratios to `balance_list`. Share: which node answered, over \
         all rounds.\n",
        setup.deadline
    );
    table_head(
        &mut out,
        &format!("| client | calls/s (c={CONCURRENCY}) | throughput ratio | per-node share |"),
    );
    let base = &rows[0].rps;
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.name,
            value(&row.rps, 0),
            ratio_text(&row.rps, base),
            row.share_text()
        );
    }
    report.section(out);
    report.target(Target::at_least(
        "round_robin / balance_list+deadline throughput",
        ratio(&rows[1].rps, base),
        1.0,
    ));
}
