{{/* Names and labels. */}}

{{- define "relayq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "relayq.fullname" -}}
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

{{- define "relayq.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "relayq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relayq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "relayq.labels" -}}
helm.sh/chart: {{ include "relayq.chart" . }}
{{ include "relayq.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: relayq
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: (dict "ctx" $ "component" "api"). */}}
{{- define "relayq.componentLabels" -}}
{{ include "relayq.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "relayq.componentSelectorLabels" -}}
{{ include "relayq.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Image reference: (dict "ctx" $ "image" .Values.api.image). */}}
{{- /* Without a registry the runtime would pull relayq/* from Docker Hub, where anyone may publish that name. */}}
{{- define "relayq.image" -}}
{{- $registry := required "image.registry is required: set it to the registry that holds your relayq images (e.g. --set image.registry=ghcr.io/acme); an empty registry would pull relayq/* from Docker Hub, where anyone can publish that name" .ctx.Values.image.registry -}}
{{- $tag := .image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion -}}
{{ printf "%s/%s:%s" (trimSuffix "/" $registry) .image.repository $tag }}
{{- end }}

{{- define "relayq.serviceAccountName" -}}
{{ include "relayq.fullname" . }}
{{- end }}

{{- define "relayq.operatorServiceAccountName" -}}
{{ include "relayq.fullname" . }}-operator
{{- end }}

{{/* Object names shared between templates. */}}
{{- define "relayq.configName" -}}{{ include "relayq.fullname" . }}-config{{- end }}
{{- define "relayq.redisName" -}}{{ include "relayq.fullname" . }}-redis{{- end }}
{{- define "relayq.sentinelName" -}}{{ include "relayq.fullname" . }}-redis-sentinel{{- end }}
{{- define "relayq.mongodbName" -}}{{ include "relayq.fullname" . }}-mongodb{{- end }}
{{- define "relayq.basketsName" -}}{{ include "relayq.fullname" . }}-baskets{{- end }}

{{- define "relayq.authSecretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "relayq.fullname" .)) }}
{{- end }}

{{/* The Secret with the Redis connection (url, password, sentinels, master name). */}}
{{- define "relayq.redisSecretName" -}}
{{- if .Values.redis.enabled }}
{{- .Values.redis.auth.existingSecret | default (include "relayq.redisName" .) }}
{{- else }}
{{- .Values.redis.external.existingSecret | default (printf "%s-external" (include "relayq.redisName" .)) }}
{{- end }}
{{- end }}

{{/* True ("true") when clients reach Redis through Sentinel. */}}
{{- define "relayq.redisUsesSentinel" -}}
{{- if or .Values.redis.enabled .Values.redis.external.sentinels }}true{{ end }}
{{- end }}

{{- define "relayq.mongodbSecretName" -}}
{{- if .Values.mongodb.enabled }}
{{- .Values.mongodb.auth.existingSecret | default (include "relayq.mongodbName" .) }}
{{- else }}
{{- .Values.mongodb.external.existingSecret | default (printf "%s-external" (include "relayq.mongodbName" .)) }}
{{- end }}
{{- end }}

{{- define "relayq.signerName" -}}
{{- printf "%s-signer" (include "relayq.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "relayq.signerTokenSecretName" -}}
{{- .Values.relayer.signer.existingTokenSecret | default (printf "%s-signer-token" (include "relayq.fullname" .)) }}
{{- end }}

{{- define "relayq.relayerSecretName" -}}
{{- .Values.relayer.keypair.existingSecret | default (printf "%s-relayer-keypair" (include "relayq.fullname" .)) }}
{{- end }}

{{/* Host names of the in-cluster datastores. */}}
{{- define "relayq.sentinelHosts" -}}
{{- $name := include "relayq.sentinelName" . -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.redis.sentinel.replicas) -}}
{{- $hosts = append $hosts (printf "%s-%d.%s-headless.%s.svc:26379" $name $i $name $.Release.Namespace) -}}
{{- end -}}
{{ join "," $hosts }}
{{- end }}

{{- define "relayq.mongodbHosts" -}}
{{- $name := include "relayq.mongodbName" . -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.mongodb.replicas) -}}
{{- $hosts = append $hosts (printf "%s-%d.%s-headless.%s.svc:27017" $name $i $name $.Release.Namespace) -}}
{{- end -}}
{{ join "," $hosts }}
{{- end }}

{{/*
A Secret value that survives upgrades: the value given, else the one already
in the cluster, else a new random one. (dict "ctx" $ "secret" name "key" key "value" given "length" n)
*/}}
{{- define "relayq.secretValue" -}}
{{- if .value -}}
{{ .value | b64enc }}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $existing (hasKey ($existing.data | default dict) .key) -}}
{{ index $existing.data .key }}
{{- else -}}
{{- /* One random value per key and render: the Secret and the pods' checksums of it agree. */ -}}
{{- $generated := .ctx.Release.generatedSecrets | default dict -}}
{{- $_ := set .ctx.Release "generatedSecrets" $generated -}}
{{- $id := printf "%s/%s" .secret .key -}}
{{- if not (hasKey $generated $id) -}}
{{- $_ := set $generated $id (randAlphaNum (int (.length | default 32)) | b64enc) -}}
{{- end -}}
{{ get $generated $id }}
{{- end -}}
{{- end -}}
{{- end }}

{{/* Pod-level settings shared by every relayq pod. */}}
{{- define "relayq.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{- define "relayq.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end }}

{{- define "relayq.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "relayq.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Environment of every relayq process: datastores, then the shared ConfigMap. */}}
{{- define "relayq.datastoreEnv" -}}
{{- $redis := include "relayq.redisSecretName" . -}}
- name: RELAYQ_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ $redis }}, key: redis-url}
- name: RELAYQ_REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $redis }}, key: redis-password, optional: true}
{{- if include "relayq.redisUsesSentinel" . }}
- name: RELAYQ_REDIS_SENTINELS
  valueFrom:
    secretKeyRef: {name: {{ $redis }}, key: sentinels}
- name: RELAYQ_REDIS_SENTINEL_MASTER
  valueFrom:
    secretKeyRef: {name: {{ $redis }}, key: master-name}
- name: RELAYQ_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $redis }}, key: redis-password, optional: true}
{{- end }}
{{- $mongo := include "relayq.mongodbSecretName" . }}
{{- if .Values.mongodb.enabled }}
# Kubernetes expands $(MONGODB_PASSWORD) below; the password is URL-safe.
- name: MONGODB_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $mongo }}, key: mongodb-password}
- name: RELAYQ_MONGO_URL
  value: {{ printf "mongodb://%s:$(MONGODB_PASSWORD)@%s/?replicaSet=%s&authSource=admin" .Values.mongodb.username (include "relayq.mongodbHosts" .) .Values.mongodb.replicaSetName | quote }}
{{- else }}
- name: RELAYQ_MONGO_URL
  valueFrom:
    secretKeyRef:
      name: {{ $mongo }}
      key: {{ if .Values.mongodb.external.existingSecret }}{{ .Values.mongodb.external.existingSecretKey }}{{ else }}mongodb-url{{ end }}
{{- end }}
{{- end }}

