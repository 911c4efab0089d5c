//! Who may call what (`guichet_platform::access`), method by method, on the
//! real server: every method guichet serves, called by every kind of caller
//! (each person's role, each device and system role, each guichet role's
//! service token), is refused by the access table exactly when the table
//! says so; the README's copy of the table is the table.

use std::str::FromStr;
use std::time::Duration;

use bytes::{Buf, BufMut};
use guichet_platform::access;
use guichet_testkit::*;
use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends and receives raw message bytes, so any method can be called with an
/// empty message without its generated client.
#[derive(Default, Clone, Copy)]
struct Raw;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let v = src.chunk().to_vec();
        src.advance(v.len());
        Ok(Some(v))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Every gRPC method of guichet's API packages, as `/package.Service/Method`.
fn served_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(guichet_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    let mut out = Vec::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            for method in service.method {
                out.push(format!(
                    "/{package}.{}/{}",
                    service.name.clone().unwrap_or_default(),
                    method.name.unwrap_or_default()
                ));
            }
        }
    }
    out
}

/// Whether the access table refused the call (as opposed to the handler
/// answering, even with an error of its own).
fn refused_by_table(status: &tonic::Status) -> bool {
    status.code() == Code::PermissionDenied
        && (status.message().starts_with("access:") || status.message().contains("no access rule"))
}

async fn call(
    channel: tonic::transport::Channel,
    path: &str,
    token: &str,
) -> Option<tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let mut req = tonic::Request::new(futures::stream::iter(vec![Vec::<u8>::new()]));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let path = tonic::codegen::http::uri::PathAndQuery::from_str(path).unwrap();
    match tokio::time::timeout(Duration::from_secs(20), grpc.streaming(req, path, Raw)).await {
        Ok(Ok(_)) | Err(_) => None,
        Ok(Err(status)) => Some(status),
    }
}

const GUICHET_ROLES: &[&str] = &[
    "appointment",
    "counter",
    "dossier",
    "email",
    "indicators",
    "notification",
    "portal",
    "routing",
    "scan",
    "signature",
    "telephony",
];

#[tokio::test]
async fn every_method_admits_exactly_the_callers_of_the_access_table() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // The table covers exactly what the server serves.
    let served = served_methods();
    assert!(served.len() > 100, "{} methods", served.len());
    for path in &served {
        assert!(access::rule_of(path).is_some(), "no access rule for {path}");
    }
    for rule in access::RULES {
        assert!(
            served
                .iter()
                .any(|p| p.ends_with(&format!(".{}", rule.method))),
            "the rule for {} names no served method",
            rule.method
        );
    }

    use TokenRole::*;
    let people = [
        Agent,
        Supervisor,
        Admin,
        ProcessOwner,
        Kiosk,
        CitizenPages,
        Partner,
    ];
    let tokens: Vec<(TokenRole, String)> = people
        .iter()
        .map(|r| (*r, env.token(&format!("{}-1", r.as_str()), &[*r])))
        .collect();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for path in &served {
        let (package, rule) = access::rule_of(path).unwrap();
        let mut calls = Vec::new();
        for (role, token) in &tokens {
            let holder = guichet_platform::auth::Principal {
                subject: String::new(),
                roles: vec![*role],
                groups: vec![],
                audience: String::new(),
            };
            let expected = rule.roles.iter().any(|r| holder.has(*r));
            calls.push((role.as_str().to_owned(), token.clone(), expected));
        }
        for from in GUICHET_ROLES {
            let token = env.service_token(from, package);
            calls.push((
                format!("service from {from}"),
                token,
                rule.from.contains(from),
            ));
        }
        // A guichet role's token for another API is refused everywhere.
        let other = if package == "dossier" {
            "routing"
        } else {
            "dossier"
        };
        calls.push((
            format!("routing's token for {other}"),
            env.service_token("routing", other),
            false,
        ));
        let results = futures::future::join_all(
            calls
                .iter()
                .map(|(_, token, _)| call(channel.clone(), path, token)),
        )
        .await;
        for ((who, _, expected), status) in calls.iter().zip(results) {
            checked += 1;
            let refused = status.as_ref().is_some_and(refused_by_table);
            if refused == *expected {
                mismatches.push(format!(
                    "{path} by {who}: expected {}, got {status:?}",
                    if *expected { "admitted" } else { "refused" }
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(checked > 2000, "{checked} calls checked");
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn a_kiosk_token_is_refused_on_the_citizen_directory_and_a_partner_on_bookings() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let kiosk = env.token("borne-1", &[TokenRole::Kiosk]);
    let e = dossier_client(app.grpc_addr, &kiosk)
        .await
        .list_citizens(guichet_testkit::proto::dossier::v1::ListCitizensRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("ListCitizens"), "{}", e.message());
    // The kiosk still does its job.
    counter_client(app.grpc_addr, &kiosk)
        .await
        .list_services(guichet_testkit::proto::counter::v1::ListServicesRequest {})
        .await
        .expect("a kiosk lists the services");
    let partner = env.token("sirh", &[TokenRole::Partner]);
    let e = appointment_client(app.grpc_addr, &partner)
        .await
        .list_bookings(guichet_testkit::proto::appointment::v1::ListBookingsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = signature_client(app.grpc_addr, &partner)
        .await
        .cancel_signature_request(
            guichet_testkit::proto::signature::v1::CancelSignatureRequestRequest::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    app.stop().await.unwrap();
    env.cleanup().await;
}

#[test]
fn the_readme_lists_who_may_call_what_as_the_table_says() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    assert!(
        readme.contains(&access::markdown()),
        "README.md's access table differs from `guichet access`; paste its output"
    );
}
