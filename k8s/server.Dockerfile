# cloudcode-server. Build from the repository root:
#   docker build -f k8s/server.Dockerfile -t REGISTRY/cloudcode-server:TAG .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cloudcode-server

# Minimal: glibc, CA certificates for S3 and the API server, nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/cloudcode-server /usr/local/bin/cloudcode-server
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cloudcode-server"]
