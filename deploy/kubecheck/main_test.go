package main

import (
	"strings"
	"testing"
)

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers:
        - name: c
          image: chapar:latest
          ports: [{name: admin, containerPort: 9090}]
          readinessProbe: {httpGet: {path: /readyz, port: admin}}
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  selector: {app: x}
  ports: [{name: admin, port: 9090, targetPort: admin}]
`

// What kubeconform -strict would reject, and what it would not but
// cannot run, is rejected; the valid pair passes.
func TestCheck(t *testing.T) {
	cases := []struct {
		name    string
		yaml    string
		wantErr string // "" for valid
	}{
		{"valid", deployment, ""},
		{"unknown field", strings.Replace(deployment, "image: chapar:latest", "image: chapar:latest\n          imagePolicy: Always", 1), `unknown field "spec.template.spec.containers[0].imagePolicy"`},
		{"misplaced field", strings.Replace(deployment, "spec:\n  selector", "spec:\n  replica: 2\n  selector", 1), `unknown field "spec.replica"`},
		{"wrong type", strings.Replace(deployment, "containerPort: 9090", "containerPort: nine", 1), "cannot unmarshal"},
		{"unknown kind", "apiVersion: v1\nkind: Pod2\nmetadata: {name: p}\n", "kind not known"},
		{"selector misses the pods", strings.Replace(deployment, "labels: {app: x}", "labels: {app: z}", 1), "spec.selector does not match"},
		{"probe on a port not declared", strings.Replace(deployment, "port: admin}}", "port: metrics}}", 1), "readinessProbe port metrics"},
		{"service port not declared", strings.Replace(deployment, "targetPort: admin", "targetPort: http", 1), "targetPort http"},
		{"nothing", "# only a comment\n", "no manifests"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := check(strings.NewReader(c.yaml))
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("valid manifests rejected: %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("got %v, want an error containing %q", err, c.wantErr)
			}
		})
	}
}
