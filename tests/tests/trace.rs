//! One citizen request is one trace: spans from the counter, routing and
//! dossier share a trace id across NATS and gRPC, and no span attribute
//! carries personal data. (Its own test binary: it installs the global
//! tracing subscriber.)

use std::time::Duration;

use guichet_platform::telemetry::{LogFormat, TelemetryConfig};
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::*;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_counter_routing_and_dossier_share_one_trace_without_personal_data() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let _guard = guichet_platform::telemetry::init_with_provider(
        &TelemetryConfig {
            log_format: LogFormat::Text,
            log_filter: std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()),
            otlp_endpoint: String::new(),
            service_name: "guichet-test".into(),
        },
        provider,
    )
    .expect("telemetry");
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let agent = env.token("agent-7", &[TokenRole::Agent]);

    let ticket = counter_client(app.grpc_addr, &agent)
        .await
        .issue_ticket(ticket_request(
            "Hélène",
            "Dupont",
            "06 12 34 56 78",
            "renouveler mon passeport",
        ))
        .await
        .expect("ticket")
        .into_inner();
    let mut queue = queue_client(app.grpc_addr, &agent).await;
    eventually("the visit routed", Duration::from_secs(30), || {
        let mut q = queue.clone();
        async move {
            let items = q
                .list_work_items(qpb::ListWorkItemsRequest::default())
                .await
                .ok()?
                .into_inner()
                .items;
            (!items.is_empty()).then_some(())
        }
    })
    .await;
    let _ = queue
        .list_work_items(qpb::ListWorkItemsRequest::default())
        .await;

    let attr = |span: &opentelemetry_sdk::trace::SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
            .unwrap_or_default()
    };
    // The counter's server span starts the trace.
    let spans = eventually(
        "the dossier spans of the routed visit",
        Duration::from_secs(10),
        || {
            let exporter = exporter.clone();
            let event_id = ticket.intake_event_id.clone();
            async move {
                let spans = exporter.get_finished_spans().ok()?;
                let trace = spans
                    .iter()
                    .find(|s| attr(s, "rpc.service") == "guichet.counter.v1.CounterService")?
                    .span_context
                    .trace_id();
                let in_trace: Vec<_> = spans
                    .into_iter()
                    .filter(|s| s.span_context.trace_id() == trace)
                    .collect();
                let has = |pred: &dyn Fn(&opentelemetry_sdk::trace::SpanData) -> bool| {
                    in_trace.iter().any(pred)
                };
                (has(&|s| s.name == "publish")
                    && has(&|s| s.name == "process" && attr(s, "messaging.message.id") == event_id)
                    && has(&|s| {
                        attr(s, "rpc.service") == "guichet.dossier.v1.DossierService"
                            && attr(s, "rpc.method") == "CorrelateIntake"
                    }))
                .then_some(in_trace)
            }
        },
    )
    .await;
    assert!(
        spans.len() >= 4,
        "counter, publish, process, the one dossier call: {}",
        spans.len()
    );

    // No personal data in any span attribute, anywhere.
    let all = exporter.get_finished_spans().expect("spans");
    for span in &all {
        for kv in &span.attributes {
            let v = kv.value.to_string();
            for secret in [
                "612345678",
                "06 12 34 56 78",
                "Dupont",
                "Hélène",
                "passeport",
            ] {
                assert!(
                    !v.contains(secret),
                    "span {} attribute {} holds personal data: {v}",
                    span.name,
                    kv.key
                );
            }
        }
    }
    // A refused call is an error span with its gRPC code; a probe is no
    // span at all.
    let e = dossier_client(app.grpc_addr, &agent)
        .await
        .purge_expired(guichet_testkit::proto::dossier::v1::PurgeExpiredRequest { dry_run: true })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health");
    let refused = eventually("the refused call's span", Duration::from_secs(10), || {
        let exporter = exporter.clone();
        async move {
            exporter
                .get_finished_spans()
                .ok()?
                .into_iter()
                .find(|s| attr(s, "rpc.method") == "PurgeExpired")
        }
    })
    .await;
    assert_eq!(attr(&refused, "rpc.grpc.status_code"), "7");
    assert!(
        matches!(refused.status, opentelemetry::trace::Status::Error { .. }),
        "{:?}",
        refused.status
    );
    // And a call that went well says so.
    let ok = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .find(|s| attr(s, "rpc.method") == "IssueTicket")
        .expect("the ticket's span");
    assert_eq!(attr(&ok, "rpc.grpc.status_code"), "0");
    assert!(!matches!(
        ok.status,
        opentelemetry::trace::Status::Error { .. }
    ));
    assert!(
        !exporter
            .get_finished_spans()
            .unwrap()
            .iter()
            .any(|s| attr(s, "rpc.service").starts_with("grpc.health")),
        "health checks are not traced"
    );
    app.stop().await.expect("stop");
    env.cleanup().await;
}
