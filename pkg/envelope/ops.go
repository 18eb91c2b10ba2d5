package envelope

import "strings"

// Chapar's operational event types: what a dispatcher publishes about
// itself (a dead letter, a breaker, a pause, a consumer recreated, a
// replay done), documented in docs/envelope.md#operational-events. They
// share the reserved prefix with Chapar's four types, so no producer's
// type can be mistaken for one, but their data is Chapar's own JSON,
// carried as written (like a producer's type), not one of the four
// checked shapes.
const (
	OpsTypePrefix         = "chapar.ops."
	TypeOpsDeadLettered   = OpsTypePrefix + "dead_lettered"
	TypeOpsBreakerOpened  = OpsTypePrefix + "breaker_opened"
	TypeOpsBreakerClosed  = OpsTypePrefix + "breaker_closed"
	TypeOpsSinkRecovered  = OpsTypePrefix + "sink_recovered"
	TypeOpsSinkPaused     = OpsTypePrefix + "sink_paused"
	TypeOpsSinkResumed    = OpsTypePrefix + "sink_resumed"
	TypeOpsConsumerHealed = OpsTypePrefix + "consumer_recreated"
	TypeOpsReplayDone     = OpsTypePrefix + "replay_done"
	TypeOpsRedeliveryDone = OpsTypePrefix + "redelivery_done"
	TypeOpsSuppressed     = OpsTypePrefix + "suppressed"
)

// OpsTypes lists every operational event type, in the order
// docs/envelope.md gives them.
func OpsTypes() []string {
	return []string{TypeOpsDeadLettered, TypeOpsBreakerOpened, TypeOpsBreakerClosed, TypeOpsSinkRecovered,
		TypeOpsSinkPaused, TypeOpsSinkResumed, TypeOpsConsumerHealed, TypeOpsReplayDone, TypeOpsRedeliveryDone, TypeOpsSuppressed}
}

// IsOpsType reports whether t is one of Chapar's operational event types.
// The set is closed: chapar.ops.anything_else is refused like any other
// type under the reserved prefix, so a typo in a route is caught by
// config check.
func IsOpsType(t string) bool {
	if !strings.HasPrefix(t, OpsTypePrefix) {
		return false
	}
	for _, o := range OpsTypes() {
		if t == o {
			return true
		}
	}
	return false
}
