package envelope

import (
	"hash/fnv"
	"strconv"
	"strings"
)

// ExtensionPartitionKey is the CloudEvents partitioning extension
// (https://github.com/cloudevents/spec/blob/main/cloudevents/extensions/partitioning.md):
// events with the same key keep their order and land in the same partition.
const ExtensionPartitionKey = "partitionkey"

// UserKey is the key of "per user": the partitionkey extension if set,
// else the subject (conventionally the user's id); "" when the event has
// neither. Per-user order (order: by_user) orders by it.
func (e *Envelope) UserKey() string {
	if k := e.Extensions[ExtensionPartitionKey]; k != "" {
		return k
	}
	return e.Subject
}

// PartitionKey chooses an event's partition: its UserKey, else its id (an
// event with no user still needs a partition, and its id spreads such
// events evenly). Events with the same UserKey share a partition, so
// per-user order holds with partitions.
func (e *Envelope) PartitionKey() string {
	if k := e.UserKey(); k != "" {
		return k
	}
	return e.ID
}

// Partition is the partition of key among n: FNV-1a (32-bit) of the key's
// bytes, modulo n. It is the function nats-server's subject mapping
// partition(n, ...) applies to a subject token, so a producer that cannot
// compute it can let the server do so (docs/envelope.md, "Partitions").
// n <= 1 is partition 0.
func Partition(key string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// PartitionSubject is where an event of the given type is published when
// the events are spread over partitions streams: with partitions <= 1 it is
// Subject (<prefix>.events.<type>, the layout without partitions), else
// <prefix>.events.<partition>.<type>: the partition is a whole subject
// token, as nats-server's subject mapping partition() writes it.
func PartitionSubject(prefix, eventType string, partition, partitions int) string {
	if partitions <= 1 {
		return Subject(prefix, eventType)
	}
	return prefix + ".events." + strconv.Itoa(partition) + "." + strings.TrimPrefix(eventType, "chapar.")
}

// DirectToken is the subject token, after <prefix>.events.[<partition>.],
// that starts the direct subject space: where an event carrying the
// destinations extension is published. A sink's consumer that reads only
// its routes' types reads the direct space too, since destinations may
// name any sink whatever its types. No type's subject begins with it: a
// type of the producer's own cannot begin with "chapar." (CheckType), and
// Chapar's types lose that prefix in their subject ("chapar.track" is
// <prefix>.events.track), so "chapar.direct" starts no type's subject.
const DirectToken = "chapar.direct"

// DirectSubject is where an event of the given type that carries
// destinations is published: <prefix>.events.chapar.direct.<type subject>
// with one partition, else <prefix>.events.<partition>.chapar.direct.<type
// subject>. The partition is chosen by the same key as any event's.
func DirectSubject(prefix, eventType string, partition, partitions int) string {
	t := DirectToken + "." + strings.TrimPrefix(eventType, "chapar.")
	if partitions <= 1 {
		return prefix + ".events." + t
	}
	return prefix + ".events." + strconv.Itoa(partition) + "." + t
}

// SubjectOf is where env is published among partitions: its type's
// subject in the partition its PartitionKey chooses, or, if it carries
// destinations, the direct subject of its type there.
func SubjectOf(prefix string, env *Envelope, partitions int) string {
	p := Partition(env.PartitionKey(), partitions)
	if len(env.DestinationList()) > 0 { // as routing reads it
		return DirectSubject(prefix, env.Type, p, partitions)
	}
	return PartitionSubject(prefix, env.Type, p, partitions)
}
