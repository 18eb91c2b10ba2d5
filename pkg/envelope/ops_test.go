package envelope_test

import (
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Chapar's operational event types pass the reserved prefix (routes may
// name them, a dispatcher parses them, the schema accepts them) with
// their data carried as written; a chapar.ops. type that is not one of
// them is refused, naming the ones there are.
func TestOpsTypesAreChaparsOwn(t *testing.T) {
	schema := compileSchema(t)
	for _, typ := range envelope.OpsTypes() {
		if err := envelope.CheckType(typ); err != nil {
			t.Errorf("CheckType(%s): %v", typ, err)
		}
		raw := customEnvelope(t, typ, map[string]any{"sink": "metrix", "reason": "vendor_rejected"})
		ev, err := envelope.Parse(raw, 0)
		if err != nil {
			t.Fatalf("Parse %s: %v", typ, err)
		}
		if string(ev.Data) != `{"reason":"vendor_rejected","sink":"metrix"}` || ev.Track != nil {
			t.Errorf("%s: data %s, want it as written", typ, ev.Data)
		}
		if !schemaAccepts(t, schema, raw) {
			t.Errorf("schema refuses %s", typ)
		}
	}
	err := envelope.CheckType("chapar.ops.dead_letterd")
	if err == nil || !strings.Contains(err.Error(), envelope.TypeOpsDeadLettered) {
		t.Errorf("a misspelt ops type: %v, want refused naming the ops types", err)
	}
	assertRejected(t, customEnvelope(t, "chapar.ops.dead_letterd", map[string]any{}), []string{"type"}, false)
	if envelope.IsOpsType(envelope.TypeTrack) || envelope.IsChaparType(envelope.TypeOpsDeadLettered) {
		t.Error("ops types and the four checked types overlap")
	}
}
