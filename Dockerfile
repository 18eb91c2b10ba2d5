# syntax=docker/dockerfile:1
# Build: docker build -t chapar --build-arg VERSION=v0.2.0 .
# (no VERSION: the version Go records from the module and the git tree)
FROM golang:1.26 AS build
ARG VERSION=
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binaries: no libc needed at run time.
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags="-s -w -X github.com/chapar-dev/chapar/internal/buildinfo.version=${VERSION}" \
      -o /out/ ./cmd/dispatcher ./cmd/publisher

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION
LABEL org.opencontainers.image.title="chapar" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/chapar-dev/chapar"
COPY --from=build /out/dispatcher /out/publisher /usr/local/bin/
COPY configs/ /etc/chapar/
USER nonroot:nonroot
EXPOSE 4222 9090 8080
ENTRYPOINT ["/usr/local/bin/dispatcher"]
CMD ["run", "--config", "/etc/chapar/compose.yaml"]
