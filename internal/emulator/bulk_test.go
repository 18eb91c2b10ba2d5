package emulator_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/emulator"
)

func postBulk(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/api/installations/trackBulk", strings.NewReader(body))
	req.Header.Set("X-Access-Token", "demo-chabok-token")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestChabokTrackBulk(t *testing.T) {
	emu := emulator.New(emulator.DemoConfig())
	srv := httptest.NewServer(emu.Vendor(emulator.Chabok))
	defer srv.Close()
	item := func(name string) string {
		return `{"userId":"u","eventName":"` + name + `","eventTime":1795428900000,"eventData":{"a":1}}`
	}
	status, body := postBulk(t, srv.URL, "["+item("a")+","+item("b")+"]")
	if status != 200 || body["queued"] != true || body["n"] != float64(2) {
		t.Errorf("valid bulk: %d %v", status, body)
	}
	// One invalid item refuses the request whole, naming the item.
	status, body = postBulk(t, srv.URL, "["+item("a")+`,{"eventName":"b"}]`)
	if status != 400 || !strings.Contains(body["error"].(map[string]any)["message"].(string), "item 1") {
		t.Errorf("bulk with a bad item: %d %v", status, body)
	}
	if status, _ := postBulk(t, srv.URL, "[]"); status != 400 {
		t.Errorf("empty bulk: %d", status)
	}
	many := make([]string, emulator.ChabokMaxBulk+1)
	for i := range many {
		many[i] = item("a")
	}
	if status, _ := postBulk(t, srv.URL, "["+strings.Join(many, ",")+"]"); status != 400 {
		t.Errorf("bulk over the limit: %d", status)
	}
	if status, _ := postBulk(t, srv.URL, "["+strings.Join(many[1:], ",")+"]"); status != 200 {
		t.Errorf("bulk at the limit: %d", status)
	}

	// A fault matching one item refuses every request carrying it, and only those.
	emu.Vendor(emulator.Chabok).SetFault(emulator.Fault{Status: 400, Code: "INVALID_EVENT", Match: `"eventName":"poison"`})
	if status, _ := postBulk(t, srv.URL, "["+item("a")+","+item("poison")+"]"); status != 400 {
		t.Errorf("bulk with the poison item: %d", status)
	}
	if status, _ := postBulk(t, srv.URL, "["+item("a")+"]"); status != 200 {
		t.Errorf("bulk without it: %d", status)
	}
}
