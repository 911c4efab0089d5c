//! The first request travelling the whole way: a walk-in ticket at the
//! counter → INTAKE → routing → dossier → unified queue → agent → timeline.

use std::net::SocketAddr;
use std::time::Duration;

use guichet::Role;
use guichet_testkit::proto::dossier::v1 as dpb;
use guichet_testkit::proto::routing::v1 as qpb;
use guichet_testkit::*;

/// Take the next item as the agent, waiting for routing to enqueue one.
pub async fn take_next(addr: SocketAddr, token: &str) -> qpb::WorkItem {
    let queue = queue_client(addr, token).await;
    eventually(
        "a work item in the unified queue",
        Duration::from_secs(30),
        || {
            let mut q = queue.clone();
            async move {
                q.take_next(qpb::TakeNextRequest::default())
                    .await
                    .ok()
                    .map(|r| r.into_inner())
            }
        },
    )
    .await
}

pub async fn set_available(addr: SocketAddr, token: &str) {
    queue_client(addr, token)
        .await
        .set_presence(qpb::SetPresenceRequest {
            presence: qpb::Presence::Available as i32,
            ..Default::default()
        })
        .await
        .expect("set presence");
}

/// The whole slice against processes at the given addresses.
pub async fn walk_in_slice(
    env: &TestEnv,
    counter: SocketAddr,
    queue: SocketAddr,
    dossier: SocketAddr,
) {
    walk_in_slice_with(env, counter, queue, dossier, false).await;
}

