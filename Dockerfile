# One image for the whole stack: the gateway, the legacy catalog and the GTIN service.
#   docker build -t ficus .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ficus --bin legacy-catalog --bin gtin-service

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
CMD ["ficus", "serve", "--config", "/opt/ficus/config/ficus.toml"]
