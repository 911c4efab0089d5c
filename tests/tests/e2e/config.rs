//! Invalid configuration stops start-up with the key's name.

use std::process::Stdio;

use guichet::GuichetConfig;
use guichet_testkit::*;

#[test]
fn a_badly_typed_env_value_is_reported_with_its_key() {
    let err = GuichetConfig::load(
        None,
        vec![("GUICHET__BUS__MAX_DELIVER".into(), "many".into())],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bus.max_deliver"), "{err}");
}

#[test]
fn an_invalid_value_in_a_file_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guichet.toml");
    std::fs::write(&path, "[dossier]\nreference_prefix = \"vin-\"\n").unwrap();
    let cfg = GuichetConfig::load(Some(&path), Vec::new()).expect("types are right");
    let err = cfg.validate(guichet::Role::ALL).unwrap_err().to_string();
    // The signing key is checked first: give one, then the prefix fails.
    assert!(err.contains("auth.signing_key"), "{err}");
    let cfg = GuichetConfig::load(
        Some(&path),
        vec![("GUICHET__AUTH__SIGNING_KEY".into(), SIGNING_KEY.into())],
    )
    .unwrap();
    let err = cfg.validate(guichet::Role::ALL).unwrap_err().to_string();
    assert!(err.contains("dossier.reference_prefix"), "{err}");
}

#[tokio::test]
async fn the_binary_refuses_to_start_with_an_invalid_value_and_names_the_key() {
    let out = tokio::process::Command::new(guichet_bin())
        .args(["serve", "dossier"])
        .env("GUICHET__AUTH__SIGNING_KEY", SIGNING_KEY)
        .env("GUICHET__SERVER__GRPC_ADDR", "not-an-address")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run guichet");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.grpc_addr"), "{stderr}");

    let out = tokio::process::Command::new(guichet_bin())
        .args(["serve", "routing"])
        .env("GUICHET__AUTH__SIGNING_KEY", SIGNING_KEY)
        .env("GUICHET__ROUTING__CONCURRENCY", "lots")
        .output()
        .await
        .expect("run guichet");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routing.concurrency"), "{stderr}");
}

/// `guichet serve` is production: notification's development sinks (SMS
/// codes and citizens' emails written to a folder) are refused, naming the
/// key and the way out; `guichet up` stays the laptop mode.
#[tokio::test]
async fn serve_refuses_the_development_sinks_unless_development_is_set() {
    let dir = tempfile::tempdir().unwrap();
    for args in [vec!["serve", "notification"], vec!["serve", "--all"]] {
        let out = tokio::process::Command::new(guichet_bin())
            .args(&args)
            .current_dir(dir.path())
            .env("GUICHET__AUTH__SIGNING_KEY", SIGNING_KEY)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run guichet");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("notification.sms_provider"), "{stderr}");
        assert!(stderr.contains("GUICHET__DEVELOPMENT=true"), "{stderr}");
        assert!(
            !stderr.contains("Development token"),
            "no token printed: {stderr}"
        );
    }
    // With the provider configured, the email sink is the next refusal.
    let out = tokio::process::Command::new(guichet_bin())
        .args(["serve", "notification"])
        .current_dir(dir.path())
        .env("GUICHET__AUTH__SIGNING_KEY", SIGNING_KEY)
        .env("GUICHET__NOTIFICATION__SMS_PROVIDER", "http")
        .env(
            "GUICHET__NOTIFICATION__SMS_HTTP__URL",
            "https://sms.example.fr/send",
        )
        .output()
        .await
        .expect("run guichet");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("notification.email.transport"), "{stderr}");
}

#[tokio::test]
async fn serving_an_unknown_role_is_refused_with_the_roles_there_are() {
    let out = tokio::process::Command::new(guichet_bin())
        .args(["serve", "courrier-papier"])
        .env("GUICHET__AUTH__SIGNING_KEY", SIGNING_KEY)
        .output()
        .await
        .expect("run guichet");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("courrier-papier"), "{stderr}");
    assert!(
        stderr.contains("ingress-email"),
        "lists the roles: {stderr}"
    );
}

#[tokio::test]
async fn guichet_migrate_prepares_postgres_for_roles_that_do_not_migrate_themselves() {
    let Some(env) = TestEnv::new(Backend::Postgres).await else {
        return;
    };
    let mut cmd = tokio::process::Command::new(guichet_bin());
    cmd.arg("migrate")
        .env("GUICHET__DATABASE__MIGRATE_ON_START", "false");
    for (k, v) in &env.overrides {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run guichet migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Roles started as in Kubernetes (the Job migrated, they do not).
    let app = env
        .spawn_with(
            &all_roles(),
            env.config_with(&[("GUICHET__DATABASE__MIGRATE_ON_START", "false")]),
        )
        .await;
    let agent = env.token("agent-1", &[TokenRole::Agent]);
    counter_client(app.grpc_addr, &agent)
        .await
        .issue_ticket(ticket_request("Anne", "Martin", "", "x"))
        .await
        .expect("the migrated schema serves requests");
    // Running it again is harmless.
    let mut again = tokio::process::Command::new(guichet_bin());
    again.arg("migrate");
    for (k, v) in &env.overrides {
        again.env(k, v);
    }
    assert!(again.output().await.expect("rerun").status.success());
    app.stop().await.expect("stop");
    env.cleanup().await;
}

#[test]
fn a_misspelt_key_is_refused_rather_than_silently_ignored() {
    let err = GuichetConfig::load(
        None,
        vec![("GUICHET__BUS__URLL".into(), "nats://x:4222".into())],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("urll"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guichet.toml");
    std::fs::write(&path, "[routing]\nconcurency = 4\n").unwrap();
    let err = GuichetConfig::load(Some(&path), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("concurency"), "{err}");
}

#[tokio::test]
async fn a_postgres_test_runs_every_role_on_its_own_postgres_database() {
    let Some(env) = TestEnv::new(Backend::Postgres).await else {
        return;
    };
    let mut config = env.config();
    // The guard every in-process start of the test kit runs.
    env.assert_backend(&mut config);
    let mut urls = std::collections::BTreeSet::new();
    for role in guichet::Role::ALL {
        let url = env.database_url(*role);
        assert!(url.starts_with("postgres://"), "{}: {url}", role.name());
        urls.insert(url);
    }
    assert_eq!(
        urls.len(),
        guichet::Role::ALL.len(),
        "one database per role"
    );
    // Each is a real database every role migrates.
    guichet::migrate(&config, guichet::Role::ALL).await.unwrap();
    env.cleanup().await;
}
