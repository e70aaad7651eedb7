# syntax=docker/dockerfile:1.19@sha256:b6afd42430b15f2d2a4c5a02b919e98a525b785b1aaff16747d2f623364e39b6
# tgrelay container image: the stripped release binary on distroless (gcr.io/distroless/cc-debian12:
# glibc, libgcc, OpenSSL and the CA roots, no shell, no package manager), run as uid 10001.
#
#   docker build -t tgrelay:0.1.0 --build-arg SOURCE=https://<the repository> \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#   docker run --rm -e TGRELAY_BOTS__MAIN__TOKEN=123456:ABC... tgrelay:0.1.0
#
# SOURCE (the repository the image is built from, the org.opencontainers.image.source label)
# is required: the build stops without it.
#
# The root filesystem may be read-only: the relay writes only to /var/lib/tgrelay (the
# file sink, when used) and /tmp, which Kubernetes mounts as volumes. With no shell in the
# image, Kubernetes' preStop pause is a sleep action, and `kubectl exec` runs the binary
# itself (`tgrelay check-config`).
#
# The frontend and both base images are pinned by digest, so a rebuild starts from the same
# bytes. To move one: `docker buildx imagetools inspect rust:1.95.0-bookworm` (likewise
# gcr.io/distroless/cc-debian12, docker/dockerfile:1.19) prints the "Digest:" of the
# multi-platform index; put it after the "@", and distroless's also in the base.digest label
# below. Keep the two stages on one Debian release (bookworm, debian12): the binary links the
# build stage's glibc and OpenSSL 3. Renovate's and Dependabot's Docker managers propose
# these updates by themselves.

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

# What the runtime image needs besides the distroless base, laid out as a tree to copy over
# it: zlib, which the bundled librdkafka links (`ldd tgrelay`: libz, libssl, libcrypto,
# libgcc_s, libm, libc; the base has all but zlib), in this platform's library directory, and
# the relay's data directory.
RUN lib="/runtime/usr/lib/$(gcc -dumpmachine)" \
    && mkdir -p "$lib" /runtime/data \
    && cp -L "/usr/lib/$(gcc -dumpmachine)/libz.so.1" "$lib/"
# The repository URL, for the source label: required, so no image goes out without it.
ARG SOURCE
RUN test -n "${SOURCE}" \
    || { echo "--build-arg SOURCE=<repository URL> is required (org.opencontainers.image.source)" >&2; exit 1; }

FROM gcr.io/distroless/cc-debian12:latest@sha256:e5d81ddde149641e2a9ba55be4545bc125c67de07508b03ba4c22e6eb0ded5aa
COPY --from=build /runtime/usr/ /usr/
# Owned by the relay's user: a relative sink.file.path lands here when no volume is mounted.
COPY --from=build --chown=10001:10001 /runtime/data/ /var/lib/tgrelay/
COPY --from=build /usr/local/bin/tgrelay /usr/local/bin/tgrelay
# The defaults (one polling bot "main", file sink); Kubernetes mounts its own config over it.
COPY config.toml /etc/tgrelay/config.toml
# OCI labels. The ARGs are set at build time (see the top; VERSION follows Cargo.toml), and
# stay last: an instruction after an ARG would be rebuilt whenever its value changes.
ARG VERSION=0.1.0
ARG REVISION=""
ARG CREATED=""
ARG SOURCE
LABEL org.opencontainers.image.title="tgrelay" \
      org.opencontainers.image.description="Relays Telegram Bot API updates into NATS JetStream, Kafka or a JSON-lines file, at least once." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:latest" \
      org.opencontainers.image.base.digest="sha256:e5d81ddde149641e2a9ba55be4545bc125c67de07508b03ba4c22e6eb0ded5aa"
# A relative sink.file.path lands here.
WORKDIR /var/lib/tgrelay
# Not distroless's nonroot (65532): the chart and the manifests run the pods as 10001.
USER 10001:10001
# 9090: /metrics, /healthz, /readyz (admin.listen). 8080: Telegram webhooks (webhook.listen).
EXPOSE 9090 8080
ENTRYPOINT ["/usr/local/bin/tgrelay"]
CMD ["run", "--config", "/etc/tgrelay/config.toml"]
