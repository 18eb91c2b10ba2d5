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
