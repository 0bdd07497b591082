# Container image for apiproxy. (No Docker engine runs on the development
# machines of this project, so this file is checked by review, not by CI.)
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p apiproxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home apiproxy
COPY --from=build /src/target/release/apiproxy /usr/local/bin/apiproxy
COPY conf/apiproxy.yaml /etc/apiproxy/apiproxy.yaml
USER apiproxy
EXPOSE 8080 9100
# metrics_listen in the default config is 127.0.0.1:9100: override it (and
# the pid/upgrade paths) in your own config to scrape from outside.
ENTRYPOINT ["/usr/local/bin/apiproxy"]
CMD ["-c", "/etc/apiproxy/apiproxy.yaml"]
