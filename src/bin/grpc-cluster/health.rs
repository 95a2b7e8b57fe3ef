//! `health ADDR`: a server's grpc.health.v1 answers.

use std::process::ExitCode;
use std::time::Duration;

use cluster_client::{ClientConfig, ClientTls};
use serde_json::json;
use server_kit::REGISTRATION_HEALTH;
use tonic::transport::Endpoint;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::failure::Failure;
use crate::output::{print, print_json, Table};

/// How long the connection and each check may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The exit status when the server answered but something is not serving.
const NOT_SERVING_EXIT: u8 = 3;

/// Checks `services` (default: the server, `""`, and its registration) at
/// `addr`. Answers status 0 when every one is `SERVING`, 3 when one is not;
/// a registration the server does not report (it serves without a registry)
/// is shown and not counted unless asked for by name.
pub(crate) async fn check(
    client: &ClientConfig,
    addr: &str,
    services: Vec<String>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let asked = !services.is_empty();
    let services = if asked {
        services
    } else {
        vec![String::new(), REGISTRATION_HEALTH.to_owned()]
    };
    let files = client
        .tls()
        .read("client.tls")
        .map_err(|e| Failure::new(e.to_string()))?;
    let tls = files.as_ref().map(|files| files.options());
    if let Some(files) = &files {
        // tonic's channel reports a server that refuses the client's
        // certificate after a TLS 1.3 handshake only as a broken call: the
        // client's own handshake says why first.
        let check =
            ClientTls::from_files(files, "client.tls").map_err(|e| Failure::new(e.to_string()))?;
        tokio::time::timeout(TIMEOUT, check.check_server(addr))
            .await
            .map_err(|_| no_connection_within(addr))?
            .map_err(|e| Failure::new(format!("cannot connect to {addr}: {}", chain(&e))))?;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| Failure::new(format!("`{addr}` is not host:port: {e}")))?
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Failure::new(format!("client.tls is not usable: {e}")))?;
    }
    // tonic's connect timeout bounds the TCP connect alone: the whole
    // connection, TLS handshake included, is bounded here.
    let channel = tokio::time::timeout(TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| no_connection_within(addr))?
        .map_err(|e| Failure::new(format!("cannot connect to {addr}: {}", chain(&e))))?;
    let mut health = HealthClient::new(channel);
    let mut answers = Vec::with_capacity(services.len());
    let mut serving = true;
    for service in services {
        let request = HealthCheckRequest {
            service: service.clone(),
        };
        let status = match health.check(request).await {
            Ok(reply) => ServingStatus::try_from(reply.into_inner().status)
                .map_or("UNKNOWN", |s| s.as_str_name()),
            Err(status) if status.code() == Code::NotFound => "SERVICE_UNKNOWN",
            Err(status) => {
                return Err(Failure::new(format!(
                    "health check of `{service}` at {addr} failed: {}: {}",
                    status.code(),
                    status.message()
                )))
            }
        };
        let counted = asked || status != "SERVICE_UNKNOWN" || service.is_empty();
        serving &= !counted || status == "SERVING";
        answers.push((service, status));
    }
    if json {
        let services: Vec<_> = answers
            .iter()
            .map(|(service, status)| json!({ "service": service, "status": status }))
            .collect();
        print_json(&json!({ "addr": addr, "serving": serving, "services": services }));
    } else {
        let mut table = Table::new(vec!["SERVICE", "STATUS"]);
        for (service, status) in &answers {
            let name = if service.is_empty() {
                "(server)"
            } else {
                service
            };
            table.push(vec![name.to_owned(), (*status).to_owned()]);
        }
        print(&table.render());
    }
    Ok(if serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_SERVING_EXIT)
    })
}

/// No connection to `addr` within [`TIMEOUT`].
fn no_connection_within(addr: &str) -> Failure {
    Failure::new(format!(
        "cannot connect to {addr}: no connection within {TIMEOUT:?}"
    ))
}

/// An error and its sources, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}
