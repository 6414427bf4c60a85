# The slotgate lab image: slotgate (the proxy and the lab tools), slotgate-node and Prometheus
# (Debian's), used by every service of docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p slotgate -p slotgate-node

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/slotgate /src/target/release/slotgate-node /usr/local/bin/
WORKDIR /data
EXPOSE 6379 9121 9090
CMD ["slotgate", "--help"]
