{{/* Names, labels and derived values shared by every template. */}}

{{- define "hotserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hotserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hotserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hotserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hotserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hotserve.labels" -}}
helm.sh/chart: {{ include "hotserve.chart" . }}
{{ include "hotserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hotserve
{{- end }}

{{- define "hotserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hotserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is pinned. */}}
{{- define "hotserve.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "hotserve.redisName" -}}
{{- printf "%s-redis" (include "hotserve.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The HOTSERVE_REDIS_URL of the bundled Redis (no credential in it: the password is a mounted file). */}}
{{- define "hotserve.redisUrl" -}}
{{- if .Values.redis.deploy.enabled }}
{{- printf "redis://%s:6379/0" (include "hotserve.redisName" .) }}
{{- end }}
{{- end }}

{{/* "true" when the replicas use a Redis (bundled or external), else "". */}}
{{- define "hotserve.redisEnabled" -}}
{{- if and (or .Values.redis.url .Values.redis.existingSecret) .Values.redis.deploy.enabled }}
{{- fail "set either redis.url / redis.existingSecret (external Redis) or redis.deploy.enabled (bundled Redis), not both" }}
{{- end }}
{{- if or .Values.redis.url .Values.redis.existingSecret .Values.redis.deploy.enabled }}true{{ end }}
{{- end }}

{{/* Secret holding an external Redis URL (key redis.existingSecretKey), or "". */}}
{{- define "hotserve.redisUrlSecretName" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else if .Values.redis.url }}
{{- printf "%s-redis-url" (include "hotserve.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Secret holding the bundled Redis' password (key `password`). */}}
{{- define "hotserve.redisAuthSecretName" -}}
{{- default (printf "%s-auth" (include "hotserve.redisName" .) | trunc 63 | trimSuffix "-") .Values.redis.deploy.auth.existingSecret }}
{{- end }}

{{/* Secret holding the control-document signing key, or "" without Redis. */}}
{{- define "hotserve.signingSecretName" -}}
{{- if include "hotserve.redisEnabled" . }}
{{- default (printf "%s-control-signing" (include "hotserve.fullname" .) | trunc 63 | trimSuffix "-") .Values.controlSigning.existingSecret }}
{{- end }}
{{- end }}

{{/* A random secret value, or the one a Secret of the release already holds (stable upgrades). */}}
{{- define "hotserve.keptRandom" -}}
{{- $existing := lookup "v1" "Secret" .namespace .name }}
{{- if and $existing (index $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum .length }}
{{- end }}
{{- end }}

{{/* Secret holding the admin token, or "" when the admin API is off. */}}
{{- define "hotserve.adminSecretName" -}}
{{- if .Values.adminToken.existingSecret }}
{{- .Values.adminToken.existingSecret }}
{{- else if .Values.adminToken.value }}
{{- printf "%s-admin" (include "hotserve.fullname" .) }}
{{- end }}
{{- end }}

{{- define "hotserve.modelsClaimName" -}}
{{- default (printf "%s-models" (include "hotserve.fullname" .)) .Values.modelRepository.pvc.existingClaim }}
{{- end }}

{{/* preStop + drain + 10 s of slack unless set explicitly; an explicit value must still cover both. */}}
{{- define "hotserve.terminationGracePeriodSeconds" -}}
{{- $drain := add (int .Values.lifecycle.preStopSleepSeconds) (int (ceil .Values.server.shutdownGraceS)) }}
{{- $explicit := .Values.lifecycle.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $explicit }}
{{- add $drain 10 }}
{{- else if le (int $explicit) $drain }}
{{- fail (printf "lifecycle.terminationGracePeriodSeconds (%d) must exceed lifecycle.preStopSleepSeconds + server.shutdownGraceS (%d), or in-flight requests are killed" (int $explicit) $drain) }}
{{- else }}
{{- $explicit }}
{{- end }}
{{- end }}

{{/* The server pods only (the optional bundled Redis shares the instance labels). */}}
{{- define "hotserve.serverSelectorLabels" -}}
{{ include "hotserve.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/* HOTSERVE_CAPTURE_SINK, checked as the server and the pod can take it: s3://bucket/prefix, or an
absolute directory on a writable mount (the root filesystem is read-only); "" when capture is off. */}}
{{- define "hotserve.captureSink" -}}
{{- $capture := .Values.capture }}
{{- $sink := $capture.sink }}
{{- if hasPrefix "s3://" $sink }}
{{- if not (trimAll "/" (trimPrefix "s3://" $sink)) }}
{{- fail "capture.sink: an s3:// sink names a bucket: s3://bucket/prefix" }}
{{- end }}
{{- if not (or (include "hotserve.redisEnabled" .) .Values.server.controlStatePath) }}
{{- fail "capture.sink=s3://... without Redis keeps the label join in a file beside the control state, which the read-only model volume cannot hold: set redis (the fleet's join) or server.controlStatePath on a writable volume" }}
{{- end }}
{{- else if $sink }}
{{- if contains "://" $sink }}
{{- fail (printf "capture.sink %q: expected a local directory or s3://bucket/prefix" $sink) }}
{{- end }}
{{- if not (hasPrefix "/" $sink) }}
{{- fail (printf "capture.sink %q: a local directory is an absolute path" $sink) }}
{{- end }}
{{- if or $capture.s3.endpoint $capture.s3.region $capture.s3.credentials.existingSecret }}
{{- fail (printf "capture.s3 is for an s3:// capture.sink; %q is a local directory" $sink) }}
{{- end }}
{{- $writable := or (eq $sink "/tmp") (hasPrefix "/tmp/" $sink) }}
{{- range .Values.extraVolumeMounts }}
{{- $mount := trimSuffix "/" .mountPath }}
{{- if and (not .readOnly) (or (eq $sink $mount) (hasPrefix (printf "%s/" $mount) $sink)) }}
{{- $writable = true }}
{{- end }}
{{- end }}
{{- if not $writable }}
{{- fail (printf "capture.sink %q is not on a writable volume (the root filesystem and the model repository are read-only): mount one there (extraVolumes/extraVolumeMounts, e.g. a ReadWriteOnce claim) or use s3://bucket/prefix" $sink) }}
{{- end }}
{{- end }}
{{- $sink }}
{{- end }}

{{/* Secret holding the capture sink's S3 credentials (an s3:// sink only), or "". */}}
{{- define "hotserve.captureCredentialsSecret" -}}
{{- if hasPrefix "s3://" .Values.capture.sink }}
{{- .Values.capture.s3.credentials.existingSecret }}
{{- end }}
{{- end }}
