# syntax=docker/dockerfile:1
#
# One image for every guichet role: the role set is chosen at run time
# (`guichet up` for all roles, `guichet serve <role>...` for some of them).
# Build with BuildKit (the cache mounts below need it):
#   docker build -t guichet:dev .

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------- builder ---
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# Registry, git and target dirs are BuildKit cache mounts so that rebuilds only
# recompile what changed. The target dir is not part of the layer, hence the
# copy of the binary to /out inside the same RUN.
# No protoc (protox is pure Rust) and no OpenSSL (rustls) are needed.
RUN --mount=type=cache,id=guichet-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=guichet-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=guichet-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p guichet \
 && install -D -m 0755 target/release/guichet /out/guichet

# ---------------------------------------------------------------- runtime ---
FROM debian:bookworm-slim AS runtime

LABEL org.opencontainers.image.title="guichet" \
      org.opencontainers.image.description="Unified citizen front desk (all roles, one binary)" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later"

# ca-certificates: TLS to PostgreSQL, NATS and OTLP endpoints (rustls uses the
# system roots). tesseract-ocr (+ its osd data) with tesseract-ocr-fra, and
# poppler-utils (pdftotext, pdftoppm, pdfinfo): the scanned-mail role's OCR
# and PDF tools, run as bounded child processes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
        tesseract-ocr tesseract-ocr-fra poppler-utils \
 && rm -rf /var/lib/apt/lists/*

# Fixed uid/gid 10001 so Kubernetes can assert runAsUser/runAsNonRoot.
# /var/lib/guichet is the only writable place (a volume in Compose and
# Kubernetes, where the root filesystem is read-only). /app/data points at it
# so that any default relative to the working directory (./data) also lands
# on the writable volume.
RUN groupadd --system --gid 10001 guichet \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin guichet \
 && mkdir -p /app /var/lib/guichet /var/lib/guichet-objects /var/lib/guichet-scan \
 && chown 10001:10001 /var/lib/guichet /var/lib/guichet-objects /var/lib/guichet-scan \
 && ln -s /var/lib/guichet /app/data

COPY --from=builder /out/guichet /usr/local/bin/guichet
# Process definitions read by the dossier role and the town's model (sites,
# desks, appointment types, counter services) read at start-up; both are
# also embedded in the binary, the copies let a volume or ConfigMap replace
# them (read-only, owned by root).
COPY processes/ /app/processes/
COPY town/ /app/town/

WORKDIR /app

# Container defaults: listen on all interfaces, JSON logs, state under the
# writable volume. Everything else comes from GUICHET__* env or --config.
ENV GUICHET__SERVER__GRPC_ADDR=0.0.0.0:50051 \
    GUICHET__SERVER__ADMIN_ADDR=0.0.0.0:9090 \
    GUICHET__TELEMETRY__LOG_FORMAT=json \
    GUICHET__DATA_DIR=/var/lib/guichet \
    GUICHET__DOSSIER__PROCESSES_DIR=/app/processes \
    GUICHET__TOWN_DIR=/app/town

USER 10001:10001

# 50051: every gRPC service of the process (+ grpc.health.v1.Health)
# 9090:  admin HTTP (/healthz, /readyz, /metrics)
EXPOSE 50051 9090

# No HEALTHCHECK: the image has no HTTP client; orchestrators probe the ports
# directly (Kubernetes: native gRPC probe on 50051, httpGet on 9090).
ENTRYPOINT ["guichet"]
# Production by default: every role, no development keys or tokens, the
# development sinks refused (`docker run … guichet up` for a laptop trial).
CMD ["serve", "--all"]
