//! `guichet up` from an empty directory with the shipped defaults, as a new
//! user meets it: every role ready, the shipped processes and rules in force
//! (a passport renewal at the counter reaches the passport process, not
//! triage), the CTI webhook answering at the URL and token it prints.

use std::time::Duration;

use guichet_testkit::proto::dossier::v1 as dpb;
use guichet_testkit::*;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::slice::{set_available, take_next};

#[tokio::test]
async fn guichet_up_works_from_an_empty_directory_with_the_shipped_defaults() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut cmd = tokio::process::Command::new(guichet_bin());
    cmd.arg("up")
        .current_dir(home.path())
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    // Only what keeps this test apart from the others running at the same
    // time: its bus prefixes and free ports. Databases, keys, tokens,
    // processes and rules are the shipped defaults.
    for (k, v) in env.bus_env() {
        cmd.env(k, v);
    }
    for (key, addr) in [
        ("GUICHET__SERVER__GRPC_ADDR", grpc.clone()),
        (
            "GUICHET__SERVER__ADMIN_ADDR",
            format!("127.0.0.1:{}", free_port()),
        ),
        ("GUICHET__COUNTER__HTTP_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__TELEPHONY__HTTP_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__SIGNATURE__HTTP_ADDR", "127.0.0.1:0".into()),
        ("GUICHET__PORTAL__HTTP_ADDR", "127.0.0.1:0".into()),
    ] {
        cmd.env(key, addr);
    }
    let mut child = cmd.spawn().expect("start guichet up");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = banner
                .last()
                .is_some_and(|l: &String| l.starts_with("Development token"));
            banner.push(line);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(90), read)
        .await
        .expect("guichet up prints its banner");
    let text = banner.join("\n");
    assert!(text.starts_with("guichet is up: roles "), "{text}");
    let token = banner.last().unwrap().trim().to_owned();
    let cti = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("CTI    http://"))
        .unwrap_or_else(|| panic!("the CTI webhook URL is printed: {text}"));
    let (addr, rest) = cti.split_once('/').unwrap();
    let cti_token = rest
        .strip_prefix("api/v1/cti/")
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    let cti_addr: std::net::SocketAddr = addr.parse().unwrap();
    let grpc_addr: std::net::SocketAddr = grpc.parse().unwrap();

    // A walk-in asking to renew a passport reaches the passport process.
    set_available(grpc_addr, &token).await;
    let ticket = counter_client(grpc_addr, &token)
        .await
        .issue_ticket(ticket_request(
            "Jean",
            "Dupont",
            "06 12 34 56 78",
            "renouveler mon passeport",
        ))
        .await
        .expect("issue ticket")
        .into_inner();
    let item = take_next(grpc_addr, &token).await;
    assert_eq!(item.intake_event_id, ticket.intake_event_id);
    let d = dossier_client(grpc_addr, &token)
        .await
        .get_dossier(dpb::GetDossierRequest {
            id: item.dossier_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.process_id, "passeport", "the shipped rules are in force");

    // The PBX posts to the printed URL with the printed token.
    let (status, body) = cti_json(
        cti_addr,
        cti_token,
        json!({"event":"newCall","from":"0612345678","to":"0143986500","direction":"in","callId":"up-1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The portal at the printed URL opens with a printed development account.
    let portal = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("portal "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the portal URL is printed: {text}"))
        .to_owned();
    let password = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("accueil / "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("a development account is printed: {text}"))
        .to_owned();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http
        .get(format!("{portal}/connexion"))
        .send()
        .await
        .unwrap();
    let cookie = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("cookie {name}"))
    };
    let login_cookie = cookie(&form, "guichet_login");
    let page = form.text().await.unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let signed_in = http
        .post(format!("{portal}/connexion"))
        .header("cookie", format!("guichet_login={login_cookie}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("retour", "/file"),
            ("login", "accueil"),
            ("password", password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303, "the printed account logs in");
    let session = cookie(&signed_in, "guichet_session");
    let queue = http
        .get(format!("{portal}/file"))
        .header("cookie", format!("guichet_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(queue.status(), 200);
    assert!(queue.text().await.unwrap().contains("File unique"));

    // A clean stop, and what it made lives in the directory it ran in.
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within 30 s")
        .unwrap();
    assert!(status.success(), "SIGTERM gives a clean exit: {status}");
    for made in [
        "data/dev-signing-key",
        "data/dev-cti-token",
        "data/dossier.db",
        "data/portal.db",
        "data/dev-accounts",
    ] {
        assert!(home.path().join(made).exists(), "{made} in the directory");
    }
    env.cleanup().await;
}
