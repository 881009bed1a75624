# The hdfs-ingest binary in a small image; docker-compose.yml runs its roles against a real HDFS.
#
#   docker build -t hdfs-ingest .                      # the default: build from source, then the runtime
#   docker build --target prebuilt --build-arg BASE=hdfs-ingest/base:bookworm \
#     --build-arg BINARY=target/release/hdfs-ingest -t hdfs-ingest .   # a binary built already (CI)
#
# The Rust version is the highest `rust-version` of any package in Cargo.lock (it/tests/rust_version.rs
# fails when it falls below). The stages are ordered so that `--target prebuilt` never needs the Rust
# image: the legacy builder runs every stage before the target.

# Any Debian bookworm: the runtime installs ca-certificates (TLS) and libgssapi-krb5-2 (hdfs-native's
# Kerberos) unless the base has them already (a base imported from a debootstrap'd root has no network).
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS runtime
RUN if ! dpkg -s ca-certificates libgssapi-krb5-2 >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends ca-certificates libgssapi-krb5-2 \
      && rm -rf /var/lib/apt/lists/*; \
    fi
COPY config /etc/hdfs-ingest
WORKDIR /data
ENTRYPOINT ["hdfs-ingest"]
CMD ["run", "--config", "/etc/hdfs-ingest/docker-none.toml"]

# A binary built outside docker, on the same Debian (glibc) as the base.
FROM runtime AS prebuilt
ARG BINARY=target/release/hdfs-ingest
COPY ${BINARY} /usr/local/bin/hdfs-ingest

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin hdfs-ingest

# The default (last) stage: built from source.
FROM runtime AS default
COPY --from=build /src/target/release/hdfs-ingest /usr/local/bin/hdfs-ingest
