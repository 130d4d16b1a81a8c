{{/*
Chart name: the alias when the chart is a dependency with an alias, else "alembic-fleet".
*/}}
{{- define "alembic-fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-<name>", or the release name alone when it already holds the name.
Truncated to 52 characters: Kubernetes adds "-<index>-<random>" to the Job's pod names.
*/}}
{{- define "alembic-fleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "alembic-fleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "alembic-fleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "alembic-fleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "alembic-fleet.labels" -}}
helm.sh/chart: {{ include "alembic-fleet.chart" . }}
{{ include "alembic-fleet.selectorLabels" . }}
app.kubernetes.io/version: {{ include "alembic-fleet.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: migrations
app.kubernetes.io/part-of: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "alembic-fleet.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag | toString }}
{{- end }}

{{- define "alembic-fleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "alembic-fleet.imageTag" .) }}
{{- end }}

{{/*
The Secret holding the database URL: the existing one, or the one this chart creates.
Exactly one of database.existingSecret and database.uri must be set: a Job without a URL
would make fleet look for its embedded PostgreSQL, which the image does not have.
*/}}
{{- define "alembic-fleet.databaseSecretName" -}}
{{- if and .Values.database.existingSecret .Values.database.uri }}
{{- fail "alembic-fleet: set only one of database.existingSecret and database.uri" }}
{{- else if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if .Values.database.uri }}
{{- printf "%s-database" (include "alembic-fleet.fullname" .) }}
{{- else }}
{{- fail "alembic-fleet: set database.existingSecret (the name of a Secret holding the database URL) or database.uri" }}
{{- end }}
{{- end }}

{{- define "alembic-fleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "alembic-fleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "alembic-fleet.shards" -}}
{{- int (default 1 .Values.migrations.shards) }}
{{- end }}

{{/*
Where the Job's tenants come from: "config" (the configured source; TENANTS not set) or
"list" (migrations.tenants, as TENANTS). A list with tenantSource config is refused rather
than ignored: it is what values files written for earlier versions of the chart hold.
*/}}
{{- define "alembic-fleet.tenantSource" -}}
{{- $source := default "config" .Values.migrations.tenantSource }}
{{- if and (eq $source "list") (not .Values.migrations.tenants) }}
{{- fail "alembic-fleet: migrations.tenantSource is \"list\" but migrations.tenants is empty: name the tenants, or use tenantSource \"config\" (the tenants of fleet's configured source)" }}
{{- else if and (eq $source "config") .Values.migrations.tenants }}
{{- fail "alembic-fleet: migrations.tenants is set but migrations.tenantSource is \"config\", which migrates the tenants of fleet's configured source: remove the list (one tenant list: `fleet tenants add` records to the source), or set tenantSource \"list\" to migrate exactly these tenants" }}
{{- end }}
{{- $source }}
{{- end }}

{{/*
FLEET_DEADLINE of `fleet migrate`, in seconds, or "" when none is set.
auto: the share of job.activeDeadlineSeconds one pod has (the deadline counts the whole Job:
a sharded Job with parallelism below shards runs its pods in rounds), less the init
container's wait and migrations.deadlineMargin.
*/}}
{{- define "alembic-fleet.deadline" -}}
{{- $deadline := .Values.migrations.deadline }}
{{- $jobDeadline := .Values.job.activeDeadlineSeconds }}
{{- if kindIs "invalid" $deadline }}
{{- else if eq (toString $deadline) "auto" }}
{{- if not (kindIs "invalid" $jobDeadline) }}
{{- $shards := int (include "alembic-fleet.shards" .) }}
{{- $parallel := int (default $shards .Values.migrations.parallelism) }}
{{- $waves := div (sub (add $shards $parallel) 1) $parallel }}
{{- $kept := add (int (ceil .Values.migrations.waitTimeout)) (int (default 0 .Values.migrations.deadlineMargin)) }}
{{- $seconds := sub (div (int $jobDeadline) $waves) $kept }}
{{- if lt $seconds 1 }}
{{- fail (printf "alembic-fleet: job.activeDeadlineSeconds (%d) leaves `fleet migrate` no time: per pod %d s, less migrations.waitTimeout and migrations.deadlineMargin (%d s); raise activeDeadlineSeconds (and Helm's --timeout), or set migrations.deadline" (int $jobDeadline) (div (int $jobDeadline) $waves) $kept) }}
{{- end }}
{{- $seconds }}
{{- end }}
{{- else }}
{{- if and (not (kindIs "invalid" $jobDeadline)) (ge (int $deadline) (int $jobDeadline)) }}
{{- fail (printf "alembic-fleet: migrations.deadline (%d) must stay below job.activeDeadlineSeconds (%d): it is one pod's budget within the Job's" (int $deadline) (int $jobDeadline)) }}
{{- end }}
{{- int $deadline }}
{{- end }}
{{- end }}

{{/*
What the Job does when `fleet migrate` exits with 4 (stopped by its deadline; a rerun
resumes). An automatic deadline uses up the Job's own: no other pod would have time, so the
Job (or, with backoffLimitPerIndex, only this shard's index) fails at once instead of
starting a pod that the Job's deadline would kill mid-target. An explicit per-pod deadline
leaves room: a new pod resumes, not counted in backoffLimit.
*/}}
{{- define "alembic-fleet.budgetExitAction" -}}
{{- $deadline := .Values.migrations.deadline }}
{{- if and (not (kindIs "invalid" $deadline)) (ne (toString $deadline) "auto") }}
{{- "Ignore" }}
{{- else if and (gt (int (include "alembic-fleet.shards" .)) 1) (not (kindIs "invalid" .Values.job.backoffLimitPerIndex)) }}
{{- "FailIndex" }}
{{- else }}
{{- "FailJob" }}
{{- end }}
{{- end }}

{{/*
Environment of `fleet migrate` only: its deadline and where its metrics and traces go.
*/}}
{{- define "alembic-fleet.migrateEnv" -}}
{{- with include "alembic-fleet.deadline" . }}
- name: FLEET_DEADLINE
  value: {{ . | quote }}
{{- end }}
{{- with .Values.telemetry.metricsPush }}
- name: FLEET_METRICS_PUSH
  value: {{ . | quote }}
- name: FLEET_METRICS_GROUPING
  value: {{ printf "namespace=%s,release=%s" $.Release.Namespace $.Release.Name | quote }}
{{- end }}
{{- with .Values.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ default (include "alembic-fleet.fullname" $) $.Values.telemetry.serviceName | quote }}
{{- end }}
{{- end }}

{{/*
Environment of both containers: the database URLs, the tenants, the configuration path.
*/}}
{{- define "alembic-fleet.env" -}}
- name: {{ .Values.database.secretKey }}
  valueFrom:
    secretKeyRef:
      name: {{ include "alembic-fleet.databaseSecretName" . }}
      key: {{ .Values.database.secretKey }}
{{- range .Values.database.extraEnvFromSecret }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .secretKey }}
      {{- if hasKey . "optional" }}
      optional: {{ .optional }}
      {{- end }}
{{- end }}
{{- if eq (include "alembic-fleet.tenantSource" .) "list" }}
- name: TENANTS
  value: {{ join " " .Values.migrations.tenants | quote }}
{{- end }}
{{- with .Values.migrations.configPath }}
- name: FLEET_CONFIG
  value: {{ . | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Arguments of `fleet migrate`.
*/}}
{{- define "alembic-fleet.migrateArgs" -}}
- migrate
{{- range .Values.migrations.services }}
- {{ . | quote }}
{{- end }}
- --jobs
- {{ .Values.migrations.jobs | toString | quote }}
- --lock-timeout
- {{ .Values.migrations.lockTimeout | toString | quote }}
- --retries
- {{ .Values.migrations.retries | toString | quote }}
{{- if not (kindIs "invalid" .Values.migrations.lockWait) }}
- --lock-wait
- {{ .Values.migrations.lockWait | toString | quote }}
{{- end }}
{{- if not (kindIs "invalid" .Values.migrations.statementTimeout) }}
- --statement-timeout
- {{ .Values.migrations.statementTimeout | toString | quote }}
{{- end }}
{{- if gt (int (include "alembic-fleet.shards" .)) 1 }}
- --shard
- auto
{{- end }}
{{- range .Values.migrations.extraArgs }}
- {{ . | quote }}
{{- end }}
- --json
{{- end }}
