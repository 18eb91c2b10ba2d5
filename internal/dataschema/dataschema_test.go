package dataschema_test

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/dataschema"
)

func schemas(t *testing.T, doc string) map[string]yaml.Node {
	t.Helper()
	var m map[string]yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

const shipped = `
com.shop.order.shipped:
  type: object
  required: [order]
  properties:
    order:
      type: object
      required: [id]
      properties:
        id: {type: string, minLength: 1}
        total: {type: number, minimum: 0}
    shippedAt: {type: string, format: date-time}
`

func TestCheckValidatesDataAgainstItsTypesSchema(t *testing.T) {
	set, err := dataschema.Compile(schemas(t, shipped))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, eventType, data string
		says                  string // "" : valid
	}{
		{"valid", "com.shop.order.shipped", `{"order":{"id":"A-1","total":12345678901234567890.5},"shippedAt":"2026-12-06T10:00:00Z"}`, ""},
		{"no schema for the type", "com.shop.other", `[1,2]`, ""},
		{"missing required", "com.shop.order.shipped", `{"order":{}}`, "/order"},
		{"wrong kind", "com.shop.order.shipped", `{"order":{"id":7}}`, "/order/id"},
		{"negative total", "com.shop.order.shipped", `{"order":{"id":"A","total":-1}}`, "/order/total"},
		{"format asserted", "com.shop.order.shipped", `{"order":{"id":"A"},"shippedAt":"yesterday"}`, "/shippedAt"},
		{"absent data is null", "com.shop.order.shipped", ``, "null"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := set.Check(tt.eventType, []byte(tt.data))
			switch {
			case tt.says == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.says != "" && err == nil:
				t.Error("accepted")
			case tt.says != "" && !strings.Contains(err.Error(), tt.says):
				t.Errorf("error %q does not say %q", err, tt.says)
			case err != nil && (strings.Contains(err.Error(), "\n") || len(err.Error()) > 2048):
				t.Errorf("error is not one short line: %q", err)
			}
		})
	}
}

func TestCompileNamesTheKeyOfABadSchemaOrType(t *testing.T) {
	for _, tt := range []struct{ doc, says string }{
		{"com.shop.x: {type: 7}", "data_schemas.com.shop.x: "},
		{"com.shop.x: {type: object, minProperties: many}", "data_schemas.com.shop.x: "},
		{"com.shop.x: not-a-mapping", "data_schemas.com.shop.x: "},
		{"'com shop': {type: object}", `data_schemas.com shop: "com shop" is not an event type`},
		{"chapar.click: {type: object}", `data_schemas.chapar.click: "chapar.click" is not an event type`},
	} {
		_, err := dataschema.Compile(schemas(t, tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("%s: %v, want it to say %q", tt.doc, err, tt.says)
		}
	}
	if set, err := dataschema.Compile(nil); err != nil || set.Check("com.x", []byte(`1`)) != nil {
		t.Errorf("no schemas: %v", err)
	}
}
