# coditect-issuer, the license issuer's HTTP service, as a container image.
# Deploying it to Cloud Run: docs/deploy-cloud-run.md.
#
#   docker build -t coditect-issuer .
#
# The command line and environment Cloud Run gives it are in
# deploy/cloud-run/container.json; `deploy/cloud-run/render.py --check`
# checks that ENTRYPOINT, CMD, EXPOSE and ENV PORT below agree with it.

# The toolchain. Cargo.toml declares rust-version 1.88, but the committed
# Cargo.lock needs 1.95 (parking_lot 0.13, through r2d2's
# scheduled-thread-pool: `cargo +1.88 build --locked` refuses it), and the
# development machines build with 1.95.0. Builder and runtime share one Debian release, so the binary finds
# the glibc and OpenSSL it was linked against.
ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------- builder
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder

# native-tls (PostgreSQL TLS, SMTP STARTTLS, the Stripe client) links the
# system OpenSSL; rusqlite bundles SQLite and builds it with the C compiler
# the image has.
# Debian versions are not pinned (DL3008): the archive drops superseded
# versions, so pins break builds; the Debian release is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The whole workspace: Cargo reads every member's manifest and targets even
# when it builds one package (.dockerignore leaves out target/, .git and the
# tests' data).
COPY . .
RUN cargo build --release --locked -p coditect-issuer \
 && install -D -m 0755 target/release/coditect-issuer /out/coditect-issuer

# ---------------------------------------------------------------- runtime
FROM debian:${DEBIAN_RELEASE}-slim

# libssl3: the binary's only library beyond glibc and libgcc (ldd of a
# release build: libssl.so.3, libcrypto.so.3, libgcc_s, libm, libc).
# ca-certificates: TLS to api.stripe.com, the SMTP relay and PostgreSQL.
# curl: for HEALTHCHECK only; the issuer has no HTTP client command of its
# own, and debian-slim has no wget or busybox.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/*

# A fixed non-root uid/gid (10001), so volume permissions and
# runAsNonRoot-style policies can name it. Its home is the data directory
# (`keys list`, `keys generate`); production keeps its state in PostgreSQL.
RUN groupadd --system --gid 10001 coditect \
 && useradd --system --uid 10001 --gid 10001 --no-log-init \
      --home-dir /var/lib/coditect-issuer --create-home --shell /usr/sbin/nologin coditect

COPY --from=builder /out/coditect-issuer /usr/local/bin/coditect-issuer

# Production by default: the issuer then refuses to start without a real
# signing key, a JWT secret of 32 bytes or more, Stripe and SMTP, and on
# PostgreSQL it never migrates by itself (run `migrate` first). PORT: the
# issuer listens on 0.0.0.0:$PORT; Cloud Run sets PORT itself (to 8080,
# the container port of deploy/cloud-run/service.yaml).
ENV CODITECT_ENV=production \
    CODITECT_DATA_DIR=/var/lib/coditect-issuer \
    PORT=8080

USER 10001:10001
WORKDIR /var/lib/coditect-issuer
EXPOSE 8080

# Ready = the database answers. Docker, Compose and Kubernetes-style runners
# use this; Cloud Run ignores HEALTHCHECK and uses the service's startup
# (/readyz) and liveness (/healthz) probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["sh", "-c", "curl --fail --silent --show-error --max-time 3 --output /dev/null http://127.0.0.1:${PORT}/readyz || exit 1"]

# SIGTERM (docker stop, Cloud Run scale-in): /readyz turns 503, the listener
# closes, requests in flight get up to 7 s, then claimed mail goes back to
# the outbox and the audit queue is written; exit 0 within 10 s. The binary
# is PID 1 and handles the signal itself (it starts no child processes).
ENTRYPOINT ["coditect-issuer"]
CMD ["serve"]
