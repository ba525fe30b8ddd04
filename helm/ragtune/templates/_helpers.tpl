{{/* Names. */}}
{{- define "ragtune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource-name prefix (30 characters at most); InferenceService names are cut to 53 so "<name>-predictor" fits a DNS label. */}}
{{- define "ragtune.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 30 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 30 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ragtune.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "ragtune.labels" -}}
helm.sh/chart: {{ include "ragtune.chart" . }}
{{ include "ragtune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ragtune
{{- end }}

{{- define "ragtune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ragtune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component's objects and Pods: (dict "root" $ "component" "llm"). */}}
{{- define "ragtune.componentLabels" -}}
{{ include "ragtune.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ragtune.componentSelector" -}}
{{ include "ragtune.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Full image reference: (dict "root" $ "name" "ragtune-llm"). */}}
{{- define "ragtune.image" -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) .name (toString .root.Values.image.tag) }}
{{- end }}

{{- define "ragtune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ragtune.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ragtune.secretName" -}}
{{- if .Values.secrets.create }}
{{- include "ragtune.fullname" . }}
{{- else }}
{{- .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{/* Fails the render when a feature needs a Secret and none is configured. */}}
{{- define "ragtune.requireSecret" -}}
{{- if not (include "ragtune.secretName" .) }}
{{- fail "this configuration reads keys from a Secret: set secrets.existingSecret (or secrets.create=true with secrets.values)" }}
{{- end }}
{{- end }}

{{- define "ragtune.pvcName" -}}
{{- default (printf "%s-data" (include "ragtune.fullname" .)) .Values.storage.pvc.name }}
{{- end }}

{{/* storageUri of a predictor: (dict "root" $ "uri" .Values.llm.storageUri "subPath" .Values.llm.pvcSubPath). */}}
{{- define "ragtune.storageUri" -}}
{{- if .uri }}
{{- .uri }}
{{- else }}
{{- printf "pvc://%s/%s" (include "ragtune.pvcName" .root) (trimPrefix "/" .subPath) }}
{{- end }}
{{- end }}

{{- define "ragtune.isKnative" -}}
{{- if has .Values.deploymentMode (list "Knative" "Serverless") }}true{{ end }}
{{- end }}

{{/* DNS-label form of a catalog model name (catalog names may hold '.', '_' and capitals). */}}
{{- define "ragtune.slug" -}}
{{- regexReplaceAll "[^a-z0-9-]+" (lower .) "-" | trimAll "-" }}
{{- end }}

{{/*
The LLM InferenceServices to render, as JSON {"units": [{"name", "configMap", "models"}]}: one unit serving the
whole catalog (layout shared) or one unit per catalog model (layout perModel).
*/}}
{{- define "ragtune.llmUnits" -}}
{{- $full := include "ragtune.fullname" . }}
{{- $units := list }}
{{- if eq .Values.llm.layout "perModel" }}
{{- range .Values.llm.catalog.models }}
{{- $slug := include "ragtune.slug" .name }}
{{- $units = append $units (dict "name" (printf "%s-llm-%s" $full $slug | trunc 53 | trimSuffix "-") "configMap" (printf "%s-catalog-%s" $full $slug | trunc 63 | trimSuffix "-") "models" (list .)) }}
{{- end }}
{{- else }}
{{- $units = append $units (dict "name" (printf "%s-llm" $full) "configMap" (printf "%s-catalog" $full) "models" .Values.llm.catalog.models) }}
{{- end }}
{{- toJson (dict "units" $units) }}
{{- end }}

{{/* In-cluster URL of a predictor: KServe's "<isvc>-predictor" Service answers on port 80 in both modes. */}}
{{- define "ragtune.predictorUrl" -}}
{{- printf "http://%s-predictor.%s.svc.cluster.local" .name .root.Release.Namespace }}
{{- end }}

{{- define "ragtune.retrieverName" -}}
{{- printf "%s-retriever" (include "ragtune.fullname" .) }}
{{- end }}

{{/* Pod-level security context (Pod Security Standards "restricted"). */}}
{{- define "ragtune.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.security.runAsUser }}
runAsGroup: {{ .Values.security.runAsGroup }}
fsGroup: {{ .Values.security.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context: read-only root, no privilege escalation, no capabilities. */}}
{{- define "ragtune.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.security.runAsUser }}
runAsGroup: {{ .Values.security.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Environment every ragtune container gets: caches point at the writable emptyDir, nothing reaches the Hub by accident. */}}
{{- define "ragtune.commonEnv" -}}
- name: HOME
  value: /home/ragtune
- name: XDG_CACHE_HOME
  value: /home/ragtune/.cache
- name: HF_HOME
  value: /home/ragtune/.cache/huggingface
- name: TMPDIR
  value: /tmp
- name: PYTHONUNBUFFERED
  value: "1"
{{- end }}

{{/* Writable emptyDir volumes behind the read-only root filesystem. */}}
{{- define "ragtune.cacheVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.security.emptyDirSizeLimit }}
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.security.emptyDirSizeLimit }}
{{- end }}

{{- define "ragtune.cacheMounts" -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /home/ragtune/.cache
{{- end }}

{{/* An env entry read from the ragtune Secret: (dict "root" $ "env" "NAME" "key" "secret-key" "optional" true). */}}
{{- define "ragtune.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "ragtune.secretName" .root }}
      key: {{ .key }}
      optional: {{ .optional | default false }}
{{- end }}

{{/* HF_TOKEN for predictors, when a Secret is configured (optional key: public models need none). */}}
{{- define "ragtune.hfTokenEnv" -}}
{{- if include "ragtune.secretName" . }}
{{ include "ragtune.secretEnv" (dict "root" . "env" "HF_TOKEN" "key" .Values.secrets.keys.hfToken "optional" true) }}
{{- end }}
{{- end }}

{{/* KServe annotations selecting the deployment mode and, in Standard mode, the HPA autoscaler. */}}
{{- define "ragtune.isvcAnnotations" -}}
serving.kserve.io/deploymentMode: {{ .Values.deploymentMode }}
serving.kserve.io/enable-prometheus-scraping: "true"
{{- if not (include "ragtune.isKnative" .) }}
serving.kserve.io/autoscalerClass: hpa
{{- end }}
{{- end }}

{{/*
Autoscaling fields of a predictor: (dict "root" $ "as" .Values.llm.autoscaling "scaleToZero" true).
Knative: scaleMetric concurrency with the per-replica concurrency target; Standard: HPA on CPU utilization.
*/}}
{{- define "ragtune.predictorScaling" -}}
{{- $as := .as }}
{{- if include "ragtune.isKnative" .root }}
minReplicas: {{ $as.minReplicas }}
maxReplicas: {{ $as.maxReplicas }}
scaleMetric: concurrency
scaleTarget: {{ $as.concurrencyTarget }}
{{- if $as.containerConcurrency }}
containerConcurrency: {{ $as.containerConcurrency }}
{{- end }}
{{- else }}
{{- if lt (int $as.minReplicas) 1 }}
{{- fail "minReplicas 0 (scale to zero) needs deploymentMode Knative; Standard mode scales with an HPA, minimum 1" }}
{{- end }}
minReplicas: {{ $as.minReplicas }}
maxReplicas: {{ $as.maxReplicas }}
scaleMetric: cpu
scaleTarget: {{ $as.cpuTargetUtilization }}
{{- end }}
{{- end }}
