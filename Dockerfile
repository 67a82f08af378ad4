# syntax=docker/dockerfile:1
# Portcullis in a container: `docker build -t portcullis .` then
#   docker run -p 8080:8080 -v "$PWD/conf:/etc/portcullis:ro" portcullis
# (docs/operations.md, "Packaging"). Two stages: the build, with the Rust toolchain of
# rust-toolchain.toml and its wasm32-wasip1 target (the standard filters are built for
# it and embedded in the binary); and a small runtime with the binary, the standard
# filters compiled ahead of time, and a user without privileges. The binary is the `dist`
# profile's (fat LTO, one codegen unit, no symbols: ~27 MB against ~40 MB for `release`).

# --- build ---
FROM rust:1.95-slim-bookworm AS build
# The toolchain file names 1.95.0 and the wasm target; rustup adds the target to an
# installed toolchain only when asked.
RUN rustup target add wasm32-wasip1
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked -p portcullis \
 && install -D -m 0755 target/dist/portcullis /out/portcullis
# The standard filters compiled into a module cache the image ships: the first start
# loads them (about 0.1 s) instead of compiling them (seconds of CPU). An entry made
# for another CPU is not used, only compiled again (docs/operations.md).
RUN /out/portcullis compile --builtins --cache-dir /out/modules

# --- runtime ---
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 portcullis \
 && useradd --system --uid 10001 --gid portcullis --home-dir /nonexistent \
            --no-create-home --shell /usr/sbin/nologin portcullis \
 && install -d -o portcullis -g portcullis /run/portcullis
COPY --from=build /out/portcullis /usr/local/bin/portcullis
COPY --from=build /out/modules /var/cache/portcullis/modules
COPY deploy/docker/conf/ /etc/portcullis/
ENV PORTCULLIS_MODULE_CACHE=/var/cache/portcullis/modules
USER 10001:10001
# The configuration directory: mount yours over it (a ConfigMap in Kubernetes).
VOLUME ["/etc/portcullis"]
EXPOSE 8080 9901
# SIGTERM drains (docs/operations.md, "Signals"); give `docker stop` the time:
# `docker stop -t 35`, or `stop_grace_period` in compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["run", "--conf", "/etc/portcullis"]
