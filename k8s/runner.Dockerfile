# cloudcode-runner and the tools users expect in their sandbox. Build from
# the repository root:
#   docker build -f k8s/runner.Dockerfile -t REGISTRY/cloudcode-runner:TAG .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cloudcode-runner --features s3,gateway

# The sandbox's system: what the Node.js and Python templates run with and
# what a terminal user reaches for. Read-only at run time; the workspace,
# /tmp and the home directory are volumes.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      bash ca-certificates coreutils curl git less nodejs npm procps python3 python3-pip python3-venv vim-tiny \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 user \
 && useradd --uid 1000 --gid 1000 --home-dir /home/user --shell /bin/bash user \
 && mkdir -p /workspace /home/user && chown user:user /workspace /home/user
COPY --from=build /src/target/release/cloudcode-runner /usr/local/bin/cloudcode-runner
USER 1000:1000
WORKDIR /workspace
EXPOSE 3001 3000
ENTRYPOINT ["/usr/local/bin/cloudcode-runner"]