{{/* Chain settings of the relayer (api and workers). */}}
{{- define "relayq.relayerEnv" -}}
{{- if .Values.relayer.enabled }}
- name: RELAYQ_SIGNER_URL
  value: http://{{ include "relayq.signerName" . }}:{{ .Values.relayer.signer.port }}
- name: RELAYQ_SIGNER_TOKEN_FILE
  value: /etc/relayq/signer-token/token
- name: RELAYQ_BASKETS_FILE
  value: /etc/relayq/baskets/baskets.json
{{- include "relayq.swapPoolsEnv" . }}
{{- end }}
{{- end }}

{{/* The pools file, when pools are declared (the API, the workers, reconcile and the signer). */}}
{{- define "relayq.swapPoolsEnv" -}}
{{- if .Values.relayer.swapPools }}
- name: RELAYQ_SWAP_POOLS_FILE
  value: /etc/relayq/baskets/pools.json
{{- end }}
{{- end }}

{{- define "relayq.relayerVolumes" -}}
{{- if .Values.relayer.enabled }}
- name: signer-token
  secret:
    secretName: {{ include "relayq.signerTokenSecretName" . }}
    defaultMode: 0440
    items:
      - key: token
        path: token
- name: baskets
  configMap:
    name: {{ include "relayq.basketsName" . }}
{{- end }}
{{- end }}

{{- define "relayq.relayerMounts" -}}
{{- if .Values.relayer.enabled }}
- name: signer-token
  mountPath: /etc/relayq/signer-token
  readOnly: true
- name: baskets
  mountPath: /etc/relayq/baskets
  readOnly: true
{{- end }}
{{- end }}

{{/* A name-to-value map as container env entries. */}}
{{- define "relayq.envMap" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Checksums that roll pods when their configuration changes. */}}
{{/*
Checksums of the ConfigMap and Secrets a relayq process reads (env and volumes),
as pod annotations: a change to any of them rolls the pods. A Secret the chart
renders is hashed as rendered; an existing one by its data in the cluster at
install/upgrade time (lookup; nothing under `helm template`).
*/}}
{{- define "relayq.configChecksums" -}}
checksum/config: {{ include (print .Template.BasePath "/config.yaml") . | sha256sum }}
checksum/auth: {{ include "relayq.secretContent" (dict "ctx" . "name" (include "relayq.authSecretName" .) "template" "/auth-secret.yaml" "existing" .Values.auth.existingSecret) | sha256sum }}
checksum/redis: {{ include "relayq.redisSecretChecksum" . }}
checksum/mongodb: {{ include "relayq.mongodbSecretChecksum" . }}
{{- if .Values.relayer.enabled }}
checksum/relayer: {{ printf "%s%s" (include (print .Template.BasePath "/relayer.yaml") .) (include "relayq.secretContent" (dict "ctx" . "name" (include "relayq.relayerSecretName" .) "template" "" "existing" .Values.relayer.keypair.existingSecret)) | sha256sum }}
checksum/signer: {{ include "relayq.secretContent" (dict "ctx" . "name" (include "relayq.signerTokenSecretName" .) "template" "/signer/token-secret.yaml" "existing" .Values.relayer.signer.existingTokenSecret) | sha256sum }}
{{- end }}
{{- end }}

