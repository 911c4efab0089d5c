//! Files that cannot be read are quarantined with the right reason, never
//! dropped and never crashing the role; the API lists them and releases
//! them once what stopped them is fixed.

use std::time::Duration;

use guichet::Role;
use guichet_testkit::proto::scan::v1 as spb;
use guichet_testkit::scan::{PageSpec, drop_into_inbox, render};
use guichet_testkit::*;

use crate::scan_letters::{LETTERS, intake_events};

async fn quarantined(addr: std::net::SocketAddr, token: &str, filter: &str) -> Vec<spb::ScanFile> {
    scan_client(addr, token)
        .await
        .list_scan_files(spb::ListScanFilesRequest {
            filter: filter.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .scan_files
}

#[tokio::test]
async fn bad_scans_are_quarantined_with_their_reason_and_released_once_fixed() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let limits = [
        ("GUICHET__SCAN__MAX_PAGES", "2"),
        ("GUICHET__SCAN__MAX_FILE_BYTES", "3000000"),
    ];
    let app = env
        .spawn_with(&[Role::IngressScan], env.config_with(&limits))
        .await;
    let work = tempfile::tempdir().expect("tempdir");
    let inbox = env.scan_dir().join("inbox");
    let w = |name: &str, bytes: &[u8]| {
        let p = work.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        drop_into_inbox(&inbox, &p, name);
    };
    let r = |name: &str, format: &str, dpi: u32, pages: Vec<PageSpec>| {
        let p = work.path().join(name);
        render(&p, format, dpi, &pages);
        p
    };
    w("vide.pdf", b"");
    let mut huge = b"%PDF-1.4\n".to_vec();
    huge.resize(3_100_000, b' ');
    huge.extend(b"\n%%EOF\n");
    w("enorme.pdf", &huge);
    let whole =
        std::fs::read(r("entier.pdf", "pdf_text", 300, vec![LETTERS[0].page()])).expect("pdf");
    w("tronque.pdf", &whole[..whole.len() / 2]);
    w("notes.docx", b"PK\x03\x04 not a scan");
    w("casse.pdf", b"%PDF-1.4\nthis is no PDF at all\n%%EOF\n");
    let p = r("chiffre.pdf", "pdf_encrypted", 300, vec![LETTERS[0].page()]);
    drop_into_inbox(&inbox, &p, "chiffre.pdf");
    let p = r("vignette.png", "png", 30, vec![LETTERS[0].page()]);
    drop_into_inbox(&inbox, &p, "vignette.png");
    let three = r(
        "trois-pages.pdf",
        "pdf_text",
        300,
        vec![
            LETTERS[1].page(),
            LETTERS[1].second_page(),
            LETTERS[1].second_page(),
        ],
    );
    drop_into_inbox(&inbox, &three, "trois-pages.pdf");
    let p = r("blanche.png", "png", 150, vec![PageSpec::new(&[])]);
    drop_into_inbox(&inbox, &p, "blanche.png");

    let expected = [
        ("vide.pdf", spb::QuarantineReason::EmptyFile),
        ("enorme.pdf", spb::QuarantineReason::TooLarge),
        ("tronque.pdf", spb::QuarantineReason::Truncated),
        ("notes.docx", spb::QuarantineReason::UnsupportedType),
        ("casse.pdf", spb::QuarantineReason::Unreadable),
        ("chiffre.pdf", spb::QuarantineReason::EncryptedPdf),
        ("vignette.png", spb::QuarantineReason::ImageTooSmall),
        ("trois-pages.pdf", spb::QuarantineReason::TooManyPages),
        ("blanche.png", spb::QuarantineReason::NoText),
    ];
    let supervisor = env.token("chef-courrier", &[TokenRole::Supervisor]);
    let files = eventually(
        "every bad file quarantined",
        Duration::from_secs(60),
        || async {
            let files = quarantined(app.grpc_addr, &supervisor, "state = QUARANTINED").await;
            (files.len() == expected.len()).then_some(files)
        },
    )
    .await;
    // A file is moved after its record is committed (a crash in between
    // leaves it in inbox/, moved on the next pass): wait for the moves.
    let quarantine = env.scan_dir().join("quarantine");
    eventually(
        "every bad file moved to quarantine/",
        Duration::from_secs(30),
        || {
            let quarantine = quarantine.clone();
            async move {
                expected
                    .iter()
                    .all(|(name, _)| quarantine.join(name).exists())
                    .then_some(())
            }
        },
    )
    .await;
    for (name, reason) in expected {
        let f = files
            .iter()
            .find(|f| f.filename == name)
            .unwrap_or_else(|| panic!("{name} quarantined: {files:?}"));
        assert_eq!(f.quarantine_reason, reason as i32, "{name}: {f:?}");
        assert!(!f.quarantine_detail.is_empty(), "{name}");
        assert!(f.intake_event_id.is_empty(), "{name}: no event");
    }
    // Paging: newest first, three at a time, every file once.
    let mut client = scan_client(app.grpc_addr, &supervisor).await;
    let (mut names, mut token) = (Vec::new(), String::new());
    loop {
        let page = client
            .list_scan_files(spb::ListScanFilesRequest {
                page_size: 3,
                page_token: token.clone(),
                filter: "state = QUARANTINED".into(),
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.scan_files.len() <= 3);
        names.extend(page.scan_files.into_iter().map(|f| f.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected_names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    assert_eq!(names, expected_names);
    let one = client
        .get_scan_file(spb::GetScanFileRequest {
            name: names[0].clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(one.name, names[0]);
    assert_eq!(
        one.sha256.len(),
        64,
        "the mail room's supervisor sees the address"
    );
    // A front-desk agent sees the mail room, not the object store
    // addresses of the letters (their content, with citizens' data).
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let mut as_agent = scan_client(app.grpc_addr, &agent).await;
    let seen = as_agent
        .list_scan_files(spb::ListScanFilesRequest::default())
        .await
        .expect("an agent lists the mail room")
        .into_inner()
        .scan_files;
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|f| f.sha256.is_empty()), "{seen:?}");
    let seen_one = as_agent
        .get_scan_file(spb::GetScanFileRequest {
            name: names[0].clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert!(seen_one.sha256.is_empty());
    let missing = client
        .get_scan_file(spb::GetScanFileRequest {
            name: "scanFiles/nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let bad = client
        .list_scan_files(spb::ListScanFilesRequest {
            filter: "colour = red".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let too_many = quarantined(app.grpc_addr, &supervisor, "reason = TOO_MANY_PAGES").await;
    assert_eq!(too_many.len(), 1);
    // Released as is, it is still too long: still quarantined.
    let mut client = scan_client(app.grpc_addr, &supervisor).await;
    let still = client
        .release_scan_file(spb::ReleaseScanFileRequest {
            name: too_many[0].name.clone(),
            without_text: false,
        })
        .await
        .expect("release")
        .into_inner();
    assert_eq!(still.state, spb::ScanState::Quarantined as i32);
    assert_eq!(still.release_count, 1);
    // Agents may look but not release.
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    let denied = scan_client(app.grpc_addr, &agent)
        .await
        .release_scan_file(spb::ReleaseScanFileRequest {
            name: too_many[0].name.clone(),
            without_text: false,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    // The same bad file dropped again is recognised, not read again.
    drop_into_inbox(&inbox, &three, "trois-pages-bis.pdf");
    eventually("the copy set aside", Duration::from_secs(20), || async {
        let q = env
            .scan_dir()
            .join("quarantine")
            .join("trois-pages-bis.pdf");
        q.exists().then_some(())
    })
    .await;
    app.stop().await.expect("stop");

    // The limit raised, the release reads it again from the stored original.
    let app = env
        .spawn_with(
            &[Role::IngressScan],
            env.config_with(&[("GUICHET__SCAN__MAX_PAGES", "5")]),
        )
        .await;
    let mut client = scan_client(app.grpc_addr, &supervisor).await;
    let released = client
        .release_scan_file(spb::ReleaseScanFileRequest {
            name: too_many[0].name.clone(),
            without_text: false,
        })
        .await
        .expect("release")
        .into_inner();
    assert_eq!(released.state, spb::ScanState::Published as i32);
    assert_eq!(released.page_count, 3);
    assert_eq!(released.release_count, 2);
    // The blank page is forwarded for an agent to read, image only.
    let blank = quarantined(app.grpc_addr, &supervisor, "reason = NO_TEXT").await;
    let forwarded = client
        .release_scan_file(spb::ReleaseScanFileRequest {
            name: blank[0].name.clone(),
            without_text: true,
        })
        .await
        .expect("forward")
        .into_inner();
    assert_eq!(forwarded.state, spb::ScanState::Published as i32);
    let events = intake_events(&env, 2).await;
    assert_eq!(
        events.len(),
        2,
        "one event per released file, none for the copy"
    );
    let long = events
        .iter()
        .find(|(_, e)| e.id == released.intake_event_id)
        .expect("released event");
    assert_eq!(long.1.quoted_reference, LETTERS[1].reference);
    let image_only = events
        .iter()
        .find(|(_, e)| e.id == forwarded.intake_event_id)
        .expect("forwarded event");
    assert!(image_only.1.body.is_empty());
    assert_eq!(image_only.1.attachments[0].sha256, forwarded.sha256);
    // Only a quarantined file can be released.
    let err = client
        .release_scan_file(spb::ReleaseScanFileRequest {
            name: released.name.clone(),
            without_text: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn an_ocr_that_runs_too_long_is_stopped_and_quarantined_as_a_timeout() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let config = env.config_with(&[("GUICHET__SCAN__OCR_TIMEOUT_MS", "100")]);
    let app = env.spawn_with(&[Role::IngressScan], config).await;
    let work = tempfile::tempdir().expect("tempdir");
    let p = work.path().join("lent.png");
    render(&p, "png", 300, &[LETTERS[2].page()]);
    drop_into_inbox(&env.scan_dir().join("inbox"), &p, "lent.png");
    let supervisor = env.token("chef-courrier", &[TokenRole::Supervisor]);
    let f = eventually("the file quarantined", Duration::from_secs(30), || async {
        quarantined(app.grpc_addr, &supervisor, "reason = OCR_TIMEOUT")
            .await
            .pop()
    })
    .await;
    assert_eq!(f.filename, "lent.png");
    assert!(f.quarantine_detail.contains("100 ms"), "{f:?}");
    app.stop().await.expect("stop");
    env.cleanup().await;
}

/// A one-page PDF of `w` × `h` points, its cross-reference offsets
/// computed: with a MediaBox of 200 × 200 inches it is the probe's bomb
/// (a few hundred bytes that pdftoppm would render to 3.6 Gpx at 300 dpi).
fn pdf_of_size(w: u32, h: u32) -> Vec<u8> {
    let content = "0 g 72 72 144 144 re f";
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w} {h}] /Contents 4 0 R >>"),
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
    for o in offsets {
        out.extend(format!("{o:010} 00000 n \n").bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .bytes(),
    );
    out
}

/// A PNG whose header declares `w` × `h` pixels (8-bit grey) and that ends
/// at once: what a decoder would allocate before reading any data.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(b"IHDR");
    png.extend(w.to_be_bytes());
    png.extend(h.to_be_bytes());
    png.extend([8, 0, 0, 0, 0]);
    png.extend([0; 4]); // CRC, never reached
    png.extend(0u32.to_be_bytes());
    png.extend(b"IEND");
    png.extend([0xAE, 0x42, 0x60, 0x82]);
    png
}

#[tokio::test]
async fn scan_bombs_are_quarantined_by_the_pixel_budget_and_the_letters_beside_them_read() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    // The defaults: 300 dpi, a budget of 40 Mpx per page, 1 GiB per tool.
    let app = env.spawn_with(&[Role::IngressScan], env.config()).await;
    let work = tempfile::tempdir().expect("tempdir");
    let inbox = env.scan_dir().join("inbox");
    let bomb = pdf_of_size(14400, 14400);
    assert!(bomb.len() < 500, "{}", bomb.len());
    for (name, bytes) in [
        ("bombe.pdf", bomb),
        ("bombe.png", png_declaring(100_000, 100_000)),
    ] {
        let p = work.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        drop_into_inbox(&inbox, &p, name);
    }
    // Ordinary letters dropped right after: an image-only PDF (rendered
    // under the budget and the memory limit, at 300 dpi) and a PNG.
    let letter = work.path().join("lettre.pdf");
    render(&letter, "pdf_image", 300, &[LETTERS[3].page()]);
    drop_into_inbox(&inbox, &letter, "lettre.pdf");
    let photo = work.path().join("lettre.png");
    render(&photo, "png", 300, &[LETTERS[4].page()]);
    drop_into_inbox(&inbox, &photo, "lettre.png");

    let supervisor = env.token("chef-courrier", &[TokenRole::Supervisor]);
    let files = eventually(
        "both bombs quarantined",
        Duration::from_secs(30),
        || async {
            let files = quarantined(app.grpc_addr, &supervisor, "reason = TOO_LARGE").await;
            (files.len() == 2).then_some(files)
        },
    )
    .await;
    for name in ["bombe.pdf", "bombe.png"] {
        let f = files
            .iter()
            .find(|f| f.filename == name)
            .unwrap_or_else(|| panic!("{name}: {files:?}"));
        assert_eq!(f.state, spb::ScanState::Quarantined as i32, "{f:?}");
        assert!(f.quarantine_detail.contains("pixel budget"), "{f:?}");
        assert!(
            f.quarantine_detail.contains("scan.ocr_max_pixels_per_page"),
            "{f:?}"
        );
    }
    let pdf = files
        .iter()
        .find(|f| f.filename == "bombe.pdf")
        .expect("pdf");
    assert!(
        pdf.quarantine_detail.contains("200 × 200 inches"),
        "{pdf:?}"
    );
    let png = files
        .iter()
        .find(|f| f.filename == "bombe.png")
        .expect("png");
    assert!(png.quarantine_detail.contains("100000×100000"), "{png:?}");

    // The letters are read as usual, and nothing else is quarantined.
    let events = intake_events(&env, 2).await;
    let mut references: Vec<&str> = events
        .iter()
        .map(|(_, e)| e.quoted_reference.as_str())
        .collect();
    references.sort_unstable();
    assert_eq!(references, [LETTERS[3].reference, LETTERS[4].reference]);
    let all = quarantined(app.grpc_addr, &supervisor, "state = QUARANTINED").await;
    assert_eq!(all.len(), 2, "{all:?}");
    let (_, metrics) = http_get(app.admin_addr, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains("guichet_scan_quarantined_total{reason=\"TOO_LARGE\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("guichet_scan_ocr_limit_total{limit=\"pixel_budget\"} 2"),
        "{metrics}"
    );
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[tokio::test]
async fn scan_a_tool_stopped_by_the_memory_limit_quarantines_its_file_and_the_next_is_read() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    // 160 MiB: enough for the PDF tools and for Tesseract to start, not for
    // Tesseract to read a 600-dpi A4 page (35 Mpx; it needs about 250 MiB).
    let config = env.config_with(&[("GUICHET__SCAN__OCR_MEMORY_MB", "160")]);
    let app = env.spawn_with(&[Role::IngressScan], config).await;
    let work = tempfile::tempdir().expect("tempdir");
    let inbox = env.scan_dir().join("inbox");
    let big = work.path().join("grande.png");
    render(&big, "png", 600, &[LETTERS[2].page()]);
    drop_into_inbox(&inbox, &big, "grande.png");
    let text = work.path().join("texte.pdf");
    render(&text, "pdf_text", 300, &[LETTERS[0].page()]);
    drop_into_inbox(&inbox, &text, "texte.pdf");

    let supervisor = env.token("chef-courrier", &[TokenRole::Supervisor]);
    let f = eventually(
        "the page too large for the memory limit quarantined",
        Duration::from_secs(60),
        || async {
            quarantined(app.grpc_addr, &supervisor, "reason = OCR_FAILED")
                .await
                .pop()
        },
    )
    .await;
    assert_eq!(f.filename, "grande.png");
    assert!(
        f.quarantine_detail.contains("memory limit of 160 MiB"),
        "{f:?}"
    );
    let events = intake_events(&env, 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1.quoted_reference, LETTERS[0].reference);
    // Quarantined once, not retried: the file has left the inbox.
    let quarantine = env.scan_dir().join("quarantine");
    eventually("moved to quarantine/", Duration::from_secs(20), || {
        let q = quarantine.join("grande.png");
        async move { q.exists().then_some(()) }
    })
    .await;
    let (_, metrics) = http_get(app.admin_addr, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains("guichet_scan_ocr_limit_total{limit=\"memory\"} 1"),
        "{metrics}"
    );
    app.stop().await.expect("stop");
    env.cleanup().await;
}
