# vipgate as a container sidecar: build with cargo, run from a distroless base (glibc and
# CA certificates, no shell, no package manager) as an unprivileged user.
#
#   docker build -t vipgate .
#   docker run -v /etc/vipgate:/etc/vipgate:ro -p 5000:5000 vipgate
#
# The base images are arguments so an offline or mirrored build can name its own.
ARG RUST_IMAGE=docker.io/library/rust:1-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin vipgate \
 && strip target/release/vipgate

FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/vipgate /usr/local/bin/vipgate
COPY config/openstack.toml /usr/share/vipgate/openstack.toml
# 65532 is distroless's "nonroot". Ports below 1024 need no capability in a container
# (Docker and containerd set net.ipv4.ip_unprivileged_port_start=0).
USER 65532:65532
ENV VIPGATE_CONFIG=/etc/vipgate/vipgate.toml \
    VIPGATE_LOG_FORMAT=json
# SIGTERM drains: listeners close, open connections get `grace` to finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/vipgate"]
CMD ["run"]
