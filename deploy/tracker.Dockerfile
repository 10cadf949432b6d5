# swarmcast-tracker: build with cargo, run from a slim image as a non-root
# user. Context: the repository root (docker-compose.yml sets it).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p swarmcast-tracker \
    && cp target/release/swarmcast-tracker /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home swarmcast
COPY --from=build /usr/local/bin/swarmcast-tracker /usr/local/bin/
USER 10001
ENV SWARMCAST_LISTEN=0.0.0.0:7000
EXPOSE 7000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:7000/healthz"]
ENTRYPOINT ["swarmcast-tracker"]
