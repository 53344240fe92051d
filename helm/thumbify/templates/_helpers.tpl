{{/* Names and labels. */}}
{{- define "thumbify.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "thumbify.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "thumbify.labels" -}}
{{ include "thumbify.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "thumbify.image" -}}
{{- printf "%s:%s" .img.repository (default .appVersion .img.tag) -}}
{{- end -}}

{{/* Where things are. */}}
{{- define "thumbify.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "thumbify.fullname" .) -}}
{{- else -}}
{{- required "redis.url is required when redis.enabled is false" .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{- define "thumbify.redisAddress" -}}
{{- if .Values.keda.redisAddress -}}
{{- .Values.keda.redisAddress -}}
{{- else if .Values.redis.enabled -}}
{{- printf "%s-redis:6379" (include "thumbify.fullname" .) -}}
{{- else -}}
{{- fail "keda.redisAddress (host:port) is required with keda.enabled and your own Redis" -}}
{{- end -}}
{{- end -}}

{{- define "thumbify.s3Endpoint" -}}
{{- if .Values.storage.s3.endpoint -}}
{{- .Values.storage.s3.endpoint -}}
{{- else if .Values.minio.enabled -}}
{{- printf "http://%s-minio:9000" (include "thumbify.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the S3 keys, or "" when the pods' own identity is used. */}}
{{- define "thumbify.s3Secret" -}}
{{- if .Values.storage.s3.existingSecret -}}
{{- .Values.storage.s3.existingSecret -}}
{{- else if or .Values.storage.s3.accessKeyId .Values.minio.enabled -}}
{{- include "thumbify.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "thumbify.keysSecret" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else if .Values.auth.apiKeys -}}
{{- include "thumbify.fullname" . -}}
{{- else -}}
{{- fail "auth.existingSecret or auth.apiKeys is required: the API refuses to serve without keys on a pod's address (see values.yaml)" -}}
{{- end -}}
{{- end -}}

{{/* Environment every Thumbify container gets besides the ConfigMap. */}}
{{- /* The webhook secret, for the API (a callback needs a secret to be taken) and the workers (they sign). */ -}}
{{- define "thumbify.webhookEnv" -}}
{{- if .Values.auth.webhookSecret }}
- name: THUMBIFY_WEBHOOK_SECRET
  valueFrom: {secretKeyRef: {name: {{ include "thumbify.fullname" . }}, key: webhook-secret}}
{{- end }}
{{- end }}

{{- define "thumbify.s3Env" -}}
{{- $secret := include "thumbify.s3Secret" . -}}
{{- if $secret }}
- name: THUMBIFY_S3_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: access-key-id}}
- name: THUMBIFY_S3_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: secret-access-key}}
{{- end }}
{{- end -}}

{{/* Volumes: the root filesystem is read-only; the data folder (spool) and /tmp are emptyDirs. */}}
{{- define "thumbify.volumeMounts" -}}
- {name: data, mountPath: /var/lib/thumbify}
- {name: tmp, mountPath: /tmp}
{{- end -}}

{{- define "thumbify.volumes" -}}
- name: data
  emptyDir: {sizeLimit: {{ .sizeLimit }}}
- name: tmp
  emptyDir: {sizeLimit: 256Mi}
{{- end -}}