/// The slice; with `appointment_task`, the appointment role runs too and
/// the passport's first state adds its task (an appointment to propose).
pub async fn walk_in_slice_with(
    env: &TestEnv,
    counter: SocketAddr,
    queue: SocketAddr,
    dossier: SocketAddr,
    appointment_task: bool,
) {
    // Arrange
    let agent = env.token("agent-42", &[TokenRole::Agent]);
    set_available(queue, &agent).await;

    // Act: a citizen walks in and takes a ticket.
    let ticket = counter_client(counter, &agent)
        .await
        .issue_ticket(ticket_request(
            "Hélène",
            "Dupont",
            "06 12 34 56 78",
            "renouveler mon passeport",
        ))
        .await
        .expect("issue ticket")
        .into_inner();
    assert_eq!(ticket.number, "G001");
    assert_eq!(ticket.service, "general");

    // The agent takes it from the unified queue and completes it.
    let item = take_next(queue, &agent).await;
    assert_eq!(item.intake_event_id, ticket.intake_event_id);
    assert_eq!(item.status(), qpb::WorkItemStatus::Assigned);
    assert_eq!(item.agent_id, "agent-42");
    assert!(
        item.summary.contains("G001") && item.summary.contains("passeport"),
        "{}",
        item.summary
    );
    assert!(
        item.dossier_reference.starts_with("VIN-"),
        "{}",
        item.dossier_reference
    );
    if appointment_task {
        // The passport's first state proposes an appointment, a state
        // action run right after the dossier opened: the agent sees the
        // task before completing the visit.
        let dossiers = dossier_client(dossier, &agent).await;
        eventually(
            "the appointment to propose",
            Duration::from_secs(20),
            || {
                let mut dossiers = dossiers.clone();
                let id = item.dossier_id.clone();
                async move {
                    let t = dossiers
                        .list_dossier_timeline(dpb::ListDossierTimelineRequest {
                            dossier_id: id,
                            ..Default::default()
                        })
                        .await
                        .ok()?
                        .into_inner();
                    t.entries
                        .iter()
                        .any(|e| e.kind() == dpb::EntryKind::Task)
                        .then_some(())
                }
            },
        )
        .await;
    }
    let done = queue_client(queue, &agent)
        .await
        .complete_work_item(qpb::CompleteWorkItemRequest {
            id: item.id.clone(),
            outcome: "Pré-demande de passeport vérifiée, rendez-vous conseillé".into(),
        })
        .await
        .expect("complete")
        .into_inner();
    assert_eq!(done.status(), qpb::WorkItemStatus::Completed);

    // Assert: the dossier and the citizen's timeline show all of it.
    let mut dossiers = dossier_client(dossier, &agent).await;
    let d = dossiers
        .get_dossier(dpb::GetDossierRequest {
            id: item.dossier_reference.clone(),
        })
        .await
        .expect("get dossier by reference")
        .into_inner();
    assert_eq!(d.id, item.dossier_id);
    // The shipped rules send a passport renewal to the passport process.
    assert_eq!(d.process_id, "passeport");
    assert_eq!(d.state, "demande");
    assert!(
        d.guidance.contains("pré-demande"),
        "guidance in French: {}",
        d.guidance
    );
    let expected = if appointment_task {
        vec![
            dpb::EntryKind::Outcome,
            dpb::EntryKind::Task,
            dpb::EntryKind::DossierOpened,
            dpb::EntryKind::Contact,
        ]
    } else {
        vec![
            dpb::EntryKind::Outcome,
            dpb::EntryKind::DossierOpened,
            dpb::EntryKind::Contact,
        ]
    };
    let timeline = dossiers
        .list_dossier_timeline(dpb::ListDossierTimelineRequest {
            dossier_id: d.id.clone(),
            ..Default::default()
        })
        .await
        .expect("dossier timeline")
        .into_inner();
    let kinds: Vec<_> = timeline.entries.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds, expected,
        "newest first: the visit (at the ticket's time), the dossier opened for it, (the appointment to propose), the outcome"
    );
    if appointment_task {
        assert!(
            timeline.entries[1]
                .summary
                .starts_with("À faire : proposer à l'usager un rendez-vous"),
            "{}",
            timeline.entries[1].summary
        );
    }
    assert_eq!(timeline.entries[0].actor, "agent-42");
    let contact = &timeline.entries[timeline.entries.len() - 1];
    assert_eq!(contact.source_event_id, ticket.intake_event_id);

    // A second visit, the phone written differently: the same citizen, and
    // the agent sees the first visit in the citizen's history.
    let second = counter_client(counter, &agent)
        .await
        .issue_ticket(ticket_request(
            "Helene",
            "DUPONT",
            "+33 6 12 34 56 78",
            "acte de naissance",
        ))
        .await
        .expect("second ticket")
        .into_inner();
    assert_eq!(second.number, "G002");
    let item2 = take_next(queue, &agent).await;
    assert_eq!(
        item2.citizen_id, item.citizen_id,
        "recognised across visits"
    );
    let citizen = dossiers
        .get_citizen(dpb::GetCitizenRequest {
            id: item.citizen_id.clone(),
        })
        .await
        .expect("citizen")
        .into_inner();
    assert_eq!(citizen.phones, vec!["+33612345678".to_string()]);
    let history = dossiers
        .list_citizen_timeline(dpb::ListCitizenTimelineRequest {
            citizen_id: item.citizen_id.clone(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("citizen timeline page 1")
        .into_inner();
    assert_eq!(history.entries.len(), 2);
    assert!(!history.next_page_token.is_empty());
    let rest = dossiers
        .list_citizen_timeline(dpb::ListCitizenTimelineRequest {
            citizen_id: item.citizen_id.clone(),
            page_size: 50,
            page_token: history.next_page_token,
            filter: None,
        })
        .await
        .expect("citizen timeline page 2")
        .into_inner();
    assert_eq!(
        history.entries.len() + rest.entries.len(),
        5 + usize::from(appointment_task),
        "2 contacts, 2 openings, 1 outcome (and the passport's appointment to propose)"
    );
    assert!(rest.next_page_token.is_empty());
}

async fn in_one_process(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    walk_in_slice_with(&env, app.grpc_addr, app.grpc_addr, app.grpc_addr, true).await;
    app.stop().await.expect("clean stop");
    env.cleanup().await;
}

#[tokio::test]
async fn a_walk_in_ticket_reaches_the_queue_and_the_timeline_on_sqlite() {
    in_one_process(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_walk_in_ticket_reaches_the_queue_and_the_timeline_on_postgres() {
    in_one_process(Backend::Postgres).await;
}

#[tokio::test]
async fn the_slice_works_with_each_role_in_its_own_process() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let dossier = env.spawn_process(&["dossier"], &[]).await;
    let dossier_url = format!("http://{}", dossier.grpc_addr);
    let routing = env
        .spawn_process(
            &["routing"],
            &[("GUICHET__ROUTING__DOSSIER_URL", &dossier_url)],
        )
        .await;
    let counter = env.spawn_process(&["ingress-counter"], &[]).await;
    walk_in_slice(
        &env,
        counter.grpc_addr,
        routing.grpc_addr,
        dossier.grpc_addr,
    )
    .await;
    for p in [counter, routing, dossier] {
        assert!(p.terminate().await.success(), "SIGTERM gives a clean exit");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn the_slice_works_with_roles_split_over_postgres() {
    let Some(env) = TestEnv::new(Backend::Postgres).await else {
        return;
    };
    let dossier = env.spawn(&[Role::Dossier]).await;
    let routing = env
        .spawn_with(
            &[Role::Routing],
            env.config_with(&[(
                "GUICHET__ROUTING__DOSSIER_URL",
                &format!("http://{}", dossier.grpc_addr),
            )]),
        )
        .await;
    let counter = env.spawn(&[Role::IngressCounter]).await;
    walk_in_slice(
        &env,
        counter.grpc_addr,
        routing.grpc_addr,
        dossier.grpc_addr,
    )
    .await;
    for app in [counter, routing, dossier] {
        app.stop().await.expect("clean stop");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn admin_endpoints_report_health_readiness_and_metrics() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let (status, _) = http_get(app.admin_addr, "/healthz").await.expect("healthz");
    assert_eq!(status, 200);
    let (status, body) = http_get(app.admin_addr, "/readyz").await.expect("readyz");
    assert_eq!(status, 200, "{body}");
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let _ = queue_client(app.grpc_addr, &agent)
        .await
        .list_work_items(qpb::ListWorkItemsRequest::default())
        .await
        .expect("list");
    let (status, metrics) = http_get(app.admin_addr, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("guichet_grpc_server_requests_total") && metrics.contains("ListWorkItems"),
        "{metrics}"
    );
    app.stop().await.expect("clean stop");
    env.cleanup().await;
}

#[tokio::test]
async fn health_and_reflection_answer_without_a_token() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let channel = channel(app.grpc_addr).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in [
        "",
        "guichet.counter.v1.CounterService",
        "guichet.routing.v1.QueueService",
        "guichet.dossier.v1.DossierService",
    ] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            resp.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    app.stop().await.expect("clean stop");
    env.cleanup().await;
}

#[tokio::test]
async fn logs_are_structured_json_without_personal_data_even_at_debug_level() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let log = env.dir.path().join("guichet.log");
    let app = env
        .spawn_process_logging(
            &["ingress-counter", "routing", "dossier"],
            &[
                ("GUICHET__TELEMETRY__LOG_FORMAT", "json"),
                ("GUICHET__TELEMETRY__LOG_FILTER", "debug"),
            ],
            &log,
        )
        .await;
    walk_in_slice(&env, app.grpc_addr, app.grpc_addr, app.grpc_addr).await;
    assert!(app.terminate().await.success());

    let text = std::fs::read_to_string(&log).expect("log file");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() > 20,
        "the process logged its work ({} lines)",
        lines.len()
    );
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value.get("level").is_some() && value.get("fields").is_some(),
            "{line}"
        );
        for personal in [
            "Dupont",
            "DUPONT",
            "Hélène",
            "Helene",
            "612345678",
            "06 12 34 56 78",
            // What the citizen said (process ids such as `passeport` are
            // not personal and are logged).
            "renouveler mon passeport",
            "acte de naissance",
        ] {
            assert!(
                !line.contains(personal),
                "personal data `{personal}` in a log line: {line}"
            );
        }
    }
    assert!(
        text.contains("work item enqueued") && text.contains("ticket issued"),
        "the flow is traced in the logs"
    );
    env.cleanup().await;
}

/// An OTLP/gRPC collector that keeps what it receives.
#[derive(Clone, Default)]
struct Collector {
    requests: std::sync::Arc<
        std::sync::Mutex<
            Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
        >,
    >,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test]
async fn spans_are_exported_over_otlp_to_the_configured_collector() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    let app = env
        .spawn_process(
            &["ingress-counter", "routing", "dossier"],
            &[
                ("GUICHET__TELEMETRY__OTLP_ENDPOINT", &endpoint),
                ("GUICHET__TELEMETRY__SERVICE_NAME", "guichet-mairie-test"),
            ],
        )
        .await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    set_available(app.grpc_addr, &agent).await;
    counter_client(app.grpc_addr, &agent)
        .await
        .issue_ticket(ticket_request("Anne", "Martin", "", "question"))
        .await
        .expect("ticket");
    take_next(app.grpc_addr, &agent).await;
    // Shutdown flushes what the batch exporter still holds.
    assert!(app.terminate().await.success());

    let requests = collector.requests.lock().unwrap().clone();
    let mut names = Vec::new();
    for req in &requests {
        for rs in &req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            assert!(service.contains("guichet-mairie-test"), "{service}");
            for ss in &rs.scope_spans {
                names.extend(ss.spans.iter().map(|s| s.name.clone()));
            }
        }
    }
    for expected in [
        "guichet.counter.v1.CounterService/IssueTicket",
        "publish",
        "process",
        "guichet.dossier.v1.DossierService/CorrelateIntake",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not exported: {names:?}"
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn grpc_health_and_readyz_report_not_serving_while_a_dependency_is_missing() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    // An identity provider that does not answer: no keys, so not ready.
    let jwks = format!("http://127.0.0.1:{}/certs", free_port());
    let app = env
        .spawn_with(
            &all_roles(),
            env.config_with(&[
                ("GUICHET__AUTH__JWKS_URL", &jwks),
                ("GUICHET__AUTH__OIDC_ISSUER", "https://idp.test"),
            ]),
        )
        .await;
    let (status, body) = http_get(app.admin_addr, "/readyz").await.expect("readyz");
    assert_eq!(status, 503);
    assert!(body.contains("oidc jwks"), "{body}");
    let (status, _) = http_get(app.admin_addr, "/healthz").await.expect("healthz");
    assert_eq!(status, 200, "alive, only not ready");
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(channel(app.grpc_addr).await);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    app.stop().await.expect("stop");
    env.cleanup().await;
}
