//! Scanned letters become intake events: French typed letters rendered by
//! the test (text PDF, image-only PDF with skew and noise, a page scanned
//! sideways, JPEG, a two-page TIFF) are read by real Tesseract and poppler,
//! and what routing needs is checked field by field.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use guichet::Role;
use guichet_testkit::proto::intake::v1 as ipb;
use guichet_testkit::proto::scan::v1 as spb;
use guichet_testkit::scan::{PageSpec, char_accuracy, drop_into_inbox, render};
use guichet_testkit::*;
use prost::Message;

/// A letter's sender and content, and what extraction must find.
pub struct Letter {
    /// How the sender heads the block: "Mme", "M.", "Monsieur"… or nothing.
    pub title: &'static str,
    pub given: &'static str,
    pub family: &'static str,
    pub street: &'static str,
    pub postal_code: &'static str,
    pub city: &'static str,
    pub phone: &'static str,
    pub email: &'static str,
    pub date_text: &'static str,
    pub date_iso: &'static str,
    pub subject: &'static str,
    pub reference: &'static str,
}

pub const LETTERS: [Letter; 5] = [
    Letter {
        title: "Mme",
        given: "Hélène",
        family: "Lefèvre",
        street: "12 rue des Écoles",
        postal_code: "69003",
        city: "Lyon",
        phone: "06 12 34 56 78",
        email: "helene.lefevre@example.fr",
        date_text: "Lyon, le 3 novembre 2026",
        date_iso: "2026-11-03",
        subject: "demande de copie d'acte de naissance",
        reference: "VIN-2026-000123",
    },
    Letter {
        title: "M.",
        given: "François",
        family: "GARÇON",
        street: "4 avenue Jean Jaurès",
        postal_code: "69100",
        city: "Villeurbanne",
        phone: "04 78 12 34 56",
        email: "f.garcon@example.org",
        date_text: "Villeurbanne, le 14 octobre 2026",
        date_iso: "2026-10-14",
        subject: "réclamation sur la facture d'eau",
        reference: "VIN-2026-000456",
    },
    Letter {
        title: "",
        given: "Zoé",
        family: "Mercier",
        street: "8 place de l'Église",
        postal_code: "38000",
        city: "Grenoble",
        phone: "07 65 43 21 09",
        email: "zoe.mercier@example.net",
        date_text: "Grenoble, le 2 septembre 2026",
        date_iso: "2026-09-02",
        subject: "inscription à la cantine scolaire",
        reference: "VIN-2026-000789",
    },
    Letter {
        title: "Monsieur",
        given: "Gérard",
        family: "Dubœuf",
        street: "27 boulevard de la Libération",
        postal_code: "13001",
        city: "Marseille",
        phone: "06 98 76 54 32",
        email: "gerard.duboeuf@example.com",
        date_text: "Marseille, le 21 août 2026",
        date_iso: "2026-08-21",
        subject: "demande de place de stationnement",
        reference: "VIN-2026-000321",
    },
    Letter {
        title: "Madame",
        given: "Anaïs",
        family: "Bérénger",
        street: "3 impasse des Tilleuls",
        postal_code: "75011",
        city: "Paris",
        phone: "01 43 98 65 00",
        email: "anais.berenger@example.fr",
        date_text: "Paris, le 5 juin 2026",
        date_iso: "2026-06-05",
        subject: "permis de construire d'une véranda",
        reference: "VIN-2026-000654",
    },
];

