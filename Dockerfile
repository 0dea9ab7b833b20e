# rustunnel-server and rustunnel in one small image.
#   docker build -t rustunnel .
#   docker run --rm rustunnel rustunnel demo
#   docker run -d --name rustunnel -p 80:8080 -p 443:8443 -p 4040:4040 -p 4041:4041 \
#     -v rustunnel-data:/var/lib/rustunnel -e RUSTUNNEL_DOMAIN=tunnel.example.com \
#     -e RUSTUNNEL_ADMIN_TOKEN="$(openssl rand -hex 24)" rustunnel
# With PostgreSQL: deploy/container/compose.yaml. See docs/self-hosting.md.
ARG RUST_IMAGE=rust:1.89-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# PROFILE=dev gives a quick unoptimised build for trying the image out.
ARG PROFILE=release
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile "$PROFILE" --bin rustunnel-server --bin rustunnel \
 && dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE") \
 && install -m 0755 "target/$dir/rustunnel-server" "target/$dir/rustunnel" /usr/local/bin/

FROM ${RUNTIME_IMAGE}
# ca-certificates: clients verifying public certificates (webhooks, other regions).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/rustunnel --create-home --shell /usr/sbin/nologin rustunnel
COPY --from=build /usr/local/bin/rustunnel-server /usr/local/bin/rustunnel /usr/local/bin/
USER rustunnel
WORKDIR /var/lib/rustunnel
VOLUME /var/lib/rustunnel
# Unprivileged ports inside the container; publish them as 80 and 443 on the host.
ENV RUSTUNNEL_DATA_DIR=/var/lib/rustunnel \
    RUSTUNNEL_CONTROL_ADDR=0.0.0.0:4040 \
    RUSTUNNEL_API_ADDR=0.0.0.0:4041 \
    RUSTUNNEL_HTTP_ADDR=0.0.0.0:8080 \
    RUSTUNNEL_HTTPS_ADDR=0.0.0.0:8443
EXPOSE 4040 4041 8080 8443
STOPSIGNAL SIGTERM
CMD ["rustunnel-server"]
