# One image for the whole stack: the gateway, the legacy catalog and the GTIN service.
#   docker build -t ficus .
#   docker run -p 8080:8080 -p 8182:8182 ficus     # the gateway alone; docker compose up runs the stack
FROM rust:1-bookworm AS build
WORKDIR /src
# The build's system packages (protoc and its .proto files), from the script every other build uses too.
COPY scripts/install-deps scripts/install-deps
RUN scripts/install-deps --build && rm -rf /var/lib/apt/lists/*
COPY . .
# The release build shared with scripts/demo and checked by tests/e2e/compose.rs: all three binaries.
RUN scripts/build-release

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ficus /src/target/release/legacy-catalog /src/target/release/gtin-service /usr/local/bin/
COPY routes /opt/ficus/routes
COPY config /opt/ficus/config
# Volumes start from the image's content, so the data dirs must exist and belong to the runtime user.
RUN mkdir -p /data/blue /data/green && chown -R nobody:nogroup /data
WORKDIR /opt/ficus
USER nobody
EXPOSE 8080 8182
# The container config listens on 0.0.0.0 (config/ficus.toml keeps the host default, loopback).
CMD ["ficus", "serve", "--config", "/opt/ficus/config/container.toml"]
