# Build stage: compile the release binary.
FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY schema schema
COPY tests tests
COPY benches benches
# A member of the workspace: cargo reads its manifest, though only the server is built.
COPY loadgen loadgen
RUN cargo build --release --locked -p hexmarket --bin hexmarket

# Runtime stage: the binary alone, as an unprivileged user.
FROM debian:bookworm-slim
# media/ exists in the image so a volume mounted there (docker-compose.yml shares one between
# the nodes) starts owned by the app user.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/hexmarket --create-home hexmarket \
 && install -d -o hexmarket -g hexmarket /var/lib/hexmarket/media
COPY --from=build /src/target/release/hexmarket /usr/local/bin/hexmarket
USER hexmarket
ENV HEXMARKET_LISTEN=0.0.0.0:8080 \
    HEXMARKET_DATA_DIR=/var/lib/hexmarket
EXPOSE 8080
ENTRYPOINT ["hexmarket"]
CMD ["serve"]
