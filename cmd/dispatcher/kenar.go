package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/chapar-dev/chapar/internal/sinks"
)

func kenarCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "subscribe" {
		return usageError{"usage: dispatcher kenar subscribe --config FILE --sink NAME --event-type NEW_MESSAGE_ON_POST|POST_UPDATE [--resource-id POST_TOKEN] [--metadata JSON]"}
	}
	fs := newFlags("kenar subscribe", stderr)
	file := fs.String("config", "", "config file with the kenar sink (its credentials and base_url are used)")
	sinkName := fs.String("sink", "kenar", "name of the kenar sink in the config")
	eventType := fs.String("event-type", "", "NEW_MESSAGE_ON_POST or POST_UPDATE")
	resource := fs.String("resource-id", "", "post token; empty subscribes to all of the user's posts")
	metadata := fs.String("metadata", "{}", "metadata object sent with the subscription (JSON)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *file == "" {
		return usageError{"--config is required"}
	}
	cfg, err := loadConfig(*file, "")
	if err != nil {
		return err
	}
	var md map[string]any
	if err := json.Unmarshal([]byte(*metadata), &md); err != nil {
		return usageError{fmt.Sprintf("--metadata: not a JSON object: %v", err)}
	}
	for _, s := range cfg.Sinks {
		if s.Name == *sinkName {
			if s.Vendor != "kenar" {
				return usageError{fmt.Sprintf("sink %q is a %s sink, not kenar", s.Name, s.Vendor)}
			}
			err := sinks.KenarSubscribe(ctx, s, sinks.KenarSubscription{EventType: *eventType, EventResourceID: *resource, Metadata: md})
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "subscribed to %s (resource %q) with sink %s\n", *eventType, *resource, s.Name)
			return nil
		}
	}
	return usageError{fmt.Sprintf("no sink named %q in %s", *sinkName, *file)}
}
