package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/chapar-dev/chapar/internal/sinks"
)

type cliKenar struct {
	Subscribe cliKenarSubscribe `cmd:"" help:"Register a Divar Kenar event subscription."`
}

type cliKenarSubscribe struct {
	Config     string `required:"" help:"Config file with the kenar sink (its credentials and base_url are used)." placeholder:"FILE"`
	Sink       string `default:"kenar" help:"Name of the kenar sink in the config."`
	EventType  string `required:"" enum:"NEW_MESSAGE_ON_POST,POST_UPDATE" help:"NEW_MESSAGE_ON_POST or POST_UPDATE."`
	ResourceID string `help:"Post token; empty subscribes to all of the user's posts." placeholder:"POST_TOKEN"`
	Metadata   string `default:"{}" help:"Metadata object sent with the subscription (JSON)." placeholder:"JSON"`
	JSON       bool   `help:"Print the registered subscription as a JSON object."`
}

func (c *cliKenarSubscribe) Run(ctx context.Context, s *streams) error {
	return kenarCmd(ctx, &c.Config, &c.Sink, &c.EventType, &c.ResourceID, &c.Metadata, c.JSON, s.stdout)
}

// kenarSubscribed is what kenar subscribe --json prints.
type kenarSubscribed struct {
	Sink       string         `json:"sink"`
	EventType  string         `json:"event_type"`
	ResourceID string         `json:"resource_id"`
	Metadata   map[string]any `json:"metadata"`
}

func kenarCmd(ctx context.Context, file, sinkName, eventType, resource, metadata *string, asJSON bool, stdout io.Writer) error {
	cfg, err := loadConfig(*file, natsFlags{})
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
			if asJSON {
				if md == nil {
					md = map[string]any{} // --metadata null: what KenarSubscribe sent
				}
				return writeJSON(stdout, kenarSubscribed{Sink: s.Name, EventType: *eventType, ResourceID: *resource, Metadata: md})
			}
			fmt.Fprintf(stdout, "subscribed to %s (resource %q) with sink %s\n", *eventType, *resource, s.Name)
			return nil
		}
	}
	return usageError{fmt.Sprintf("no sink named %q in %s", *sinkName, *file)}
}
