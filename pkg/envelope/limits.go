package envelope

// Limits on what a producer may put in an envelope's attributes. They bound
// what a hostile or broken producer can make Chapar store, log and forward;
// docs/envelope.md states them for producers.
const (
	// MaxIDBytes bounds the id, which becomes a JetStream Nats-Msg-Id, a
	// dead-letter key and a vendor's message id.
	MaxIDBytes = 256
	// MaxAttributeBytes bounds every other string attribute (source, type,
	// subject, datacontenttype, dataschema) and each extension's value.
	MaxAttributeBytes = 1024
)
