{{/* The chart's name, and the prefix of every resource name. */}}
{{- define "atb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "atb.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every resource; "atb.selectorLabels" with a component are what Services, PDBs and
workloads select on. Called with (dict "root" $ "component" "<service>"). */}}
{{- define "atb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: atb
{{ include "atb.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "atb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "atb.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* The values block of a service: auditSink for audit-sink, policyDecisionLogs for policy-decision-logs. */}}
{{- define "atb.serviceValues" -}}
{{- $key := .component | replace "audit-sink" "auditSink" | replace "policy-decision-logs" "policyDecisionLogs" -}}
{{- toYaml (index .root.Values $key) -}}
{{- end -}}

{{/* The workloads: the services, and OPA's decision-log receiver when it is enabled. */}}
{{- define "atb.components" -}}
{{- $all := list "gateway" "approvals" "issuer" "broker" "chat" "console" "audit-sink" -}}
{{- if .Values.policyDecisionLogs.enabled }}{{ $all = append $all "policy-decision-logs" }}{{ end -}}
{{- toJson $all -}}
{{- end -}}

{{/* A workload's image: the receiver is the `atb` command of the broker's image (docker-compose does the same). */}}
{{- define "atb.image" -}}
{{- $image := .component | replace "policy-decision-logs" "broker" -}}
{{- printf "%s/%s:%s" .root.Values.image.repository $image (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{/* A service's SPIFFE ID. */}}
{{- define "atb.spiffeId" -}}
{{- printf "spiffe://%s/svc/%s" .root.Values.trustDomain .component -}}
{{- end -}}

{{/* The services that ask OPA for policy (each gets the sidecar). */}}
{{- define "atb.asksPolicy" -}}
{{- if has .component (list "approvals" "issuer" "broker") }}true{{ end -}}
{{- end -}}

{{/* The workloads that hold an SVID (all but the audit sink). */}}
{{- define "atb.hasSvid" -}}
{{- if has .component (list "gateway" "approvals" "issuer" "broker" "chat" "console" "policy-decision-logs") }}true{{ end -}}
{{- end -}}

{{/* The consumer-group services: StatefulSets, for stable instance names (static membership). */}}
{{- define "atb.isStatefulSet" -}}
{{- if has .component (list "approvals" "issuer" "broker" "audit-sink") }}true{{ end -}}
{{- end -}}

{{/* Security context of every container. */}}
{{- define "atb.containerSecurityContext" -}}
{{- $base := dict
  "runAsNonRoot" true
  "runAsUser" (int .Values.image.uid)
  "runAsGroup" (int .Values.image.uid)
  "allowPrivilegeEscalation" false
  "readOnlyRootFilesystem" true
  "privileged" false
  "capabilities" (dict "drop" (list "ALL"))
  "seccompProfile" (dict "type" "RuntimeDefault")
-}}
{{- toYaml (mergeOverwrite $base .Values.containerSecurityContext) -}}
{{- end -}}

{{- define "atb.podSecurityContext" -}}
{{- $base := dict
  "runAsNonRoot" true
  "runAsUser" (int .Values.image.uid)
  "runAsGroup" (int .Values.image.uid)
  "fsGroup" (int .Values.image.uid)
  "fsGroupChangePolicy" "OnRootMismatch"
  "seccompProfile" (dict "type" "RuntimeDefault")
-}}
{{- toYaml (mergeOverwrite $base .Values.podSecurityContext) -}}
{{- end -}}

{{/* libpq URL without a password (PGPASSWORD carries it). Called with a postgres.<store> block. */}}
{{- define "atb.postgresUrl" -}}
{{- printf "postgresql+psycopg://%s@%s:%v/%s?sslmode=%s" .user .host .port .database .sslmode -}}
{{- end -}}
