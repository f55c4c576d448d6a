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
{{- include "relayq.mongodbTlsEnv" . }}
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
{{- include "relayq.datastoreTlsChecksums" . }}
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
      {{- if .Values.mongodb.tls.enabled }}
      - name: TLS_CA_FILE
        value: /tls/ca.crt
      {{- end }}
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
      {{- if .Values.mongodb.tls.enabled }}
      - {name: tls, mountPath: /tls, readOnly: true}
      {{- end }}
volumes:
  - name: scripts
    configMap:
      name: {{ $name }}-init
  {{- if .Values.mongodb.tls.enabled }}
  - name: tls
    secret:
      secretName: {{ include "relayq.mongodbTlsServerSecretName" . }}
      defaultMode: 0444
      items:
        - {key: ca.crt, path: ca.crt}
  {{- end }}
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

{{/*
TLS to the datastores. In the cluster (redis.tls.enabled, mongodb.tls.enabled)
the servers listen on TLS only and clients trust the CA of the TLS Secret; to
an external one, clients trust the CA Secret given (redis.external.tls,
mongodb.external.tls). Clients mount only the CA (and their own certificate,
if any), never a server's key.
*/}}
{{- define "relayq.redisTls" -}}
{{- if .Values.redis.enabled }}{{ if .Values.redis.tls.enabled }}true{{ end }}{{ else if .Values.redis.external.tls.caSecret }}true{{ end }}
{{- end }}

{{- define "relayq.mongodbTls" -}}
{{- if .Values.mongodb.enabled }}{{ if .Values.mongodb.tls.enabled }}true{{ end }}{{ else if .Values.mongodb.external.tls.caSecret }}true{{ end }}
{{- end }}

{{/* The Secret holding the in-cluster servers' certificate, key and CA. */}}
{{- define "relayq.redisTlsServerSecretName" -}}
{{- .Values.redis.tls.existingSecret | default (printf "%s-tls" (include "relayq.redisName" .)) }}
{{- end }}

{{- define "relayq.mongodbTlsServerSecretName" -}}
{{- .Values.mongodb.tls.existingSecret | default (printf "%s-tls" (include "relayq.mongodbName" .)) }}
{{- end }}

{{/* The Secret and key clients read the CA from. */}}
{{- define "relayq.redisTlsCaSecretName" -}}
{{- if .Values.redis.enabled }}{{ include "relayq.redisTlsServerSecretName" . }}{{ else }}{{ .Values.redis.external.tls.caSecret }}{{ end }}
{{- end }}

{{- define "relayq.redisTlsCaKey" -}}
{{- if .Values.redis.enabled }}ca.crt{{ else }}{{ .Values.redis.external.tls.caKey }}{{ end }}
{{- end }}

{{- define "relayq.mongodbTlsCaSecretName" -}}
{{- if .Values.mongodb.enabled }}{{ include "relayq.mongodbTlsServerSecretName" . }}{{ else }}{{ .Values.mongodb.external.tls.caSecret }}{{ end }}
{{- end }}

{{- define "relayq.mongodbTlsCaKey" -}}
{{- if .Values.mongodb.enabled }}ca.crt{{ else }}{{ .Values.mongodb.external.tls.caKey }}{{ end }}
{{- end }}

{{/*
A TLS Secret's data (ca.crt, tls.crt, tls.key), generated: the one already in
the cluster when there is one (an upgrade keeps it), else a new CA and a
certificate for `dns` valid `days`, drawn once per render so the Secret and
the pods' checksums agree. `helm template` has no cluster: each run draws anew.
(dict "ctx" $ "secret" name "cn" commonName "dns" (list ...) "days" n)
*/}}
{{- define "relayq.tlsSecretData" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- $data := dict -}}
{{- if and $existing (hasKey ($existing.data | default dict) "tls.key") -}}
{{- $data = $existing.data -}}
{{- else -}}
{{- $generated := .ctx.Release.generatedSecrets | default dict -}}
{{- $_ := set .ctx.Release "generatedSecrets" $generated -}}
{{- $id := printf "%s/tls" .secret -}}
{{- if not (hasKey $generated $id) -}}
{{- $ca := genCA (printf "%s-ca" .cn) (int .days) -}}
{{- $cert := genSignedCert .cn (list "127.0.0.1") .dns (int .days) $ca -}}
{{- $_ := set $generated $id (dict "ca.crt" ($ca.Cert | b64enc) "tls.crt" ($cert.Cert | b64enc) "tls.key" ($cert.Key | b64enc)) -}}
{{- end -}}
{{- $data = get $generated $id -}}
{{- end -}}
ca.crt: {{ index $data "ca.crt" }}
tls.crt: {{ index $data "tls.crt" }}
tls.key: {{ index $data "tls.key" }}
{{- end }}

{{/* Names the in-cluster Redis and Sentinel certificate must hold. */}}
{{- define "relayq.redisTlsNames" -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list "localhost" -}}
{{- range $name := list (include "relayq.redisName" .) (include "relayq.sentinelName" .) -}}
{{- $names = concat $names (list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "*.%s-headless.%s.svc" $name $ns) (printf "*.%s-headless.%s.svc.cluster.local" $name $ns)) -}}
{{- end -}}
{{ toJson $names }}
{{- end }}

