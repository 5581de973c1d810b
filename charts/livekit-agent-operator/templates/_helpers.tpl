{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "lkao.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "lkao.fullname" -}}
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

{{- define "lkao.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lkao.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lkao.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "lkao.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "lkao.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lkao.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* What runner pods dial: the Service's cluster DNS name unless overridden. */}}
{{- define "lkao.runnerAddress" -}}
{{- if .Values.runner.address }}
{{- .Values.runner.address }}
{{- else }}
{{- printf "%s.%s.svc:%d" (include "lkao.fullname" .) .Release.Namespace (int .Values.runner.port) }}
{{- end }}
{{- end }}

{{- define "lkao.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespaced permissions of the operator (least privilege). */}}
{{- define "lkao.rules" -}}
# AgentDeployments: kopf watches them, patches its finalizer and annotations
- apiGroups: [agentoperator.dev]
  resources: [agentdeployments]
  verbs: [get, list, watch, patch]
- apiGroups: [agentoperator.dev]
  resources: [agentdeployments/status]
  verbs: [get, patch]
# job pods carry an ownerReference with blockOwnerDeletion (OwnerReferencesPermissionEnforcement)
- apiGroups: [agentoperator.dev]
  resources: [agentdeployments/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [events]
  # list: the kubelet's Events on a job pod say when it stopped a container for a failed probe
  verbs: [create, list]
# the LiveKit credentials an AgentDeployment references
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
