# Container image for apiproxy. No container engine runs on this project's
# machines: this file is kept small and checked by tests/config_logs_deploy.rs (the
# compose file, the config and the ports it names), not built by CI.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The same bootstrap as `make run` (system packages; cargo is already here).
RUN scripts/bootstrap.sh && cargo build --release --locked -p apiproxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin apiproxy \
 && install -d -o apiproxy -g apiproxy -m 0700 /run/apiproxy
COPY --from=build /src/target/release/apiproxy /usr/local/bin/apiproxy
# The container's own config: all interfaces, client key required, pid file,
# upgrade socket and metrics listener set for a container.
COPY deploy/apiproxy.yaml /etc/apiproxy/apiproxy.yaml
COPY filters/ /etc/apiproxy/filters/
USER apiproxy
EXPOSE 8080 9100
ENTRYPOINT ["/usr/local/bin/apiproxy"]
CMD ["-c", "/etc/apiproxy/apiproxy.yaml"]
