package dispatch

import (
	"reflect"
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func TestRoutesMatch(t *testing.T) {
	routes := NewRoutes([]config.Route{
		{Types: []string{envelope.TypeTrack}, Names: []string{"order_*", "signup"}, Sinks: []string{"chabok", "metrix"}},
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"metrix", "gateway"}},
		{Names: []string{"signup"}, Sinks: []string{"gateway", "chabok"}},
		{Types: []string{envelope.TypeIdentify}, Sinks: []string{"gateway"}},
	})
	user := envelope.User{ID: "u"}
	tests := []struct {
		name string
		typ  string
		data any
		opts []envelope.Option
		want []string
	}{
		{"pattern", envelope.TypeTrack, envelope.Track{Name: "order_paid", User: user}, nil, []string{"chabok", "metrix"}},
		{"two routes, each sink once", envelope.TypeTrack, envelope.Track{Name: "signup", User: user}, nil, []string{"chabok", "metrix", "gateway"}},
		{"type only", envelope.TypePurchase, envelope.Purchase{Track: envelope.Track{Name: "x", User: user}, Revenue: "1", Currency: "IRR"}, nil, []string{"metrix", "gateway"}},
		{"no match", envelope.TypeTrack, envelope.Track{Name: "page_view", User: user}, nil, nil},
		{"identify has no name", envelope.TypeIdentify, envelope.Identify{User: user}, nil, []string{"gateway"}},
		{"destinations override", envelope.TypeTrack, envelope.Track{Name: "order_paid", User: user},
			[]envelope.Option{envelope.WithDestinations("kenar", "kenar", "chabok")}, []string{"kenar", "chabok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := envelope.New(tt.typ, "t", tt.data, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := env.Decode()
			if err != nil {
				t.Fatal(err)
			}
			if got := routes.Match(ev); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

// Chapar's operational events go only where a route names their type (a
// catch-all route is for producers' events), never by destinations, and
// never to the sink they are about: a failing sink's dead letters and
// breaker are not sent to that sink (the loop guard).
func TestRoutesMatchOpsEvents(t *testing.T) {
	routes := NewRoutes([]config.Route{
		{Sinks: []string{"chabok"}}, // catch-all
		{Types: []string{envelope.TypeOpsDeadLettered, envelope.TypeOpsBreakerOpened}, Sinks: []string{"chat", "hook"}},
		{Types: []string{envelope.TypeOpsReplayDone}, Sinks: []string{"hook"}},
	})
	tests := []struct {
		name, typ, about string
		opts             []envelope.Option
		want             []string
	}{
		{"about another sink", envelope.TypeOpsDeadLettered, "metrix", nil, []string{"chat", "hook"}},
		{"about a sink it names: never to that sink", envelope.TypeOpsDeadLettered, "hook", nil, []string{"chat"}},
		{"about the only sink it names", envelope.TypeOpsReplayDone, "hook", nil, nil},
		{"about no sink", envelope.TypeOpsReplayDone, "", nil, []string{"hook"}},
		{"a type no route names; the catch-all does not take it", envelope.TypeOpsSinkPaused, "metrix", nil, nil},
		{"destinations do not apply", envelope.TypeOpsBreakerOpened, "chat",
			[]envelope.Option{envelope.WithDestinations("chat", "chabok")}, []string{"hook"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := envelope.New(tt.typ, "chapar", map[string]any{"sink": tt.about}, append(tt.opts, envelope.WithSubject(tt.about))...)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := env.Decode()
			if err != nil {
				t.Fatal(err)
			}
			if got := routes.Match(ev); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}
