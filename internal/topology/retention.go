//go:build !chapar_interest

package topology

import "github.com/nats-io/nats.go/jetstream"

// eventsRetention is the events streams' retention: limits. An event
// stays for streams.max_age (or until streams.max_bytes is reached), acked
// or not, so no ack of any consumer can remove it: a wrong skip, a consumer
// deleted or recreated, a sink added or removed leave it in the stream,
// redeliverable, for audit and re-routing. Interest retention (before v3)
// deleted an event on the last ack, which turned every wrong skip into a
// silent, permanent loss, and cost nats-server more CPU per event
// (docs/design.md, "Retention").
const eventsRetention = jetstream.LimitsPolicy
