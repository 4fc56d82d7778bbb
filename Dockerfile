# The image the Helm chart (helm/routero) runs: the `routero` binary and Cerbos (which
# `routero up` starts itself; split services talk to a Cerbos sidecar) on a minimal runtime,
# as a non-root user. Build: `docker build -t routero/routero:0.1.0 .`
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY scripts/install-build-deps.sh scripts/
RUN ./scripts/install-build-deps.sh
COPY . .
RUN cargo build --locked --release --bin routero

FROM ghcr.io/cerbos/cerbos:0.55.0 AS cerbos

FROM debian:bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ca-certificates libxmlsec1 libxmlsec1-openssl libxml2 libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/routero /usr/local/bin/routero
COPY --from=cerbos /cerbos /usr/local/bin/cerbos
COPY policies /etc/routero/policies
USER 65532:65532
WORKDIR /var/lib/routero
ENTRYPOINT ["/usr/local/bin/routero"]
