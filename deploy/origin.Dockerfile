# swarmcast-origin with ffmpeg (its test source) and the web player's page
# (served under /player/). Context: the repository root.
FROM node:20-bookworm AS player
WORKDIR /src/player-demo
COPY player-demo/package.json player-demo/package-lock.json player-demo/.npmrc ./
RUN npm ci --no-audit --no-fund
COPY player-demo/ ./
RUN npm run build

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p swarmcast-origin \
    && cp target/release/swarmcast-origin /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl ffmpeg fontconfig fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home swarmcast
COPY --from=build /usr/local/bin/swarmcast-origin /usr/local/bin/
COPY --from=player /src/player-demo/dist/demo /usr/share/swarmcast/player
USER 10001
ENV SWARMCAST_LISTEN=0.0.0.0:8080 \
    SWARMCAST_WEB_ROOT=/usr/share/swarmcast/player
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["swarmcast-origin"]
