#!/usr/bin/env bash
# Validate guichet's deployment files offline (no cluster, no Docker engine):
#   - Dockerfile: present, runtime stage runs as a non-root USER;
#   - k8s: every overlay under k8s/overlays renders with `kubectl kustomize`,
#     each rendered document validates against the Kubernetes schemas
#     (kubernetes-validate --strict), and the workloads keep the guichet
#     invariants (resolved image, hardening, probes, Service selectors);
#   - docker-compose.yml: `docker-compose config -q`.
# Installs kubernetes-validate (pip) and docker-compose (apt) when missing.
# Prints one "ok: ..." line per check; exits non-zero on the first failure.
#
# Environment: K8S_VERSION (default 1.30.0), the Kubernetes version whose
# bundled schemas kubernetes-validate uses.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.30.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

ok() { printf 'ok: %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$1" >&2
    # Optional file with the tool's own output.
    if [[ -n "${2:-}" && -s "$2" ]]; then sed 's/^/  | /' "$2" >&2; fi
    exit 1
}

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1
    fi
}

# ------------------------------------------------------------------ tools ---

command -v kubectl >/dev/null 2>&1 \
    || fail "kubectl not found on PATH (needed for 'kubectl kustomize')"
command -v python3 >/dev/null 2>&1 || fail "python3 not found on PATH"

# kubernetes-validate: the CLI if on PATH, else the module (same package).
if command -v kubernetes-validate >/dev/null 2>&1; then
    KV=(kubernetes-validate)
else
    if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet \
            --disable-pip-version-check kubernetes-validate >"$WORK/pip.log" 2>&1 \
            || fail "could not install kubernetes-validate with pip" "$WORK/pip.log"
    fi
    if command -v kubernetes-validate >/dev/null 2>&1; then
        KV=(kubernetes-validate)
    else
        KV=(python3 -m kubernetes_validate)
    fi
fi
# The policy checks below parse YAML with PyYAML (a kubernetes-validate
# dependency, so present once it is installed for this python3).
python3 -c 'import yaml' >/dev/null 2>&1 \
    || fail "python3 cannot import yaml (PyYAML); install kubernetes-validate for this python3"

# docker-compose v1 (Debian package); `docker compose` v2 if it exists instead.
if command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v apt-get >/dev/null 2>&1; then
    { as_root apt-get update -qq \
        && as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends docker-compose; } \
        >"$WORK/apt.log" 2>&1 \
        || fail "could not install docker-compose with apt-get (need root or sudo)" "$WORK/apt.log"
    command -v docker-compose >/dev/null 2>&1 \
        || fail "docker-compose still not on PATH after apt-get install" "$WORK/apt.log"
    COMPOSE=(docker-compose)
else
    fail "docker-compose not found and apt-get unavailable: install docker-compose (>= 1.29) or the docker compose plugin"
fi

# ------------------------------------------------------------- Dockerfile ---

[[ -f Dockerfile ]] || fail "Dockerfile not found at repository root"
# Runtime stage = everything after the last FROM; its last USER must be
# neither root nor uid 0.
runtime_user="$(awk '
    toupper($1) == "FROM" { user = ""; next }
    toupper($1) == "USER" { user = $2 }
    END { print user }' Dockerfile)"
[[ -n "$runtime_user" ]] || fail "Dockerfile runtime stage (after the last FROM) sets no USER"
case "${runtime_user%%:*}" in
    root | 0) fail "Dockerfile runtime stage runs as root (USER $runtime_user)" ;;
esac
[[ -d processes ]] || fail "processes/ is missing but the Dockerfile copies it into /app/processes"
ok "Dockerfile runtime stage runs as non-root USER $runtime_user"

# -------------------------------------------------------------- k8s ---------

# Invariants of guichet workloads that schemas cannot see. Reads one rendered
# overlay, prints one problem per line.
cat >"$WORK/policy.py" <<'PY'
import sys
import yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
problems = []
pod_labels = []

def need(cond, where, what):
    if not cond:
        problems.append(f"{where}: {what}")

