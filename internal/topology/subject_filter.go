package topology

// Which events a sink's events consumer reads: the whole stream, or only
// the subjects of the types its routes name plus the direct subjects
// (events carrying destinations). The server then never delivers a sink
// an event of a type it cannot be routed, so a sink an event does not go
// to costs nothing (issue 20). The filter only has to be a superset of
// what the sink may deliver: the worker's route step still decides.

import (
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

// EventFilter is what a sink's events consumers read. The zero value is
// the whole stream (every type, as before filters).
type EventFilter struct {
	// ByType, if set, reads only Types and the direct subjects.
	ByType bool
	// Types are the event types read (with ByType), deduplicated.
	Types []string
}

// DirectSubjects are partition i's direct subjects: where events carrying
// destinations are published (envelope.DirectSubject), whatever their
// type.
func (t Topology) DirectSubjects(i int) string {
	if t.Partitions() == 1 {
		return t.prefix + ".events." + envelope.DirectToken + ".>"
	}
	return t.prefix + ".events." + strconv.Itoa(i) + "." + envelope.DirectToken + ".>"
}

// FilterSubjects are the subjects a sink's events consumer on partition i
// reads under f: the partition's whole subject space, or each type's
// subject there and the direct subjects, sorted, each once (two types can
// share a subject: a type of the producer's own named "track" and
// chapar.track; the server refuses overlapping filters).
func (t Topology) FilterSubjects(i int, f EventFilter) []string {
	if !f.ByType {
		return []string{t.PartitionSubjects(i)}
	}
	n := t.Partitions()
	out := []string{t.DirectSubjects(i)}
	for _, typ := range f.Types {
		out = append(out, envelope.PartitionSubject(t.prefix, typ, i, n))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// setFilter writes subjects into cfg as the server takes them: one subject
// as FilterSubject, several as FilterSubjects (never both).
func setFilter(cfg *jetstream.ConsumerConfig, subjects []string) {
	cfg.FilterSubject, cfg.FilterSubjects = "", nil
	if len(subjects) == 1 {
		cfg.FilterSubject = subjects[0]
		return
	}
	cfg.FilterSubjects = subjects
}

// FiltersOf are the subjects a consumer's config reads; none means every
// subject of its stream.
func FiltersOf(cfg jetstream.ConsumerConfig) []string {
	if cfg.FilterSubject != "" {
		return []string{cfg.FilterSubject}
	}
	return cfg.FilterSubjects
}

// filtersOn are the subjects a consumer's config reads of a stream whose
// subjects are streamSubjects: none (every subject, as FiltersOf says of
// an empty filter) where they include all of the stream's. A bind sets a
// lead's filter to its stream's subjects, and a sink's whose routes name
// no types (SinkFilter): read as narrow, such a consumer would be held
// and its sink's sweep would read the whole backlog, to judge nothing.
func filtersOn(cfg jetstream.ConsumerConfig, streamSubjects []string) []string {
	f := FiltersOf(cfg)
	if len(streamSubjects) == 0 {
		return f
	}
	for _, s := range streamSubjects {
		if !slices.Contains(f, s) {
			return f
		}
	}
	return nil
}

// Reads reports whether a consumer filtering on filters (FiltersOf: none
// is every subject) is delivered a message stored on subject.
func Reads(filters []string, subject string) bool {
	if len(filters) == 0 {
		return true
	}
	for _, f := range filters {
		if SubjectMatches(f, subject) {
			return true
		}
	}
	return false
}

// SubjectMatches is NATS subject matching: filter's "*" stands for one
// token, a final ">" for one or more.
func SubjectMatches(filter, subject string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, f := range ft {
		if f == ">" && i == len(ft)-1 {
			return len(st) > i
		}
		if i >= len(st) || (f != "*" && f != st[i]) {
			return false
		}
	}
	return len(st) == len(ft)
}