impl Letter {
    /// The first page: sender top left, the town hall at the right, date,
    /// subject, reference, body.
    pub fn page(&self) -> PageSpec {
        let name = format!("{} {} {}", self.title, self.given, self.family)
            .trim()
            .to_owned();
        let signature = format!("{} {}", self.given, self.family);
        let postal = format!("{} {}", self.postal_code, self.city);
        let phone = format!("Tél. : {}", self.phone);
        let subject = format!("Objet : {}", self.subject);
        let reference = format!("Référence du dossier : {}", self.reference);
        PageSpec::new(&[
            (20.0, &name),
            (20.0, self.street),
            (20.0, &postal),
            (20.0, &phone),
            (20.0, self.email),
            (0.0, ""),
            (115.0, "Mairie de Villeurbanne"),
            (115.0, "Service des usagers"),
            (115.0, "Place Lazare-Goujon"),
            (115.0, "69100 Villeurbanne"),
            (0.0, ""),
            (115.0, self.date_text),
            (0.0, ""),
            (20.0, &subject),
            (20.0, &reference),
            (0.0, ""),
            (20.0, "Madame, Monsieur,"),
            (0.0, ""),
            (
                20.0,
                "Je me permets de vous écrire au sujet de ma demande, déposée",
            ),
            (
                20.0,
                "le mois dernier à l'accueil de la mairie. Pourriez-vous me dire",
            ),
            (
                20.0,
                "où en est son traitement et quelles pièces je dois fournir ?",
            ),
            (
                20.0,
                "Je reste à votre disposition pour tout complément d'information.",
            ),
            (0.0, ""),
            (
                20.0,
                "Veuillez agréer, Madame, Monsieur, mes salutations distinguées.",
            ),
            (0.0, ""),
            (115.0, &signature),
        ])
    }

    /// A second page (for multi-page files).
    pub fn second_page(&self) -> PageSpec {
        PageSpec::new(&[
            (20.0, "Pièces jointes :"),
            (20.0, "- copie de ma pièce d'identité ;"),
            (20.0, "- justificatif de domicile de moins de trois mois."),
            (0.0, ""),
            (
                20.0,
                "Je vous remercie de l'attention portée à ce courrier.",
            ),
        ])
    }
}

/// Decode the IntakeEvents on this test's INTAKE stream (at least `n`).
pub async fn intake_events(
    env: &TestEnv,
    n: usize,
) -> Vec<(async_nats::HeaderMap, ipb::IntakeEvent)> {
    env.stream_messages("INTAKE", n)
        .await
        .into_iter()
        .map(|(h, body)| (h, ipb::IntakeEvent::decode(body).expect("an IntakeEvent")))
        .collect()
}

fn scan_details(e: &ipb::IntakeEvent) -> &ipb::ScanDetails {
    match &e.details {
        Some(ipb::intake_event::Details::Scan(s)) => s,
        other => panic!("not a scan event: {other:?}"),
    }
}

/// Check an event against its letter, field by field.
fn check_letter(e: &ipb::IntakeEvent, l: &Letter, source: &str, min_accuracy: f64) {
    let what = &e.attachments[0].filename;
    assert_eq!(e.channel, ipb::Channel::Scan as i32, "{what}");
    assert_eq!(e.quoted_reference, l.reference, "{what}: reference");
    let c = e
        .citizen
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: a citizen hint"));
    assert_eq!(c.given_name, l.given, "{what}: given name");
    assert_eq!(c.family_name, l.family, "{what}: family name");
    let a = c
        .address
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: an address"));
    assert_eq!(a.postal_code, l.postal_code, "{what}: postal code");
    assert_eq!(a.city, l.city, "{what}: city");
    assert_eq!(a.lines, [l.street], "{what}: street");
    assert_eq!(c.phones, [l.phone], "{what}: phones (not the town hall's)");
    assert_eq!(c.emails, [l.email], "{what}: emails");
    assert_eq!(e.subject, l.subject, "{what}: subject");
    let d = scan_details(e);
    assert_eq!(d.letter_date, l.date_iso, "{what}: letter date");
    assert_eq!(d.text_source, source, "{what}: text source");
    let accuracy = char_accuracy(&l.page().text(), e.body.split("\n\n").next().unwrap_or(""));
    assert!(
        accuracy >= min_accuracy,
        "{what}: character accuracy {accuracy:.3} < {min_accuracy}\n{}",
        e.body
    );
    assert!(d.page_confidences.iter().all(|c| *c > 0.5), "{what}: {d:?}");
    eprintln!(
        "{what}: character accuracy {accuracy:.3}, page confidences {:?}",
        d.page_confidences
    );
    assert_eq!(e.attachments.len(), 1, "{what}: the original is attached");
}

