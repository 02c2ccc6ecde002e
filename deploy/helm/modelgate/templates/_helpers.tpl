{{- define "modelgate.name" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelgate.labels" -}}
app.kubernetes.io/name: modelgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "modelgate.secretName" -}}
{{- default (printf "%s-secrets" (include "modelgate.name" .)) .Values.existingSecret -}}
{{- end -}}

{{/* Environment shared by gateways and nodes. */}}
{{- define "modelgate.env" -}}
- name: MODELGATE_HOST
  value: "0.0.0.0"
- name: MODELGATE_HTTP_PORT
  value: {{ .Values.gateway.service.httpPort | quote }}
- name: MODELGATE_GRPC_PORT
  value: {{ .Values.gateway.service.grpcPort | quote }}
- name: MODELGATE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "modelgate.secretName" . }}
      key: redis-url
- name: MODELGATE_REDIS_KEY_PREFIX
  value: {{ .Values.redisKeyPrefix | quote }}
- name: MODELGATE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "modelgate.secretName" . }}
      key: database-url
      optional: true
- name: MODELGATE_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "modelgate.secretName" . }}
      key: admin-key
- name: MODELGATE_SHUTDOWN_DELAY_SECONDS
  value: {{ .Values.shutdownDelaySeconds | quote }}
- name: MODELGATE_FORWARDED_ALLOW_IPS
  value: {{ .Values.forwardedAllowIps | quote }}
- name: MODELGATE_LOG_FORMAT
  value: json
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "modelgate.probes" -}}
readinessProbe:
  httpGet: {path: /v2/health/ready, port: http}
  periodSeconds: 2
  failureThreshold: 1
livenessProbe:
  httpGet: {path: /v2/health/live, port: http}
  periodSeconds: 10
  failureThreshold: 3
startupProbe:
  httpGet: {path: /v2/health/live, port: http}
  periodSeconds: 2
  failureThreshold: 60
{{- end -}}

{{- define "modelgate.ports" -}}
- name: http
  containerPort: {{ .Values.gateway.service.httpPort }}
  protocol: TCP
- name: grpc
  containerPort: {{ .Values.gateway.service.grpcPort }}
  protocol: TCP
{{- end -}}

{{/* The node pools: node.pools, and the GPU pool when node.gpu.enabled (YAML list). */}}
{{- define "modelgate.nodePools" -}}
{{- $pools := .Values.node.pools -}}
{{- if .Values.node.gpu.enabled }}
{{- $gpu := dict "name" "gpu" "replicas" .Values.node.gpu.replicas "hardware" "gpu" "resources" (mergeOverwrite (deepCopy .Values.node.gpu.resources) (dict "limits" (merge (dict "nvidia.com/gpu" .Values.node.gpu.gpusPerPod) (default dict .Values.node.gpu.resources.limits)))) "nodeSelector" .Values.node.gpu.nodeSelector "tolerations" .Values.node.gpu.tolerations }}
{{- $pools = append $pools $gpu }}
{{- end }}
{{- toYaml $pools }}
{{- end -}}
