# The hdfs-ingest binary in a small image; docker-compose.yml runs its roles against a real HDFS.
FROM rust:1.87-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin hdfs-ingest

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/hdfs-ingest /usr/local/bin/hdfs-ingest
COPY config /etc/hdfs-ingest
WORKDIR /data
ENTRYPOINT ["hdfs-ingest"]
CMD ["run", "--config", "/etc/hdfs-ingest/docker-none.toml"]