#[tokio::test]
async fn scanned_letters_in_every_format_become_intake_events_with_sender_reference_date_and_subject()
 {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    // The dossier role answers which letters the listing may show.
    let app = env.spawn(&[Role::IngressScan, Role::Dossier]).await;
    let work = tempfile::tempdir().expect("tempdir");
    let inbox = env.scan_dir().join("inbox");
    let mk = |name: &str, format: &str, pages: Vec<PageSpec>| {
        let p = work.path().join(name);
        render(&p, format, 300, &pages);
        drop_into_inbox(&inbox, &p, name);
    };
    // A letter typed and saved as PDF (text layer).
    mk("lettre-texte.pdf", "pdf_text", vec![LETTERS[0].page()]);
    // Scanned: a two-page image-only PDF, the first page slightly skewed,
    // with speckle noise.
    let mut skewed = LETTERS[1].page();
    skewed.skew = 1.5;
    skewed.noise = 0.003;
    mk(
        "scan-image.pdf",
        "pdf_image",
        vec![skewed, LETTERS[1].second_page()],
    );
    // A page put on the glass sideways.
    let mut sideways = LETTERS[2].page();
    sideways.rotate = 90;
    sideways.noise = 0.002;
    mk("scan-tourne.png", "png", vec![sideways]);
    let mut photo = LETTERS[3].page();
    photo.skew = -0.8;
    photo.noise = 0.002;
    // In a batch sub-folder: its name is the batch id.
    let p = work.path().join("scan.jpg");
    render(&p, "jpeg", 300, &[photo]);
    drop_into_inbox(&inbox.join("lot-42"), &p, "scan.jpg");
    // A two-page fax-style TIFF (bilevel, CCITT G4).
    mk(
        "scan-2-pages.tif",
        "tiff",
        vec![LETTERS[4].page(), LETTERS[4].second_page()],
    );

    let events = intake_events(&env, 5).await;
    let by_file: HashMap<String, &ipb::IntakeEvent> = events
        .iter()
        .map(|(_, e)| (e.attachments[0].filename.clone(), e))
        .collect();
    assert_eq!(by_file.len(), 5, "one event per letter");
    check_letter(by_file["lettre-texte.pdf"], &LETTERS[0], "text_layer", 0.99);
    check_letter(by_file["scan-image.pdf"], &LETTERS[1], "ocr", 0.95);
    check_letter(by_file["scan-tourne.png"], &LETTERS[2], "ocr", 0.95);
    check_letter(by_file["scan.jpg"], &LETTERS[3], "ocr", 0.95);
    check_letter(by_file["scan-2-pages.tif"], &LETTERS[4], "ocr", 0.95);
    assert_eq!(scan_details(by_file["scan.jpg"]).batch_id, "lot-42");
    assert_eq!(scan_details(by_file["scan-image.pdf"]).batch_id, "");
    // Both pages of the image-only PDF were rendered and read.
    let pdf = by_file["scan-image.pdf"];
    assert_eq!(scan_details(pdf).page_count, 2);
    assert_eq!(scan_details(pdf).page_confidences.len(), 2);
    let pdf_page2 = pdf.body.split("\n\n").nth(1).unwrap_or("");
    let accuracy = char_accuracy(&LETTERS[1].second_page().text(), pdf_page2);
    assert!(
        accuracy >= 0.95,
        "PDF page 2 accuracy {accuracy:.3}: {pdf_page2}"
    );
    let tiff = by_file["scan-2-pages.tif"];
    assert_eq!(scan_details(tiff).page_count, 2);
    let page2 = tiff.body.split("\n\n").nth(1).unwrap_or("");
    let accuracy = char_accuracy(&LETTERS[4].second_page().text(), page2);
    assert!(
        accuracy >= 0.95,
        "second page accuracy {accuracy:.3}: {page2}"
    );

    // Every original is in the object store under its SHA-256, and every
    // file left the inbox for done/.
    let objects = guichet_platform::objects::ObjectStore::local(env.dir.path().join("objects"));
    for (_, e) in &events {
        let a = &e.attachments[0];
        let bytes = objects.get(&a.sha256).await.expect("original stored");
        assert_eq!(bytes.len() as u64, a.size_bytes);
    }
    let done = env.scan_dir().join("done");
    eventually("files moved to done/", Duration::from_secs(10), || async {
        let top = std::fs::read_dir(&done).ok()?.count();
        let batch = std::fs::read_dir(done.join("lot-42")).ok()?.count();
        // 4 files and the batch folder at the top, 1 file in the batch.
        (top == 5 && batch == 1).then_some(())
    })
    .await;
    assert!(done.join("lot-42").join("scan.jpg").exists());
    assert_eq!(
        std::fs::read_dir(&inbox).expect("inbox").count(),
        1,
        "only lot-42/ left"
    );

    // The API shows them published, with their event ids.
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let list = scan_client(app.grpc_addr, &agent)
        .await
        .list_scan_files(spb::ListScanFilesRequest {
            filter: "state = PUBLISHED".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.scan_files.len(), 5);
    for f in &list.scan_files {
        assert!(
            events.iter().any(|(_, e)| e.id == f.intake_event_id),
            "{f:?}"
        );
    }
    app.stop().await.expect("stop");
    env.cleanup().await;
}

/// Upload `bytes` in chunks with `filename`.
pub async fn upload(
    addr: std::net::SocketAddr,
    token: &str,
    filename: &str,
    bytes: &[u8],
) -> Result<spb::ScanFile, tonic::Status> {
    let mut msgs = vec![spb::UploadScanRequest {
        part: Some(spb::upload_scan_request::Part::Metadata(
            spb::UploadMetadata {
                filename: filename.into(),
                batch_id: "poste-courrier-1".into(),
                ..Default::default()
            },
        )),
    }];
    for c in bytes.chunks(16 * 1024) {
        msgs.push(spb::UploadScanRequest {
            part: Some(spb::upload_scan_request::Part::Chunk(c.to_vec())),
        });
    }
    scan_client(addr, token)
        .await
        .upload_scan(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

pub fn render_to_bytes(dir: &Path, name: &str, format: &str, pages: Vec<PageSpec>) -> Vec<u8> {
    let p = dir.join(name);
    render(&p, format, 300, &pages);
    std::fs::read(&p).expect("rendered file")
}

#[tokio::test]
async fn an_uploaded_scan_is_read_once_and_lands_in_the_unified_queue_on_postgres() {
    let Some(env) = TestEnv::new(Backend::Postgres).await else {
        return;
    };
    let app = env.spawn(&all_roles()).await;
    let station = env.token("station-courrier", &[TokenRole::Partner]);
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let work = tempfile::tempdir().expect("tempdir");
    let bytes = render_to_bytes(
        work.path(),
        "courrier.pdf",
        "pdf_text",
        vec![LETTERS[1].page()],
    );

    let first = upload(app.grpc_addr, &station, "courrier.pdf", &bytes)
        .await
        .expect("upload");
    assert_eq!(first.state, spb::ScanState::Published as i32);
    assert_eq!(first.source, spb::ScanSource::Upload as i32);
    assert_eq!(first.batch_id, "poste-courrier-1");
    assert_eq!(first.page_count, 1);
    assert!(!first.intake_event_id.is_empty());
    // The same content again (a station retrying): not read twice.
    let again = upload(app.grpc_addr, &station, "courrier-bis.pdf", &bytes)
        .await
        .expect("upload again");
    assert_eq!(again.name, first.name);
    assert_eq!(again.intake_event_id, first.intake_event_id);

    // Routing turns it into one work item, on the scan channel.
    let items = eventually(
        "the letter in the queue",
        Duration::from_secs(30),
        || async {
            let page = queue_client(app.grpc_addr, &agent)
                .await
                .list_work_items(guichet_testkit::proto::routing::v1::ListWorkItemsRequest {
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            (!page.items.is_empty()).then_some(page.items)
        },
    )
    .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].intake_event_id, first.intake_event_id);
    assert_eq!(items[0].channel, ipb::Channel::Scan as i32);

    // Uploads are refused without the right role or without metadata.
    let err = upload(app.grpc_addr, "", "x.pdf", &bytes)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = scan_client(app.grpc_addr, &station)
        .await
        .upload_scan(tokio_stream::iter(vec![spb::UploadScanRequest {
            part: Some(spb::upload_scan_request::Part::Chunk(bytes.clone())),
        }]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    app.stop().await.expect("stop");
    env.cleanup().await;
}
