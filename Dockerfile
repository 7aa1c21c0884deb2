# smallwebrtc in a container: HTTP on 7860/tcp, every session's media on ONE UDP
# port, 7861/udp. Build and run (see docs/deploy.md):
#
#   docker build -t smallwebrtc .
#   docker run --rm -p 7860:7860/tcp -p 7861:7861/udp \
#       -e SMALLWEBRTC_PUBLIC_IP=203.0.113.7 smallwebrtc
#
# SMALLWEBRTC_PUBLIC_IP is the address clients reach the Docker host on (what
# --nat-1to1 / --public-ip would say): answers announce it on port 7861, so the
# host port must be the same number as the container's (`-p 7861:7861/udp`).

# ---- build -------------------------------------------------------------------
FROM rust:1-bookworm AS build
# The packages scripts/deps.sh installs: cmake and a C/C++ compiler for aws-lc and
# OpenH264, nasm for OpenH264's assembly, libvpx for VP8.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake gcc g++ pkg-config libvpx-dev nasm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and compiled dependencies between builds;
# the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin smallwebrtc \
 && cp target/release/smallwebrtc /usr/local/bin/smallwebrtc

# ---- run ---------------------------------------------------------------------
FROM debian:bookworm-slim
# libvpx7 is VP8 (linked dynamically); Opus, OpenH264 and the crypto are linked
# in. ca-certificates: TLS to turns: servers is checked against the system roots.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libvpx7 libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home smallwebrtc
COPY --from=build /usr/local/bin/smallwebrtc /usr/local/bin/smallwebrtc
USER smallwebrtc
EXPOSE 7860/tcp 7861/udp
# Empty: no public-IP candidate (set it, or use --network host).
ENV SMALLWEBRTC_PUBLIC_IP=""
# SIGTERM (docker stop, Kubernetes) shuts down gracefully: 503 for new offers,
# peerLeft to every client, bots get 3 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["smallwebrtc"]
CMD ["serve", "--host", "0.0.0.0", "--port", "7860", "--udp-port", "7861"]