{{- define "relayq.redisSecretChecksum" -}}
{{- $existing := ternary .Values.redis.auth.existingSecret .Values.redis.external.existingSecret .Values.redis.enabled -}}
{{- include "relayq.secretContent" (dict "ctx" . "name" (include "relayq.redisSecretName" .) "template" "/redis/secret.yaml" "existing" $existing) | sha256sum -}}
{{- end }}

{{- define "relayq.mongodbSecretChecksum" -}}
{{- $existing := ternary .Values.mongodb.auth.existingSecret .Values.mongodb.external.existingSecret .Values.mongodb.enabled -}}
{{- include "relayq.secretContent" (dict "ctx" . "name" (include "relayq.mongodbSecretName" .) "template" "/mongodb/secret.yaml" "existing" $existing) | sha256sum -}}
{{- end }}

{{/* A Secret's content for a checksum: (dict "ctx" $ "name" n "template" "/x.yaml" "existing" nameOrEmpty). */}}
{{- define "relayq.secretContent" -}}
{{- if .existing -}}
{{- $found := lookup "v1" "Secret" .ctx.Release.Namespace .name | default dict -}}
{{- get $found "data" | default dict | toJson -}}
{{- else if .template -}}
{{- include (print .ctx.Template.BasePath .template) .ctx -}}
{{- end -}}
{{- end }}

{{/* Pod spec of the MongoDB init Job (its hash names the Job). */}}
{{- define "relayq.mongodbInitPodSpec" -}}
{{- $name := include "relayq.mongodbName" . -}}
{{- $secret := include "relayq.mongodbSecretName" . -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: false
restartPolicy: OnFailure
securityContext:
  runAsNonRoot: true
  runAsUser: 999
  runAsGroup: 999
  seccompProfile: {type: RuntimeDefault}
containers:
  - name: init
    image: {{ .Values.mongodb.image.repository }}:{{ .Values.mongodb.image.tag }}
    imagePullPolicy: {{ .Values.mongodb.image.pullPolicy }}
    command: ["/bin/sh", "/scripts/init.sh"]
    env:
      - name: MEMBERS
        value: {{ include "relayq.mongodbHosts" . | quote }}
      - name: REPLICA_SET
        value: {{ .Values.mongodb.replicaSetName | quote }}
      - name: APP_USER
        value: {{ .Values.mongodb.username | quote }}
      - name: APP_DATABASE
        value: {{ .Values.mongodb.database | quote }}
      - name: ROOT_PASSWORD
        valueFrom:
          secretKeyRef: {name: {{ $secret }}, key: mongodb-root-password}
      - name: APP_PASSWORD
        valueFrom:
          secretKeyRef: {name: {{ $secret }}, key: mongodb-password}
      - name: HOME
        value: /tmp
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      runAsNonRoot: true
      capabilities: {drop: [ALL]}
    resources:
      requests: {cpu: 50m, memory: 128Mi}
      limits: {memory: 256Mi}
    volumeMounts:
      - {name: scripts, mountPath: /scripts, readOnly: true}
      - {name: tmp, mountPath: /tmp}
volumes:
  - name: scripts
    configMap:
      name: {{ $name }}-init
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- end }}

{{/* NetworkPolicy ports from a list of TCP port numbers: [443] -> [{port: 443, protocol: TCP}]. */}}
{{- define "relayq.npPorts" -}}
{{- $ports := list -}}
{{- range $p := . -}}
{{- $ports = append $ports (dict "port" (int $p) "protocol" "TCP") -}}
{{- end -}}
{{ toYaml $ports }}
{{- end }}

{{/* TLS to an external Redis: the CA certificate, mounted where the rediss:// URL's ssl_ca_certs points. */}}
{{- define "relayq.redisTlsVolumes" -}}
{{- $tls := .Values.redis.external.tls }}
{{- if and (not .Values.redis.enabled) $tls.caSecret }}
- name: redis-tls
  secret:
    secretName: {{ $tls.caSecret }}
    defaultMode: 0444
    items:
      - {key: {{ $tls.caKey }}, path: {{ $tls.caKey }}}
{{- end }}
{{- end }}

{{- define "relayq.redisTlsMounts" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.external.tls.caSecret }}
- name: redis-tls
  mountPath: /etc/relayq/redis-tls
  readOnly: true
{{- end }}
{{- end }}
