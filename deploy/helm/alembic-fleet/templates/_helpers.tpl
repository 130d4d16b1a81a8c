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
{{- with .Values.migrations.tenants }}
- name: TENANTS
  value: {{ join " " . | quote }}
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
