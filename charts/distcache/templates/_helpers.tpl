{{/*
Helpers of the DistCache chart. Every name here starts with "distcache.".
*/}}

{{/* The chart name (nameOverride wins). */}}
{{- define "distcache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name: the release name, with the chart name appended unless
it already contains it ("distcache" -> "distcache", "prod" -> "prod-distcache"). */}}
{{- define "distcache.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's objects: Deployment, ServiceAccount, ClusterRole, bindings. */}}
{{- define "distcache.operator.fullname" -}}
{{- printf "%s-operator" (include "distcache.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "distcache.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object the chart renders. */}}
{{- define "distcache.labels" -}}
helm.sh/chart: {{ include "distcache.chart" . }}
app.kubernetes.io/part-of: distcache
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The operator pods' selector. app.kubernetes.io/name stays distcache-operator (what the
operator's docs and tests select on); the instance label keeps two releases apart. */}}
{{- define "distcache.operator.selectorLabels" -}}
app.kubernetes.io/name: distcache-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "distcache.operator.labels" -}}
{{ include "distcache.labels" . }}
{{ include "distcache.operator.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "distcache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "distcache.operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "distcache.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "distcache.nodeImage" -}}
{{- default (printf "distcache/node:%s" .Chart.AppVersion) .Values.operator.defaultNodeImage -}}
{{- end -}}

{{/* kopf's peering object (operator.replicaCount > 1): its name. */}}
{{- define "distcache.peeringName" -}}
{{- include "distcache.operator.fullname" . -}}
{{- end -}}

{{/* Whether the Prometheus Operator objects are rendered: forced by
metrics.serviceMonitor.enabled, or detected from the cluster's API groups. */}}
{{- define "distcache.monitoring" -}}
{{- if or .Values.metrics.serviceMonitor.enabled (and .Values.metrics.serviceMonitor.autodetect (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{/* The kopf command line when the chart must choose it (peering or a namespace list);
otherwise the image's entrypoint runs (python -m distcache_operator: --standalone,
--all-namespaces, liveness on :8080). */}}
{{- define "distcache.operator.customCommand" -}}
{{- if or (gt (int .Values.operator.replicaCount) 1) .Values.operator.watchNamespaces (ne (int .Values.operator.healthPort) 8080) -}}
true
{{- end -}}
{{- end -}}

{{/* The kopf launcher of the custom command: the image's module (distcache_operator.kopf_main)
under `kopf run` with the chart's flags. With peering, each pod's priority comes from a hash of
its name, so that two replicas never share one (kopf pauses every peer of equal priority). */}}
{{- define "distcache.operator.launcher" -}}
import hashlib, os
from kopf.cli import main
args = ["run", "--liveness=http://0.0.0.0:{{ int .Values.operator.healthPort }}/healthz"]
{{- if gt (int .Values.operator.replicaCount) 1 }}
args += ["--peering={{ include "distcache.peeringName" . }}",
         "--priority=%d" % (1 + int(hashlib.sha256(os.environ["POD_NAME"].encode()).hexdigest()[:7], 16))]
{{- else }}
args += ["--standalone"]
{{- end }}
{{- if .Values.operator.watchNamespaces }}
args += [{{ range $i, $ns := .Values.operator.watchNamespaces }}{{ if $i }}, {{ end }}"--namespace={{ $ns }}"{{ end }}]
{{- else }}
args += ["--all-namespaces"]
{{- end }}
args += ["-m", "distcache_operator.kopf_main"]
main.main(args=args, prog_name="distcache-operator", standalone_mode=False)
{{- end -}}

{{/* Checks that need two values at once (the schema checks each value alone). */}}
{{- define "distcache.validate" -}}
{{- $c := .Values.cache -}}
{{- if and $c.enabled (gt (int $c.replicas) 1) (gt (int $c.replicationFactor) (int $c.replicas)) -}}
{{- fail (printf "cache.replicationFactor (%d) must not exceed cache.replicas (%d) unless replicas is 0 or 1" (int $c.replicationFactor) (int $c.replicas)) -}}
{{- end -}}
{{- if and .Values.operator.watchNamespaces $c.enabled (not (has .Release.Namespace .Values.operator.watchNamespaces)) -}}
{{- fail (printf "cache.enabled creates the DistCache in %s, which operator.watchNamespaces (%s) leaves out" .Release.Namespace (join ", " .Values.operator.watchNamespaces)) -}}
{{- end -}}
{{- end -}}

{{/* The Secret cert-manager writes for the chart's DistCache (cache.tls.certManager): the
operator's Certificate names <name>-tls. */}}
{{- define "distcache.certManagerSecret" -}}
{{- printf "%s-tls" .Values.cache.name -}}
{{- end -}}
