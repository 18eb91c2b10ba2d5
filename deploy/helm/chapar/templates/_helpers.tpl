{{/* The release's resources are named <release>-chapar (or the release
name alone when it already says chapar), at most 63 characters. */}}
{{- define "chapar.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "chapar.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "chapar.labels" -}}
{{ include "chapar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The Secret the pods read their environment from, if any. */}}
{{- define "chapar.secretName" -}}
{{- if and .Values.secrets.existingSecret .Values.secrets.env -}}
{{- fail "secrets: set existingSecret or env, not both" -}}
{{- else if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if .Values.secrets.env -}}
{{- include "chapar.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* The config file: values' config with nats.url, admin.listen,
admin.probe_listen and (with webhook.enabled) kenar_webhook.listen set from the chart's values, so the probes
and the Service always find the ports. */}}
{{- define "chapar.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- if not .Values.nats.url -}}
{{- fail "nats.url: set the NATS server URL, e.g. nats://nats.nats:4222" -}}
{{- end -}}
{{- $nats := get $cfg "nats" | default dict -}}
{{- $_ := set $nats "url" .Values.nats.url -}}
{{- $_ := set $cfg "nats" $nats -}}
{{- $admin := get $cfg "admin" | default dict -}}
{{- $_ := set $admin "listen" (printf ":%d" (int .Values.admin.port)) -}}
{{- $_ := set $admin "probe_listen" (printf ":%d" (int .Values.admin.probePort)) -}}
{{- $_ := set $cfg "admin" $admin -}}
{{- if .Values.webhook.enabled -}}
{{- $webhook := get $cfg "kenar_webhook" | default dict -}}
{{- $_ := set $webhook "listen" (printf ":%d" (int .Values.webhook.port)) -}}
{{- $_ := set $cfg "kenar_webhook" $webhook -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}
