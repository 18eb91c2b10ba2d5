//go:build chapar_interest

package topology

import "github.com/nats-io/nats.go/jetstream"

// eventsRetention, built with -tags chapar_interest, is the retention
// before v3: cmd/bench builds a dispatcher this way to measure limits
// retention against it in the same run. Never for production: an event
// leaves on the last ack, so a wrong skip loses it for good.
const eventsRetention = jetstream.InterestPolicy
