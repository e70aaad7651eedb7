# syntax=docker/dockerfile:1.19@sha256:b6afd42430b15f2d2a4c5a02b919e98a525b785b1aaff16747d2f623364e39b6
# tgrelay container image: the stripped release binary on Debian bookworm-slim, run as uid 10001.
#
#   docker build -t tgrelay:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" --build-arg SOURCE=https://... .
#   docker run --rm -e TGRELAY_BOTS__MAIN__TOKEN=123456:ABC... tgrelay:0.1.0
#
# The root filesystem may be read-only: the relay writes only to /var/lib/tgrelay (the
# file sink, when used) and /tmp, which Kubernetes mounts as volumes.
#
# The frontend and both base images are pinned by digest, so a rebuild starts from the same
# bytes. To move one: `docker buildx imagetools inspect rust:1.95.0-bookworm` (likewise
# debian:bookworm-slim, docker/dockerfile:1.19) prints the "Digest:" of the multi-platform
# index; put it after the "@", and Debian's also in the base.digest label below. Renovate's
# and Dependabot's Docker managers propose these updates by themselves.

FROM rust:1.95.0-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
# Build prerequisites of the bundled librdkafka (configure + make, OpenSSL, zlib).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore lets in only what the build reads: Cargo.toml, Cargo.lock, src/, the bench
# files Cargo.toml names, and config.toml.
COPY . .
# The cargo registry and target directory are BuildKit cache mounts: dependencies are
# compiled once and reused by later builds, whatever changed in the sources.
# Cargo.toml keeps line tables in release builds for local profiling (99 MiB); the image
# needs neither them nor the symbol table: no debug info, and the linker strips the rest
# (about 16 MiB). Panic messages keep their file and line.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin tgrelay \
    && install -m 0755 target/release/tgrelay /usr/local/bin/tgrelay

FROM debian:bookworm-slim@sha256:88200866dfff7ea7f5cbcb6ec7c8a701889efe6fe859fe64d6990e4b07ea4171
# libssl3 and zlib1g for librdkafka; ca-certificates for https://api.telegram.org and TLS brokers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tgrelay \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tgrelay --no-create-home \
        --shell /usr/sbin/nologin tgrelay \
    && mkdir -p /etc/tgrelay/secrets /var/lib/tgrelay \
    && chown 10001:10001 /var/lib/tgrelay
COPY --from=build /usr/local/bin/tgrelay /usr/local/bin/tgrelay
# The defaults (one polling bot "main", file sink); Kubernetes mounts its own config over it.
COPY config.toml /etc/tgrelay/config.toml
# OCI labels. The ARGs are set at build time (see the top; VERSION follows Cargo.toml), and
# stay last: a RUN after an ARG would be rebuilt whenever its value changes.
ARG VERSION=0.1.0
ARG REVISION=""
ARG CREATED=""
ARG SOURCE=""
LABEL org.opencontainers.image.title="tgrelay" \
      org.opencontainers.image.description="Relays Telegram Bot API updates into NATS JetStream, Kafka or a JSON-lines file, at least once." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim" \
      org.opencontainers.image.base.digest="sha256:88200866dfff7ea7f5cbcb6ec7c8a701889efe6fe859fe64d6990e4b07ea4171"
# A relative sink.file.path lands here.
WORKDIR /var/lib/tgrelay
USER 10001:10001
# 9090: /metrics, /healthz, /readyz (admin.listen). 8080: Telegram webhooks (webhook.listen).
EXPOSE 9090 8080
ENTRYPOINT ["/usr/local/bin/tgrelay"]
CMD ["run", "--config", "/etc/tgrelay/config.toml"]
