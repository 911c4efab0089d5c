//! Asterisk Master.csv import: a sample file with a malformed line (reported,
//! the rest imported), idempotent on uniqueid, over gRPC and HTTP upload.

use guichet::Role;
use guichet_testkit::proto::intake::v1 as ipb;
use guichet_testkit::proto::telephony::v1 as tpb;
use guichet_testkit::*;
use prost::Message;

const MASTER_CSV: &str = r#""","0612345678","200","from-trunk","""Martin"" <0612345678>","SIP/trunk-0001","SIP/200-0002","Dial","SIP/200,30","2026-11-27 10:00:00","2026-11-27 10:00:20","2026-11-27 10:03:20",200,180,"ANSWERED","DOCUMENTATION","1764234000.1",""
"","anonymous","200","from-trunk","","SIP/trunk-0003","","Dial","SIP/200,30","2026-11-27 11:00:00",,"2026-11-27 11:00:30",30,0,"NO ANSWER","DOCUMENTATION","1764234000.2",""
"","0698765432","200","from-trunk","","SIP/trunk-0004","SIP/200-0005","Dial","SIP/200,30","not a date","","2026-11-27 11:05:00",10,0,"BUSY","DOCUMENTATION","1764234000.3",""
"","201","0611223344","from-internal","","SIP/201-0006","SIP/trunk-0007","Dial","SIP/trunk/0611223344","2026-11-27 12:00:00","2026-11-27 12:00:05","2026-11-27 12:01:05",65,60,"ANSWERED","DOCUMENTATION","1764234000.4",""
"#;

async fn cdr_import_is_idempotent(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let app = env.spawn(&[Role::IngressTelephony]).await;
    let supervisor = env.token("sup-1", &[TokenRole::Supervisor]);
    let first = telephony_client(app.grpc_addr, &supervisor)
        .await
        .import_cdr(tpb::ImportCdrRequest {
            csv: MASTER_CSV.as_bytes().to_vec(),
        })
        .await
        .expect("import")
        .into_inner();
    assert_eq!((first.imported, first.duplicates), (3, 0));
    assert_eq!(first.errors.len(), 1, "{:?}", first.errors);
    assert!(first.errors[0].starts_with("line 3:"), "{:?}", first.errors);

    // The same file again, as an HTTP upload: nothing new.
    let (status, body) = http_post(
        cti_addr(&app),
        &format!("/api/v1/cdr/{CTI_TOKEN}"),
        "text/csv",
        MASTER_CSV.as_bytes(),
    )
    .await
    .expect("upload");
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["imported"], 0);
    assert_eq!(body["duplicates"], 3);

    // An agent may not import.
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let denied = telephony_client(app.grpc_addr, &agent)
        .await
        .import_cdr(tpb::ImportCdrRequest { csv: vec![] })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    let call = telephony_client(app.grpc_addr, &agent)
        .await
        .get_call(tpb::GetCallRequest {
            call_id: "1764234000.1".into(),
        })
        .await
        .expect("call")
        .into_inner();
    assert_eq!((call.waiting_seconds, call.talk_seconds), (20, 180));
    assert_eq!(call.source, "cdr");
    assert!(!call.missed);

    // Two inbound records published (the outbound one is only counted).
    let events: Vec<ipb::IntakeEvent> = env
        .stream_messages("INTAKE", 2)
        .await
        .into_iter()
        .map(|(_, b)| ipb::IntakeEvent::decode(b).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    let missed = events
        .iter()
        .find_map(|e| match &e.details {
            Some(ipb::intake_event::Details::Telephony(t)) if t.call_id == "1764234000.2" => {
                Some((e, t))
            }
            _ => None,
        })
        .expect("missed call event");
    assert!(missed.1.missed && missed.1.anonymous);
    assert_eq!(missed.1.source, "cdr");
    assert!(missed.0.citizen.is_none());
    // Three records, three call_ended events (the repeated import adds none).
    let ended = env
        .stream_headers("EVENTS", 3)
        .await
        .iter()
        .filter(|h| header(h, "ce-type") == "guichet.telephony.v1.call_ended")
        .count();
    assert_eq!(ended, 3);
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn telephony_cdr_import_is_idempotent_on_uniqueid_sqlite() {
    cdr_import_is_idempotent(Backend::Sqlite).await;
}

#[tokio::test]
async fn telephony_cdr_import_is_idempotent_on_uniqueid_postgres() {
    cdr_import_is_idempotent(Backend::Postgres).await;
}
