# syntax=docker/dockerfile:1
# tgrelay container image: the release binary on Debian bookworm-slim, run as uid 10001.
#
#   docker build -t tgrelay:0.1.0 .
#   docker run --rm -e TGRELAY_BOTS__MAIN__TOKEN=123456:ABC... tgrelay:0.1.0
#
# The root filesystem may be read-only: the relay writes only to /var/lib/tgrelay (the
# file sink, when used) and /tmp, which Kubernetes mounts as volumes.

FROM rust:1-bookworm AS build
# Build prerequisites of the bundled librdkafka (configure + make, OpenSSL, zlib).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cargo registry and target directory are BuildKit cache mounts: dependencies are
# compiled once and reused by later builds, whatever changed in the sources.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tgrelay \
    && install -m 0755 target/release/tgrelay /usr/local/bin/tgrelay

FROM debian:bookworm-slim
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
# A relative sink.file.path lands here.
WORKDIR /var/lib/tgrelay
USER 10001:10001
# 9090: /metrics, /healthz, /readyz (admin.listen). 8080: Telegram webhooks (webhook.listen).
EXPOSE 9090 8080
ENTRYPOINT ["/usr/local/bin/tgrelay"]
CMD ["run", "--config", "/etc/tgrelay/config.toml"]
