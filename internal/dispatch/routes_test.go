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
