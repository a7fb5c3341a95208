# cloudcode-server. Build from the repository root:
#   docker build -f k8s/server.Dockerfile -t REGISTRY/cloudcode-server:TAG .
# The browser IDE is built with Node.js in a stage of its own and embedded
# by the Rust build (CLOUDCODE_WEB_DIST), so the Rust stage needs no npm.
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN node node_modules/vite/bin/vite.js build --outDir /web-dist

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
COPY --from=web /web-dist /web-dist
ENV CLOUDCODE_WEB_DIST=/web-dist
RUN cargo build --release --locked -p cloudcode-server

# Minimal: glibc, CA certificates for S3 and the API server, nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/cloudcode-server /usr/local/bin/cloudcode-server
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cloudcode-server"]