for d in docs:
    kind, name = d.get("kind"), d.get("metadata", {}).get("name")
    where = f"{kind}/{name}"
    if kind not in ("Deployment", "Job"):
        continue
    tmpl = d["spec"]["template"]
    pod = tmpl["spec"]
    psc = pod.get("securityContext", {})
    pod_labels.append(tmpl.get("metadata", {}).get("labels", {}))
    need(psc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot must be true")
    need(psc.get("runAsUser") == 10001, where, "pod securityContext.runAsUser must be 10001")
    for c in pod.get("containers", []):
        cw = f"{where} container {c.get('name')}"
        image = c.get("image", "")
        need("/" in image and (":" in image.rsplit("/", 1)[-1] or "@" in image), cw,
             f"image {image!r} not resolved by kustomize images: (expected registry/name:tag)")
        sc = c.get("securityContext", {})
        need(sc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem must be true")
        need(sc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation must be false")
        need("ALL" in sc.get("capabilities", {}).get("drop", []), cw, "capabilities must drop ALL")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        need(seccomp == "RuntimeDefault", cw, "seccompProfile must be RuntimeDefault")
        mounts = {m.get("mountPath") for m in c.get("volumeMounts", [])}
        need({"/var/lib/guichet", "/tmp"} <= mounts, cw, "must mount /var/lib/guichet and /tmp")
        refs = {(k, v.get("name")) for e in c.get("envFrom", []) for k, v in e.items()}
        need(("configMapRef", "guichet-config") in refs and ("secretRef", "guichet-secrets") in refs,
             cw, "envFrom must include ConfigMap guichet-config and Secret guichet-secrets")
        need("resources" in c and "limits" in c["resources"] and "requests" in c["resources"],
             cw, "resources requests and limits required")
        if kind == "Deployment":
            need("readinessProbe" in c and "livenessProbe" in c, cw, "readiness and liveness probes required")
            env = {e.get("name"): e.get("value") for e in c.get("env", [])}
            need(env.get("GUICHET__DATABASE__MIGRATE_ON_START") == "false", cw,
                 "GUICHET__DATABASE__MIGRATE_ON_START must be \"false\" (the Job migrates)")
    if kind == "Deployment":
        labels = tmpl.get("metadata", {}).get("labels", {})
        need(labels.get("app.kubernetes.io/name") == "guichet" and labels.get("app.kubernetes.io/component"),
             where, "pod labels app.kubernetes.io/name=guichet and app.kubernetes.io/component required")
        need(pod.get("terminationGracePeriodSeconds") == 30, where, "terminationGracePeriodSeconds must be 30")
        ann = tmpl.get("metadata", {}).get("annotations", {})
        need(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "9090",
             where, "Prometheus scrape annotations for port 9090 required")

for d in docs:
    if d.get("kind") != "Service":
        continue
    sel = d.get("spec", {}).get("selector", {})
    need(any(sel and sel.items() <= l.items() for l in pod_labels),
         f"Service/{d['metadata']['name']}", f"selector {sel} matches no pod template")

if not any(d.get("kind") == "Deployment" for d in docs):
    problems.append("no Deployment rendered")
print("\n".join(problems))
sys.exit(1 if problems else 0)
PY

shopt -s nullglob
overlays=(k8s/overlays/*/)
((${#overlays[@]} > 0)) || fail "no overlay found under k8s/overlays"
for dir in "${overlays[@]}"; do
    overlay="${dir%/}"
    name="${overlay##*/}"
    out="$WORK/$name.yaml"

    kubectl kustomize "$overlay" >"$out" 2>"$WORK/$name.kustomize.log" \
        || fail "kubectl kustomize $overlay failed" "$WORK/$name.kustomize.log"
    ndocs="$(python3 -c 'import sys, yaml; print(sum(1 for d in yaml.safe_load_all(open(sys.argv[1])) if d))' "$out")"
    ((ndocs > 0)) || fail "kubectl kustomize $overlay rendered no document"

    # --quiet: only WARN/ERROR lines. kubernetes-validate reports the first
    # error of each resource; a WARN means a kind had no schema and was not
    # validated at all, which we treat as a failure too.
    if ! "${KV[@]}" --strict --quiet -k "$K8S_VERSION" "$out" >"$WORK/$name.kv.log" 2>&1 \
        || grep -qE '^(WARN|ERROR|FATAL)' "$WORK/$name.kv.log"; then
        fail "kubernetes-validate --strict -k $K8S_VERSION rejected overlay $name" "$WORK/$name.kv.log"
    fi

    python3 "$WORK/policy.py" "$out" >"$WORK/$name.policy.log" 2>&1 \
        || fail "overlay $name breaks guichet workload invariants" "$WORK/$name.policy.log"
    ok "k8s overlay $name: kustomize renders $ndocs documents, valid (strict, Kubernetes $K8S_VERSION), workload invariants hold"
done

# -------------------------------------------------------------- compose -----

for f in deploy/compose/postgres-init.sql deploy/compose/otel-collector.yaml; do
    [[ -s "$f" ]] || fail "$f (mounted by docker-compose.yml) is missing or empty"
done
python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' deploy/compose/otel-collector.yaml \
    >"$WORK/otel.log" 2>&1 || fail "deploy/compose/otel-collector.yaml is not valid YAML" "$WORK/otel.log"

"${COMPOSE[@]}" -f docker-compose.yml config -q >"$WORK/compose.log" 2>&1 \
    || fail "${COMPOSE[*]} -f docker-compose.yml config -q rejected the compose file" "$WORK/compose.log"
# `config -q` also silences interpolation warnings; render once more to catch
# them (an unset variable silently becomes "").
"${COMPOSE[@]}" -f docker-compose.yml config 2>"$WORK/compose.log" >/dev/null \
    || fail "${COMPOSE[*]} -f docker-compose.yml config failed" "$WORK/compose.log"
if grep -qiE 'warn|not set' "$WORK/compose.log"; then
    fail "docker-compose.yml renders with warnings" "$WORK/compose.log"
fi
ok "docker-compose.yml valid (${COMPOSE[*]} config -q), support files present"