{{- define "relayq.mongodbTlsNames" -}}
{{- $ns := .Release.Namespace -}}
{{- $name := include "relayq.mongodbName" . -}}
{{ toJson (list "localhost" (printf "*.%s-headless.%s.svc" $name $ns) (printf "*.%s-headless.%s.svc.cluster.local" $name $ns)) }}
{{- end }}

{{/* Checksums of the TLS Secrets a pod mounts: a new certificate or CA rolls it. */}}
{{- define "relayq.redisTlsChecksum" -}}
{{- $generated := and .Values.redis.enabled (not .Values.redis.tls.existingSecret) -}}
{{- include "relayq.secretContent" (dict "ctx" . "name" (include "relayq.redisTlsCaSecretName" .) "template" (ternary "/redis/tls-secret.yaml" "" $generated) "existing" (ternary "" (include "relayq.redisTlsCaSecretName" .) $generated)) | sha256sum -}}
{{- end }}

{{- define "relayq.mongodbTlsChecksum" -}}
{{- $generated := and .Values.mongodb.enabled (not .Values.mongodb.tls.existingSecret) -}}
{{- $content := include "relayq.secretContent" (dict "ctx" . "name" (include "relayq.mongodbTlsCaSecretName" .) "template" (ternary "/mongodb/tls-secret.yaml" "" $generated) "existing" (ternary "" (include "relayq.mongodbTlsCaSecretName" .) $generated)) -}}
{{- with .Values.mongodb.external.tls.clientSecret }}{{ if not $.Values.mongodb.enabled }}
{{- $content = print $content (include "relayq.secretContent" (dict "ctx" $ "name" . "template" "" "existing" .)) -}}
{{- end }}{{ end -}}
{{- $content | sha256sum -}}
{{- end }}

{{- define "relayq.datastoreTlsChecksums" -}}
{{- if include "relayq.redisTls" . }}
checksum/redis-tls: {{ include "relayq.redisTlsChecksum" . }}
{{- end }}
{{- if include "relayq.mongodbTls" . }}
checksum/mongodb-tls: {{ include "relayq.mongodbTlsChecksum" . }}
{{- end }}
{{- end }}

{{/* The CA of Redis, mounted where the rediss:// URL's ssl_ca_certs points. */}}
{{- define "relayq.redisTlsVolumes" -}}
{{- if include "relayq.redisTls" . }}
- name: redis-tls
  secret:
    secretName: {{ include "relayq.redisTlsCaSecretName" . }}
    defaultMode: 0444
    items:
      - {key: {{ include "relayq.redisTlsCaKey" . }}, path: {{ include "relayq.redisTlsCaKey" . }}}
{{- end }}
{{- end }}

{{- define "relayq.redisTlsMounts" -}}
{{- if include "relayq.redisTls" . }}
- name: redis-tls
  mountPath: /etc/relayq/redis-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* The CA of MongoDB (RELAYQ_MONGO_TLS_CA_FILE) and, to an external one, a client certificate. */}}
{{- define "relayq.mongodbTlsVolumes" -}}
{{- if include "relayq.mongodbTls" . }}
- name: mongodb-tls
  secret:
    secretName: {{ include "relayq.mongodbTlsCaSecretName" . }}
    defaultMode: 0444
    items:
      - {key: {{ include "relayq.mongodbTlsCaKey" . }}, path: {{ include "relayq.mongodbTlsCaKey" . }}}
{{- if and (not .Values.mongodb.enabled) .Values.mongodb.external.tls.clientSecret }}
- name: mongodb-client-tls
  secret:
    secretName: {{ .Values.mongodb.external.tls.clientSecret }}
    defaultMode: 0440
    items:
      - {key: {{ .Values.mongodb.external.tls.clientKey }}, path: {{ .Values.mongodb.external.tls.clientKey }}}
{{- end }}
{{- end }}
{{- end }}

{{- define "relayq.mongodbTlsMounts" -}}
{{- if include "relayq.mongodbTls" . }}
- name: mongodb-tls
  mountPath: /etc/relayq/mongodb-tls
  readOnly: true
{{- if and (not .Values.mongodb.enabled) .Values.mongodb.external.tls.clientSecret }}
- name: mongodb-client-tls
  mountPath: /etc/relayq/mongodb-client-tls
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "relayq.mongodbTlsEnv" -}}
{{- if include "relayq.mongodbTls" . }}
- name: RELAYQ_MONGO_TLS_CA_FILE
  value: /etc/relayq/mongodb-tls/{{ include "relayq.mongodbTlsCaKey" . }}
{{- if and (not .Values.mongodb.enabled) .Values.mongodb.external.tls.clientSecret }}
- name: RELAYQ_MONGO_TLS_CERTIFICATE_KEY_FILE
  value: /etc/relayq/mongodb-client-tls/{{ .Values.mongodb.external.tls.clientKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* Both datastores' TLS files, for the processes that open both. */}}
{{- define "relayq.datastoreTlsVolumes" -}}
{{- print (include "relayq.redisTlsVolumes" . | trim) "\n" (include "relayq.mongodbTlsVolumes" . | trim) | trim }}
{{- end }}

{{- define "relayq.datastoreTlsMounts" -}}
{{- print (include "relayq.redisTlsMounts" . | trim) "\n" (include "relayq.mongodbTlsMounts" . | trim) | trim }}
{{- end }}
