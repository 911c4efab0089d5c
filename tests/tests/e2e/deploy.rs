//! The deployment files validate offline and follow the role enum.

use std::process::Command;

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn deployment_files_validate_offline() {
    if !have("kubectl") {
        eprintln!(
            "NOTICE: kubectl not installed: skipping the offline validation of k8s/ and docker-compose.yml"
        );
        return;
    }
    let out = Command::new("bash")
        .arg(repo().join("scripts/validate-deploy.sh"))
        .output()
        .expect("run validate-deploy.sh");
    assert!(
        out.status.success(),
        "validate-deploy.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_split_overlay_has_a_deployment_for_every_served_role_and_no_other() {
    if !have("kubectl") {
        eprintln!("NOTICE: kubectl not installed: skipping the split overlay check");
        return;
    }
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo().join("k8s/overlays/split"))
        .output()
        .expect("kubectl kustomize");
    assert!(out.status.success());
    let yaml = String::from_utf8_lossy(&out.stdout);
    let deployments: Vec<&str> = yaml
        .split("\n---\n")
        .filter(|d| d.contains("kind: Deployment"))
        .collect();
    for role in guichet::Role::ALL {
        let name = format!("name: guichet-{}\n", role.name());
        let present = deployments.iter().any(|d| d.contains(&name));
        assert!(present, "Deployment guichet-{} present", role.name());
    }
    let compose = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    for role in guichet::Role::ALL {
        let command = format!("command: [\"serve\", \"{}\"]", role.name());
        assert!(
            compose.contains(&command),
            "docker-compose.yml runs {}",
            role.name()
        );
    }
}
