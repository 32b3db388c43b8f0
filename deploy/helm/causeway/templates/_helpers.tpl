{{/* Names and labels shared by every template. */}}

{{- define "causeway.keyNamespace" -}}
{{- .Values.gateway.keyNamespace | default (printf "%s-keys" .Release.Namespace) -}}
{{- end }}

{{- define "causeway.labels" -}}
app.kubernetes.io/name: causeway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component; they never change across upgrades. */}}
{{- define "causeway.selector" -}}
app.kubernetes.io/name: causeway
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "causeway.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The member parts (controller, gateway, route agent) need a cluster ID. */}}
{{- define "causeway.clusterID" -}}
{{- required "clusterID is required: set --set clusterID=<this cluster's ID, a DNS label>" .Values.clusterID -}}
{{- end -}}

{{- define "causeway.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* What this cluster accepts from the others' ClusterEndpoints (controller, gateways, route agents). */}}
{{- define "causeway.acceptanceEnv" -}}
- name: CAUSEWAY_ALLOWED_REMOTE_CIDRS
  value: {{ join "," .Values.remoteCIDRs.allowed | quote }}
{{- with .Values.remoteCIDRs.protected }}
- name: CAUSEWAY_PROTECTED_CIDRS
  value: {{ join "," . | quote }}
{{- end }}
{{- end -}}

{{/* The environment shared by the gateway candidates and the route agents. */}}
{{- define "causeway.gatewayEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: CAUSEWAY_CLUSTER_ID
  value: {{ include "causeway.clusterID" . | quote }}
{{ include "causeway.acceptanceEnv" . }}
- name: CAUSEWAY_METRICS_ADDR
  value: {{ printf "0.0.0.0:%d" (int .Values.gateway.metricsPort) | quote }}
- name: CAUSEWAY_LEASE_SECONDS
  value: {{ .Values.gateway.leaseSeconds | quote }}
- name: CAUSEWAY_INTERFACE
  value: {{ .Values.gateway.interface | quote }}
{{- with .Values.gateway.mtu }}
- name: CAUSEWAY_MTU
  value: {{ . | quote }}
{{- end }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- end -}}

{{- define "causeway.metricsAnnotations" -}}
{{- if .Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.gateway.metricsPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* ip:port, with brackets around an IPv6 address. */}}
{{- define "causeway.hostPort" -}}
{{- if contains ":" .ip -}}
[{{ .ip }}]:{{ .port }}
{{- else -}}
{{ .ip }}:{{ .port }}
{{- end -}}
{{- end -}}
