# syntax=docker/dockerfile:1
# Build: docker build -t chapar .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binaries: no libc needed at run time.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/dispatcher ./cmd/publisher

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/dispatcher /out/publisher /usr/local/bin/
COPY configs/ /etc/chapar/
USER nonroot:nonroot
EXPOSE 4222 9090 8080
ENTRYPOINT ["/usr/local/bin/dispatcher"]
CMD ["run", "--config", "/etc/chapar/compose.yaml"]
