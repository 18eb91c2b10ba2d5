// Command dashrules prints the queries of Grafana dashboards as a
// Prometheus rule file, for CI to parse them with promtool check rules:
//
//	go run ./deploy/dashrules deploy/grafana/*.json > dashboard.rules.yaml
package main

import (
	"fmt"
	"os"

	"github.com/chapar-dev/chapar/deploy"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "dashrules:", err)
		os.Exit(1)
	}
}

func run(files []string) error {
	if len(files) == 0 {
		return fmt.Errorf("usage: dashrules DASHBOARD.json...")
	}
	var queries []deploy.Query
	for _, f := range files {
		q, err := deploy.DashboardQueries(f)
		if err != nil {
			return err
		}
		queries = append(queries, q...)
	}
	b, err := deploy.RecordingRules(queries)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(b)
	return err
}
