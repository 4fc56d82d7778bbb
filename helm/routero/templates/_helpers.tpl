{{/* The release's full name, at most 63 characters. */}}
{{- define "routero.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; pass (dict "root" $ "component" "data-plane"). */}}
{{- define "routero.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "routero.selector" . }}
{{- end -}}

{{/* Labels a component's selector matches. */}}
{{- define "routero.selector" -}}
app.kubernetes.io/name: routero
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "routero.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end -}}

{{- define "routero.secretName" -}}
{{ .Values.secrets.existingSecret | default (printf "%s-secrets" (include "routero.fullname" .)) }}
{{- end -}}

{{- define "routero.serviceAccountName" -}}
{{ .Values.serviceAccount.name | default (include "routero.fullname" .) }}
{{- end -}}

{{/* An environment variable from a key of the chart's Secret. */}}
{{- define "routero.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "routero.secretName" .root }}
      key: {{ .key }}
{{- if .optional }}
      optional: true
{{- end }}
{{- end -}}

{{/* Restricted pod security: non-root, no privilege escalation, seccomp RuntimeDefault. */}}
{{- define "routero.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "routero.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The pod fields every workload shares. */}}
{{- define "routero.podCommon" -}}
serviceAccountName: {{ include "routero.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- include "routero.podSecurity" . | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Cerbos beside a service that decides, on loopback only, on the chart's policies. */}}
{{- define "routero.cerbosSidecar" -}}
- name: cerbos
  image: {{ .Values.cerbos.image }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["server", "--config=/config/cerbos.yaml"]
  securityContext:
    {{- include "routero.containerSecurity" . | nindent 4 }}
  readinessProbe:
    exec:
      command: ["/cerbos", "healthcheck", "--config=/config/cerbos.yaml"]
  resources:
    {{- toYaml .Values.cerbos.resources | nindent 4 }}
  volumeMounts:
    - name: policies
      mountPath: /policies
      readOnly: true
    - name: cerbos-config
      mountPath: /config
      readOnly: true
{{- end -}}

{{/* The volumes of the policies and Cerbos's configuration. */}}
{{- define "routero.policyVolumes" -}}
- name: policies
  configMap:
    name: {{ include "routero.fullname" . }}-policies
    items:
      {{- range $path, $_ := .Files.Glob "policies/**.yaml" }}
      - key: {{ trimPrefix "policies/" $path | replace "/" "__" }}
        path: {{ trimPrefix "policies/" $path }}
      {{- end }}
- name: cerbos-config
  configMap:
    name: {{ include "routero.fullname" . }}-policies
    items:
      - key: cerbos.yaml
        path: cerbos.yaml
{{- end -}}

{{/* Probes of an HTTP listener (port name `port`), over HTTPS when `https`. */}}
{{- define "routero.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
    scheme: {{ ternary "HTTPS" "HTTP" (not (empty .https)) }}
  periodSeconds: 10
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .port }}
    scheme: {{ ternary "HTTPS" "HTTP" (not (empty .https)) }}
  periodSeconds: 5
{{- end -}}

{{/* HTTPS on a listener from a kubernetes.io/tls Secret (`secret`), its files as `cert` and
`key` settings; renewals of the Secret are served without a restart. */}}
{{- define "routero.httpsEnv" -}}
{{- if .secret -}}
- name: {{ .cert }}
  value: /etc/routero/https/tls.crt
- name: {{ .key }}
  value: /etc/routero/https/tls.key
{{- end -}}
{{- end -}}

{{- define "routero.httpsMount" -}}
{{- if . -}}
- name: https
  mountPath: /etc/routero/https
  readOnly: true
{{- end -}}
{{- end -}}

{{- define "routero.httpsVolume" -}}
{{- if . -}}
- name: https
  secret:
    secretName: {{ . }}
{{- end -}}
{{- end -}}

{{/* Kafka: the brokers, and TLS to them unless plaintext is explicitly allowed. */}}
{{- define "routero.kafkaEnv" -}}
- name: ROUTERO_KAFKA_BROKERS
  value: {{ required "kafka.brokers: the Kafka bootstrap servers (split)" .Values.kafka.brokers | quote }}
{{- if .Values.kafka.tls.secretName }}
- name: ROUTERO_KAFKA_TLS_CA
  value: /etc/routero/kafka/ca.crt
{{- if .Values.kafka.tls.clientCertificate }}
- name: ROUTERO_KAFKA_TLS_CERT
  value: /etc/routero/kafka/tls.crt
- name: ROUTERO_KAFKA_TLS_KEY
  value: /etc/routero/kafka/tls.key
{{- end }}
{{- else if .Values.kafka.allowPlaintext }}
- name: ROUTERO_ALLOW_PLAINTEXT_KAFKA
  value: "true"
{{- else }}
{{- fail "kafka.tls.secretName: a Secret with the brokers' CA (ca.crt; with kafka.tls.clientCertificate also tls.crt and tls.key), or kafka.allowPlaintext=true on a network you trust" }}
{{- end }}
{{- end -}}

{{- define "routero.kafkaTlsMount" -}}
{{- if .Values.kafka.tls.secretName -}}
- name: kafka-tls
  mountPath: /etc/routero/kafka
  readOnly: true
{{- end -}}
{{- end -}}

{{/* The brokers' CA, and the client certificate and key only when they are presented. */}}
{{- define "routero.kafkaTlsVolume" -}}
{{- if .Values.kafka.tls.secretName -}}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.secretName }}
    {{- if not .Values.kafka.tls.clientCertificate }}
    items:
      - key: ca.crt
        path: ca.crt
    {{- end }}
{{- end -}}
{{- end -}}

{{/* Settings both planes share: the data-plane key, provider egress, trusted proxies. */}}
{{- define "routero.sharedEnv" -}}
{{ include "routero.secretEnv" (dict "root" . "name" "ROUTERO_DATA_PLANE_KEY" "key" "data-plane-key") }}
{{- with .Values.egressAllow }}
- name: ROUTERO_EGRESS_ALLOW
  value: {{ . | quote }}
{{- end }}
{{- with .Values.trustedProxies }}
- name: ROUTERO_TRUSTED_PROXIES
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The snapshot channel is TLS unless plaintext is explicitly allowed; never silently open. */}}
{{- define "routero.snapshotTlsOn" -}}
{{- if .Values.snapshotTls.secretName -}}
true
{{- else if not .Values.snapshotTls.allowPlaintext -}}
{{- fail "snapshotTls.secretName: a TLS Secret (tls.crt, tls.key, ca.crt) for the snapshot channel, or snapshotTls.allowPlaintext=true on a network you trust" -}}
{{- end -}}
{{- end -}}

{{- define "routero.snapshotTlsServerEnv" -}}
{{- if include "routero.snapshotTlsOn" . -}}
- name: ROUTERO_GRPC_TLS_CERT
  value: /etc/routero/tls/tls.crt
- name: ROUTERO_GRPC_TLS_KEY
  value: /etc/routero/tls/tls.key
{{- else -}}
- name: ROUTERO_ALLOW_PLAINTEXT_GRPC
  value: "true"
{{- end -}}
{{- end -}}

{{/* Where and how a data plane reaches the snapshot service. */}}
{{- define "routero.snapshotTlsClientEnv" -}}
{{- $host := printf "%s-snapshots" (include "routero.fullname" .) -}}
{{- if include "routero.snapshotTlsOn" . -}}
- name: ROUTERO_CONTROL_PLANE_URL
  value: {{ printf "https://%s:8082" $host }}
- name: ROUTERO_CONTROL_PLANE_CA
  value: /etc/routero/tls/ca.crt
- name: ROUTERO_CONTROL_PLANE_TLS_DOMAIN
  value: {{ $host }}
{{- else -}}
- name: ROUTERO_CONTROL_PLANE_URL
  value: {{ printf "http://%s:8082" $host }}
- name: ROUTERO_ALLOW_PLAINTEXT_GRPC
  value: "true"
{{- end -}}
{{- end -}}

{{- define "routero.snapshotTlsMount" -}}
{{- if include "routero.snapshotTlsOn" . -}}
- name: snapshot-tls
  mountPath: /etc/routero/tls
  readOnly: true
{{- end -}}
{{- end -}}

{{/* The server mounts its certificate and key; data planes (ca_only) the CA alone. */}}
{{- define "routero.snapshotTlsVolume" -}}
{{- if include "routero.snapshotTlsOn" .root -}}
- name: snapshot-tls
  secret:
    secretName: {{ .root.Values.snapshotTls.secretName }}
    {{- if .caOnly }}
    items:
      - key: ca.crt
        path: ca.crt
    {{- end }}
{{- end -}}
{{- end -}}
