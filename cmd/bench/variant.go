package main

// chapar-env: the dispatcher as built, run with an environment of its own
// (-chapar-env), measured in the same run as chapar, so a runtime setting
// (GOGC, GOMAXPROCS, GODEBUG) is judged against Chapar as users run it,
// not against another run on a noisy machine.

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

const chaparEnvSystem = "chapar-env"

func chaparWithEnv(bin string, env []string) system {
	return system{name: chaparEnvSystem, label: fmt.Sprintf("Chapar (%s)", strings.Join(env, " ")),
		subject: func(key, typ string, partitions int) string {
			return envelope.PartitionSubject("chapar", typ, envelope.Partition(key, partitions), partitions)
		},
		prepare: func(context.Context, jetstream.JetStream) error { return nil },
		start: func(natsURL string, urls []string, sc scenario, dir string) (*proc, error) {
			return startChapar(filepath.Join(bin, "dispatcher"), natsURL, urls, sc, dir, chaparVariant{env: env})
		}}
}

// writeVariant sets chapar-env's figures beside chapar's in each scenario
// both ran.
func writeVariant(w io.Writer, scs []scenario, byKey map[string]result) {
	header := false
	for _, sc := range scs {
		c, okC := byKey[sc.name+"/chapar"]
		v, okV := byKey[sc.name+"/"+chaparEnvSystem]
		if !okC || !okV || c.err != nil || v.err != nil {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nChapar as built against chapar-env, the same dispatcher run with the command's -chapar-env settings, same run:")
			fmt.Fprintln(w, "\n| scenario | metric | Chapar | chapar-env | chapar-env / Chapar | lean | chapar-env / lean |")
			fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|")
			header = true
		}
		l, okL := byKey[sc.name+"/lean"]
		for i, m := range metrics(sc) {
			title := ""
			if i == 0 {
				title = sc.name
			}
			cv, vv := m.value(c, sc), m.value(v, sc)
			lean, perLean := "–", "–"
			if okL && l.err == nil {
				lv := m.value(l, sc)
				lean, perLean = fmt.Sprintf("%.*f%s", m.prec, lv, m.unit), ratio(vv/lv)
			}
			fmt.Fprintf(w, "| %s | %s | %.*f%s | %.*f%s | %s | %s | %s |\n", title, m.name, m.prec, cv, m.unit, m.prec, vv, m.unit,
				ratio(vv/cv), lean, perLean)
		}
	}
}
