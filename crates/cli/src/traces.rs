//! OTLP export of the spans the server and the worker make (`--otlp-endpoint`): installs the
//! OpenTelemetry SDK's tracer provider with a batching OTLP/HTTP (protobuf) exporter. Without
//! the flag nothing is installed, and the spans the code asks for are no-ops.
//!
//! The standard `OTEL_*` variables tune it: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY` (how often a batch is sent; 5 s).

use anyhow::Context as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The installed provider; dropping it flushes the spans not yet sent.
pub struct Exporting(SdkTracerProvider);

/// The URL spans are posted to: `endpoint` as given when it names a path, else the OTLP/HTTP
/// traces path under it (`http://collector:4318` → `http://collector:4318/v1/traces`).
fn traces_url(endpoint: &str) -> String {
    let after_scheme = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest);
    match after_scheme.split_once('/') {
        Some((_, path)) if !path.is_empty() => endpoint.to_owned(),
        _ => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
    }
}

/// Installs the exporter for `service` (the default `service.name`), if an endpoint is given.
/// Call before the async runtime starts: the exporter's HTTP client runs on a thread of its own.
pub fn install(endpoint: Option<&str>, service: &'static str) -> anyhow::Result<Option<Exporting>> {
    let Some(endpoint) = endpoint else { return Ok(None) };
    let url = traces_url(endpoint);
    // The exporter's HTTPS client needs the process's crypto provider.
    taskwarden_client::install_tls_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .build()
        .with_context(|| format!("--otlp-endpoint {endpoint}"))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing::info!(url, "exporting traces over OTLP");
    Ok(Some(Exporting(provider)))
}

impl Drop for Exporting {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            tracing::warn!(error = %e, "could not send the last spans");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_added_to_a_bare_endpoint() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("https://c/otlp/v1/traces"), "https://c/otlp/v1/traces");
    }
}
