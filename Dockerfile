# flocker's container image: the Bun runtime and two bundled files (the server, and its front threads' module), non-root.
#
#   docker build -t flocker .                  # official images (oven/bun, distroless/cc)
#   npm run image                              # the same Dockerfile, base images made from local files
#
# Works with the classic builder (DOCKER_BUILDKIT=0) and with BuildKit. BUILDER must have `bun` at
# /usr/local/bin/bun and a /bin/sh; BASE must bring the glibc files bun links (ld-linux, libc,
# libm, libpthread, libdl) and CA certificates, as gcr.io/distroless/cc does.
ARG BUILDER=oven/bun:1
ARG BASE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER} AS build
LABEL flocker.stage=build
WORKDIR /src
COPY . .
# The context's node_modules when `npm ci` already ran there (see .dockerignore), else the locked
# runtime dependencies from the registry. Then one file: main.ts and everything it imports (and,
# beside it, the front threads' module: a Worker loads it by name).
RUN if [ ! -d node_modules/hono ]; then bun install --production --frozen-lockfile; fi \
 && bun build main.ts lib/adapter/front-worker.ts --target=bun --minify-syntax --minify-whitespace --outdir=/out

FROM ${BASE}
# The port a container started with `--network host -e FLOCKER_LISTEN=...` or `-p` serves on
# (FLOCKER_LISTEN defaults to 127.0.0.1:2375: see README, "Container image").
EXPOSE 2375
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bun", "--smol", "/app/flocker.js"]
COPY --from=build /usr/local/bin/bun /usr/local/bin/bun
COPY --from=build /out/main.js /app/flocker.js
COPY --from=build /out/lib/adapter/front-worker.js /app/front-worker.js
