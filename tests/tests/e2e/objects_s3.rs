//! The S3-compatible object store backend against a real S3 server on
//! loopback (s3s-fs, installed by `scripts/ensure-services.sh test`): the
//! store's contract (content addressing, idempotent writes, not found, bad
//! addresses, readiness), signed requests refused with a wrong secret, and
//! a role keeping its documents in the bucket.

use std::process::Stdio;
use std::time::Duration;

use guichet::Role;
use guichet_platform::auth::Role as TokenRole;
use guichet_platform::objects::{ObjectError, ObjectStore, ObjectsConfig, S3Config, sha256_hex};
use guichet_proto::dossier::v1 as dpb;
use guichet_proto::intake::v1::CitizenHint;
use guichet_testkit::{Backend, TestEnv, dossier_client, free_port};

const ACCESS_KEY: &str = "guichet-test";
const SECRET_KEY: &str = "guichet-test-secret-0123456789";

/// A real S3 server over a temporary directory, with one bucket.
struct S3Server {
    child: tokio::process::Child,
    endpoint: String,
    root: tempfile::TempDir,
}

fn s3s_fs() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("GUICHET_TEST_S3S_FS") {
        return p.into();
    }
    let home = std::env::var("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let candidate = home.join("bin").join("s3s-fs");
    if candidate.exists() {
        candidate
    } else {
        "s3s-fs".into()
    }
}

impl S3Server {
    async fn start(bucket: &str) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(bucket)).unwrap();
        let port = free_port();
        let child = tokio::process::Command::new(s3s_fs())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("s3s-fs (scripts/ensure-services.sh test installs it)");
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        S3Server {
            child,
            endpoint,
            root,
        }
    }

    fn config(&self, bucket: &str, secret: &str) -> ObjectsConfig {
        ObjectsConfig {
            backend: "s3".into(),
            dir: Default::default(),
            s3: S3Config {
                endpoint: self.endpoint.clone(),
                bucket: bucket.into(),
                region: "fr-par".into(),
                prefix: "guichet/".into(),
                access_key_id: ACCESS_KEY.into(),
                secret_access_key: Some(secret.to_owned().into()),
                path_style: true,
                allow_http: true,
            },
        }
    }
}

#[tokio::test]
async fn s3_backend_keeps_objects_by_content_in_a_real_bucket() {
    let mut server = S3Server::start("documents").await;
    let config = server.config("documents", SECRET_KEY);
    config.validate().unwrap();
    let store = ObjectStore::from_config(&config).unwrap();
    assert_eq!(store.describe(), "s3:documents");
    store.check().await.expect("the bucket answers");

    let content = "Justificatif de domicile — facture d'électricité".as_bytes();
    let sha = store.put(content).await.unwrap();
    assert_eq!(sha, sha256_hex(content));
    // Written once: a second put is a no-op with the same address.
    assert_eq!(store.put(content).await.unwrap(), sha);
    assert!(store.exists(&sha).await.unwrap());
    assert_eq!(store.get(&sha).await.unwrap(), content);
    // The key layout in the bucket: <prefix><aa>/<bb>/<sha256>.
    let on_disk = server
        .root
        .path()
        .join("documents/guichet")
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(&sha);
    assert!(on_disk.exists(), "{}", on_disk.display());

    // A larger object (a scanned letter) round-trips intact.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let big_sha = store.put(&big).await.unwrap();
    assert_eq!(store.get(&big_sha).await.unwrap(), big);

    store.delete(&sha).await.unwrap();
    assert!(!store.exists(&sha).await.unwrap());
    assert!(matches!(
        store.get(&sha).await,
        Err(ObjectError::NotFound(_))
    ));
    // Deleting a missing object is not an error.
    store.delete(&sha).await.unwrap();
    assert!(matches!(
        store.get("../../etc/passwd").await,
        Err(ObjectError::BadAddress(_))
    ));

    // A wrong secret: requests are refused, readiness says so.
    let wrong = ObjectStore::from_config(&server.config("documents", "not-the-secret")).unwrap();
    assert!(matches!(
        wrong.get(&big_sha).await,
        Err(ObjectError::S3 { .. })
    ));
    assert!(wrong.check().await.is_err());
    // A missing bucket: readiness says so.
    let missing = ObjectStore::from_config(&server.config("absent", SECRET_KEY)).unwrap();
    assert!(missing.check().await.is_err());

    // The server goes away: a clear error, not a hang or a panic.
    server.child.kill().await.unwrap();
    assert!(store.get(&big_sha).await.is_err());
}

#[tokio::test]
async fn s3_backend_configuration_errors_name_the_key() {
    let mut c = ObjectsConfig {
        backend: "s3".into(),
        dir: Default::default(),
        s3: S3Config::default(),
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("objects.s3.bucket"), "{e}");
    c.s3.bucket = "documents".into();
    c.s3.endpoint = "http://minio:9000".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("objects.s3.endpoint") && e.contains("allow_http"),
        "{e}"
    );
    c.s3.allow_http = true;
    c.s3.access_key_id = "key".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("objects.s3.secret_access_key"), "{e}");
    c.s3.secret_access_key = Some("secret".to_owned().into());
    c.validate().unwrap();
    c.backend = "ftp".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("objects.backend"), "{e}");
}

#[tokio::test]
async fn a_role_keeps_its_documents_in_the_bucket() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let server = S3Server::start("guichet").await;
    let port = server.endpoint.rsplit(':').next().unwrap().to_owned();
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = env.config_with(&[
        ("GUICHET__OBJECTS__BACKEND", "s3"),
        ("GUICHET__OBJECTS__S3__ENDPOINT", endpoint.as_str()),
        ("GUICHET__OBJECTS__S3__BUCKET", "guichet"),
        ("GUICHET__OBJECTS__S3__REGION", "fr-par"),
        ("GUICHET__OBJECTS__S3__ALLOW_HTTP", "true"),
        ("GUICHET__OBJECTS__S3__ACCESS_KEY_ID", ACCESS_KEY),
        ("GUICHET__OBJECTS__S3__SECRET_ACCESS_KEY", SECRET_KEY),
    ]);
    let app = env.spawn_with(&[Role::Dossier], config).await;
    let mut c = dossier_client(app.grpc_addr, &env.token("agent-1", &[TokenRole::Agent])).await;
    let citizen = c
        .resolve_citizen(dpb::ResolveCitizenRequest {
            hint: Some(CitizenHint {
                given_name: "Marie".into(),
                family_name: "Durand".into(),
                phones: vec!["06 12 34 56 78".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .citizen
        .unwrap();
    let d = c
        .open_dossier(dpb::OpenDossierRequest {
            citizen_id: citizen.id,
            process_id: "a-qualifier".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let doc = c
        .add_document(dpb::AddDocumentRequest {
            dossier_id: d.id.clone(),
            filename: "courrier.pdf".into(),
            media_type: "application/pdf".into(),
            content: b"%PDF-1.7 courrier de Mme Durand".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // In the bucket, not in a local directory.
    let key = server
        .root
        .path()
        .join("guichet")
        .join(&doc.sha256[..2])
        .join(&doc.sha256[2..4])
        .join(&doc.sha256);
    assert!(key.exists(), "{}", key.display());
    let back = c
        .get_document(dpb::GetDocumentRequest {
            id: doc.id,
            include_content: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.content, b"%PDF-1.7 courrier de Mme Durand");
    app.stop().await.unwrap();
    env.cleanup().await;
}
