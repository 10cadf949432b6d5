# swarmcast-edge (a viewer or, with --relay, a relay node). Context: the
# repository root. WebRTC: its UDP host candidates are the address given by
# SWARMCAST_UDP_BIND (docs/operator-guide.md, "Relays in containers").
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p swarmcast-edge \
    && cp target/release/swarmcast-edge /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home swarmcast
COPY --from=build /usr/local/bin/swarmcast-edge /usr/local/bin/
USER 10001
ENV SWARMCAST_LISTEN=0.0.0.0:9000
EXPOSE 9000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:9000/healthz"]
ENTRYPOINT ["swarmcast-edge"]
