{{/* Names, labels and checks shared by the tgrelay templates. */}}

{{- define "tgrelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tgrelay.fullname" -}}
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

{{- define "tgrelay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tgrelay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tgrelay.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tgrelay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The image reference: global.imageRegistry (a parent chart's, for every image), else
image.registry, before the repository; by digest when one is given (a tag can be moved, a
digest cannot), else by tag. */}}
{{- define "tgrelay.image" -}}
{{- $global := .Values.global | default dict -}}
{{- $registry := $global.imageRegistry | default .Values.image.registry | default "" -}}
{{- $repository := .Values.image.repository -}}
{{- if $registry -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The pods' pull secrets, as a JSON list: global.imagePullSecrets, then
imagePullSecrets, each once. */}}
{{- define "tgrelay.imagePullSecrets" -}}
{{- $global := .Values.global | default dict -}}
{{- $secrets := list -}}
{{- range concat ($global.imagePullSecrets | default list) (.Values.imagePullSecrets | default list) -}}
{{- if not (has . $secrets) -}}
{{- $secrets = append $secrets . -}}
{{- end -}}
{{- end -}}
{{- toJson $secrets -}}
{{- end -}}

{{- define "tgrelay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tgrelay.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The PersistentVolumeClaim holding the file sink's output: the existing one named, or
the one the chart creates; empty when none. */}}
{{- define "tgrelay.dataClaim" -}}
{{- $persistence := .Values.sink.file.persistence -}}
{{- if eq .Values.sink.kind "file" -}}
{{- if $persistence.existingClaim -}}
{{- $persistence.existingClaim -}}
{{- else if $persistence.enabled -}}
{{- printf "%s-data" (include "tgrelay.fullname" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Why the Deployment runs exactly one pod, replaced with Recreate; empty when it may
scale out: a broker sink, and either no polling bot or the bots shared across replicas. */}}
{{- define "tgrelay.singleReason" -}}
{{- if eq .Values.sink.kind "file" -}}
the file sink writes one file on one volume
{{- else if and (eq (include "tgrelay.polling" .) "true") (not (include "tgrelay.shared" .)) -}}
a bot polls and cluster.mode is single (Telegram answers a second poller of the same bot with 409 Conflict)
{{- end -}}
{{- end -}}

{{/* "true" when the replicas share the bots (cluster.mode=shared); empty otherwise. */}}
{{- define "tgrelay.shared" -}}
{{- if eq (default "single" .Values.cluster.mode) "shared" -}}true{{- end -}}
{{- end -}}

{{/* The cluster's name: cluster.name, else the release's full name made fit for a NATS
bucket and a Kafka topic (1-64 of A-Z a-z 0-9 _ -). */}}
{{- define "tgrelay.clusterName" -}}
{{- default (regexReplaceAll "[^A-Za-z0-9_-]" (include "tgrelay.fullname" .) "-") .Values.cluster.name -}}
{{- end -}}

{{/* A bot's mode: its own, else botDefaults.mode, else polling: (dict "bot" "defaults"). */}}
{{- define "tgrelay.botMode" -}}
{{- default (default "polling" .defaults.mode) .bot.mode -}}
{{- end -}}

{{/* "true" when any bot polls: then, in single mode, one replica, Recreate. The bots of
tokensSecret are unknown here and take botDefaults.mode: any of them may poll. */}}
{{- define "tgrelay.polling" -}}
{{- $polling := false -}}
{{- if and .Values.tokensSecret (eq (default "polling" .Values.botDefaults.mode) "polling") -}}
{{- $polling = true -}}
{{- end -}}
{{- range $name, $bot := .Values.bots -}}
{{- if eq (include "tgrelay.botMode" (dict "bot" $bot "defaults" $.Values.botDefaults)) "polling" -}}
{{- $polling = true -}}
{{- end -}}
{{- end -}}
{{- $polling -}}
{{- end -}}

{{/* Names of the bots in webhook mode, as a JSON list (those of bots only). */}}
{{- define "tgrelay.webhookBots" -}}
{{- $names := list -}}
{{- range $name, $bot := .Values.bots -}}
{{- if eq (include "tgrelay.botMode" (dict "bot" $bot "defaults" $.Values.botDefaults)) "webhook" -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* "true" when the bots of tokensSecret take webhooks (botDefaults.mode webhook); empty
otherwise. */}}
{{- define "tgrelay.webhookDefaults" -}}
{{- if and .Values.tokensSecret (eq (default "polling" .Values.botDefaults.mode) "webhook") -}}true{{- end -}}
{{- end -}}

{{/* "true" when a bot takes webhooks, or one added to tokensSecret would: the [webhook]
listener, the port, the Service port and the Ingress. */}}
{{- define "tgrelay.webhooks" -}}
{{- if or (include "tgrelay.webhookDefaults" .) (ne (include "tgrelay.webhookBots" .) "[]") -}}true{{- end -}}
{{- end -}}

{{/* The path of the bots of tokensSecret, {bot} standing for each one's name. */}}
{{- define "tgrelay.defaultWebhookPath" -}}
{{- get (.Values.botDefaults.webhook | default dict) "path" | default "/telegram/{bot}" -}}
{{- end -}}

{{/* The key of existingSecret holding a bot's webhook secret token, its own or
botDefaults'; empty for none: (dict "bot" "defaults"). */}}
{{- define "tgrelay.webhookSecretKey" -}}
{{- .bot.webhookSecretKey | default .defaults.webhookSecretKey | default "" -}}
{{- end -}}

{{/* The key of existingSecret holding a bot's token: (dict "name" "bot"). */}}
{{- define "tgrelay.tokenKey" -}}
{{- default .name .bot.tokenSecretKey -}}
{{- end -}}

{{/* Seconds in a duration such as "20s", "1m30s" or "1500ms". */}}
{{- define "tgrelay.seconds" -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+ *[a-z]+" (toString .) -1 -}}
{{- $n := regexFind "^[0-9]+" . | float64 -}}
{{- $unit := regexFind "[a-z]+$" . -}}
{{- if eq $unit "ms" -}}
{{- $total = addf $total (divf $n 1000) -}}
{{- else if eq $unit "s" -}}
{{- $total = addf $total $n -}}
{{- else if eq $unit "m" -}}
{{- $total = addf $total (mulf $n 60) -}}
{{- else if eq $unit "h" -}}
{{- $total = addf $total (mulf $n 3600) -}}
{{- else -}}
{{- fail (printf "duration %q: use the units ms, s, m or h" (toString $)) -}}
{{- end -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* The longest the relay's final flush of the sink may take after the drain, in seconds
(CLOSE_TIMEOUT in the relay's src/app.rs). */}}
{{- define "tgrelay.flushSeconds" -}}
6
{{- end -}}

{{/* Seconds the pod keeps serving webhooks before it gets SIGTERM (its preStop pause); 0
without a webhook listener. */}}
{{- define "tgrelay.preStopSeconds" -}}
{{- if .Values.webhook.enabled -}}
{{- int .Values.webhook.preStopSleepSeconds -}}
{{- else -}}
0
{{- end -}}
{{- end -}}

{{/* A TOML basic string (JSON's string syntax, without HTML escaping). */}}
{{- define "tgrelay.toml" -}}
{{- toRawJson . -}}
{{- end -}}

{{/* Every check the values must pass; renders nothing when they do. */}}
{{- define "tgrelay.validate" -}}
{{- if not (or .Values.bots .Values.tokensSecret) -}}
{{- fail "bots: configure at least one bot, or name in tokensSecret a Secret holding one token per key (bots added at runtime)" -}}
{{- end -}}
{{- range $name, $bot := .Values.bots -}}
{{- if and $bot.fromTokensSecret (not $.Values.tokensSecret) -}}
{{- fail (printf "bots.%s.fromTokensSecret: set tokensSecret, the Secret whose key %s holds the token" $name $name) -}}
{{- end -}}
{{- if and $bot.fromTokensSecret $bot.tokenSecretKey -}}
{{- fail (printf "bots.%s: fromTokensSecret and tokenSecretKey name two tokens; keep one" $name) -}}
{{- end -}}
{{- end -}}
{{- $secretKeys := include "tgrelay.secretFiles" . | fromJsonArray -}}
{{- $natsUser := and (eq .Values.sink.kind "nats") .Values.sink.nats.userSecretKey -}}
{{- if or $secretKeys $natsUser -}}
{{- $secret := required (printf "existingSecret: name the Secret holding the keys %s" (join ", " (compact (append $secretKeys $natsUser)))) .Values.existingSecret -}}
{{- if eq $secret .Values.tokensSecret -}}
{{- fail (printf "existingSecret and tokensSecret: both %q, yet every key of tokensSecret is read as a bot's token (%s would be bots); keep bot tokens alone in tokensSecret" $secret (join ", " (compact (append $secretKeys $natsUser)))) -}}
{{- end -}}
{{- end -}}
{{- if include "tgrelay.webhookDefaults" . -}}
{{- $path := include "tgrelay.defaultWebhookPath" . -}}
{{- if not (regexMatch "^/(.*/)?\\{bot\\}(/.*)?$" $path) -}}
{{- fail (printf "botDefaults.webhook.path (%s): must start with / and hold {bot} as a whole segment, e.g. /telegram/{bot}, so that each bot of tokensSecret has its own path" $path) -}}
{{- end -}}
{{- end -}}
{{- $drain := include "tgrelay.seconds" .Values.drainTimeout | float64 -}}
{{- $pause := include "tgrelay.preStopSeconds" . | float64 -}}
{{- $needed := addf $pause $drain (include "tgrelay.flushSeconds" . | float64) -}}
{{- if lt (.Values.terminationGracePeriodSeconds | float64) $needed -}}
{{- $preStop := "" -}}
{{- if gt $pause 0.0 -}}
{{- $preStop = printf " + the preStop pause (webhook.preStopSleepSeconds, %vs)" $pause -}}
{{- end -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must cover drainTimeout (%s) + the final flush (%ss)%s = %vs: the kubelet kills the relay when the grace period is over, mid-drain or mid-flush" .Values.terminationGracePeriodSeconds .Values.drainTimeout (include "tgrelay.flushSeconds" .) $preStop $needed) -}}
{{- end -}}
{{- $shared := include "tgrelay.shared" . -}}
{{- if and $shared (eq .Values.sink.kind "file") -}}
{{- fail "cluster.mode=shared: the replicas share their bots through the sink's broker, and the file sink has none (it is one file on one volume, for one replica). Set sink.kind=nats or sink.kind=kafka, or cluster.mode=single" -}}
{{- end -}}
{{- if and (eq .Values.sink.kind "file") (not (include "tgrelay.dataClaim" .)) -}}
{{- fail "sink: sink.kind=file (the default) without a PersistentVolumeClaim would keep the file on the pod's own disk, and every update in it, already confirmed to Telegram, would go with the pod. Name a broker (sink.kind=nats with sink.nats.url, or sink.kind=kafka with sink.kafka.brokers), or keep the file on a claim: sink.file.persistence.enabled=true (the chart creates it) or sink.file.persistence.existingClaim=<claim>" -}}
{{- end -}}
{{- if eq .Values.sink.kind "file" -}}
{{- include "tgrelay.validateFilePath" . -}}
{{- end -}}
{{- $single := include "tgrelay.singleReason" . -}}
{{- $polling := eq (include "tgrelay.polling" .) "true" -}}
{{- $webhookBots := include "tgrelay.webhookBots" . | fromJsonArray -}}
{{- $webhookDefaults := include "tgrelay.webhookDefaults" . -}}
{{- if and $webhookBots (not .Values.webhook.enabled) -}}
{{- fail (printf "bots %s are in webhook mode: set webhook.enabled=true and webhook.publicUrl" (join ", " $webhookBots)) -}}
{{- end -}}
{{- if and $webhookDefaults (not .Values.webhook.enabled) -}}
{{- fail "botDefaults.mode=webhook: the bots of tokensSecret take webhooks; set webhook.enabled=true and webhook.publicUrl" -}}
{{- end -}}
{{- if .Values.webhook.enabled -}}
{{- if not (include "tgrelay.webhooks" .) -}}
{{- fail "webhook.enabled: no bot has mode webhook (nor botDefaults.mode, with tokensSecret)" -}}
{{- end -}}
{{- if not .Values.webhook.publicUrl -}}
{{- fail "webhook.publicUrl: required when webhook.enabled (the https:// base URL Telegram is given)" -}}
{{- end -}}
{{- end -}}
{{- range .Values.extraEnv -}}
{{- if has (upper .name) (list "TGRELAY_CLUSTER__MODE" "TGRELAY_SINK__KIND") -}}
{{- fail (printf "extraEnv: %s would run the relay in another mode or sink than the Deployment is rendered for (its replicas, strategy and volumes); set %s instead" (upper .name) (ternary "cluster.mode" "sink.kind" (eq (upper .name) "TGRELAY_CLUSTER__MODE"))) -}}
{{- end -}}
{{- end -}}
{{- if $shared -}}
{{- $lease := include "tgrelay.seconds" .Values.cluster.leaseTtl | float64 -}}
{{- if or (lt $lease 3.0) (gt $lease 300.0) -}}
{{- fail (printf "cluster.leaseTtl (%s): must be from 3s to 5m" .Values.cluster.leaseTtl) -}}
{{- end -}}
{{- range .Values.extraEnv -}}
{{- if and (eq .name "TGRELAY_CLUSTER__INSTANCE") (hasKey . "value") -}}
{{- fail "extraEnv: TGRELAY_CLUSTER__INSTANCE with a fixed value would give every replica the same name in the cluster; leave it unset (each pod then goes by its pod name)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (not $polling) $single (gt (int .Values.replicaCount) 1) -}}
{{- fail (printf "replicaCount (%v): %s, so the relay runs one replica; set replicaCount=1, or relay into NATS or Kafka to scale out" .Values.replicaCount $single) -}}
{{- end -}}
{{- if and (not $single) (gt (int .Values.replicaCount) 1) -}}
{{- range $name, $bot := .Values.bots -}}
{{- if and (eq (include "tgrelay.botMode" (dict "bot" $bot "defaults" $.Values.botDefaults)) "webhook") (not (include "tgrelay.webhookSecretKey" (dict "bot" $bot "defaults" $.Values.botDefaults))) -}}
{{- fail (printf "bots.%s.webhookSecretKey: required with several replicas (each replica would register its own random secret token, and the others would refuse Telegram's requests)" $name) -}}
{{- end -}}
{{- end -}}
{{- if and $webhookDefaults (not .Values.botDefaults.webhookSecretKey) -}}
{{- fail "botDefaults.webhookSecretKey: required with several replicas and botDefaults.mode=webhook (each replica would register its own random secret token for the bots of tokensSecret, and the others would refuse Telegram's requests)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled $single -}}
{{- fail (printf "podDisruptionBudget.enabled: %s, so the relay runs exactly one replica and a budget would block every node drain; enable it with a broker sink and either cluster.mode=shared or every bot in webhook mode" $single) -}}
{{- end -}}
{{- if include "tgrelay.pdb" . -}}
{{- include "tgrelay.validatePdb" . -}}
{{- end -}}
{{- $nats := .Values.sink.nats -}}
{{- if and (eq .Values.sink.kind "nats") $nats.passwordSecretKey (not (or $nats.user $nats.userSecretKey)) -}}
{{- fail "sink.nats.passwordSecretKey needs sink.nats.user or sink.nats.userSecretKey" -}}
{{- end -}}
{{- if and (eq .Values.sink.kind "nats") (ne (not $nats.tls.certSecretKey) (not $nats.tls.keySecretKey)) -}}
{{- fail "sink.nats.tls.certSecretKey and sink.nats.tls.keySecretKey go together (a client certificate and its key)" -}}
{{- end -}}
{{- if not (or .Values.telegram.builtinRoots .Values.telegram.caConfigMap) -}}
{{- fail "telegram.builtinRoots=false needs telegram.caConfigMap: the relay would trust no CA" -}}
{{- end -}}
{{- end -}}

{{/* The file sink's file must lie on its claim, mounted at /var/lib/tgrelay: anywhere else
it is on the pod's own disk and goes with the pod. */}}
{{- define "tgrelay.validateFilePath" -}}
{{- $path := .Values.sink.file.path -}}
{{- $claim := include "tgrelay.dataClaim" . -}}
{{- if not (isAbs $path) -}}
{{- fail (printf "sink.file.path (%s): an absolute path under /var/lib/tgrelay/, where the PersistentVolumeClaim %s is mounted (a relative one depends on the image's working directory), e.g. /var/lib/tgrelay/%s" $path $claim (base $path)) -}}
{{- end -}}
{{- if not (hasPrefix "/var/lib/tgrelay/" (clean $path)) -}}
{{- fail (printf "sink.file.path (%s) lies outside the file sink's volume: the PersistentVolumeClaim %s is mounted at /var/lib/tgrelay, and a file elsewhere is on the pod's own disk (/tmp is a 16 Mi in-memory emptyDir), gone with the pod along with every update in it, already confirmed to Telegram. Put it under /var/lib/tgrelay/, e.g. /var/lib/tgrelay/%s" $path $claim (base $path)) -}}
{{- end -}}
{{- range .Values.extraVolumeMounts -}}
{{- $inside := hasPrefix "/var/lib/tgrelay/" (clean .mountPath) -}}
{{- if and $inside (hasPrefix (printf "%s/" (clean .mountPath)) (clean $path)) -}}
{{- fail (printf "sink.file.path (%s): extraVolumeMounts mounts %s at %s, so the file would be on that volume, not on the PersistentVolumeClaim %s at /var/lib/tgrelay" $path .name .mountPath $claim) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when a PodDisruptionBudget is rendered: podDisruptionBudget.enabled, or unset
in cluster.mode=shared; empty otherwise. */}}
{{- define "tgrelay.pdb" -}}
{{- $enabled := .Values.podDisruptionBudget.enabled -}}
{{- if kindIs "invalid" $enabled -}}
{{- include "tgrelay.shared" . -}}
{{- else if $enabled -}}
true
{{- end -}}
{{- end -}}

{{/* A budget's count of pods, a number or a percentage of the replicas rounded up (as
Kubernetes rounds both minAvailable and maxUnavailable): (dict "value" "replicas"). */}}
{{- define "tgrelay.podCount" -}}
{{- if kindIs "string" .value -}}
{{- ceil (divf (mulf .replicas (trimSuffix "%" .value | float64)) 100) | int -}}
{{- else -}}
{{- int .value -}}
{{- end -}}
{{- end -}}

{{/* The budget must let a drain evict a pod, percentages included. */}}
{{- define "tgrelay.validatePdb" -}}
{{- $pdb := .Values.podDisruptionBudget -}}
{{- $replicas := int .Values.replicaCount -}}
{{- $rounded := "" -}}
{{- if not (kindIs "invalid" $pdb.minAvailable) -}}
{{- $least := include "tgrelay.podCount" (dict "value" $pdb.minAvailable "replicas" $replicas) | int -}}
{{- if kindIs "string" $pdb.minAvailable -}}
{{- $rounded = " (a percentage of replicaCount, rounded up)" -}}
{{- end -}}
{{- if ge $least $replicas -}}
{{- fail (printf "podDisruptionBudget.minAvailable (%v): %d of %d pods must stay up%s, yet it must be below replicaCount (%d), or no node could ever be drained" $pdb.minAvailable $least $replicas $rounded $replicas) -}}
{{- end -}}
{{- else if kindIs "invalid" $pdb.maxUnavailable -}}
{{- fail "podDisruptionBudget: set maxUnavailable (or minAvailable)" -}}
{{- else if lt (include "tgrelay.podCount" (dict "value" $pdb.maxUnavailable "replicas" $replicas) | int) 1 -}}
{{- fail (printf "podDisruptionBudget.maxUnavailable (%v) lets no pod go, so no node could ever be drained: set 1 or more, or a percentage above 0%%" $pdb.maxUnavailable) -}}
{{- end -}}
{{- end -}}

{{/* config.toml, rendered from the values. */}}
{{- define "tgrelay.config" -}}
# Rendered by the tgrelay chart from its values. TGRELAY_* environment variables
# override any key; `tgrelay check-config` prints the effective result.
drain_timeout = {{ include "tgrelay.toml" .Values.drainTimeout }}
worker_threads = {{ int .Values.workerThreads }}
{{- if .Values.tokensSecret }}
# One bot per key of the Secret {{ .Values.tokensSecret }}, mounted whole: the kubelet updates
# it in place and the relay adds, re-tokens and removes bots as it does.
tokens_dir = "/var/run/tgrelay/tokens"
{{- end }}

[log]
level = {{ include "tgrelay.toml" .Values.log.level }}
format = {{ include "tgrelay.toml" .Values.log.format }}

[admin]
listen = "0.0.0.0:9090"

[cluster]
mode = {{ include "tgrelay.toml" (default "single" .Values.cluster.mode) }}
{{- if include "tgrelay.shared" . }}
# instance unset: each pod goes by its host name, which is its pod name.
name = {{ include "tgrelay.toml" (include "tgrelay.clusterName" .) }}
lease_ttl = {{ include "tgrelay.toml" .Values.cluster.leaseTtl }}
{{- end }}

[sink]
kind = {{ include "tgrelay.toml" .Values.sink.kind }}
envelope = {{ include "tgrelay.toml" .Values.sink.envelope }}
{{- if eq .Values.sink.kind "file" }}
{{- with .Values.sink.file }}

[sink.file]
path = {{ include "tgrelay.toml" .path }}
{{- end }}
{{- else if eq .Values.sink.kind "nats" }}
{{- with .Values.sink.nats }}

[sink.nats]
url = {{ include "tgrelay.toml" .url }}
subject = {{ include "tgrelay.toml" .subject }}
dead_letter_subject = {{ include "tgrelay.toml" .deadLetterSubject }}
stream = {{ include "tgrelay.toml" .stream }}
stream_subjects = {{ include "tgrelay.toml" .streamSubjects }}
create_stream = {{ .createStream }}
duplicate_window = {{ include "tgrelay.toml" .duplicateWindow }}
publish_timeout = {{ include "tgrelay.toml" .publishTimeout }}
max_in_flight = {{ int .maxInFlight }}
{{- if .user }}
user = {{ include "tgrelay.toml" .user }}
{{- end }}
{{- range $setting, $key := dict "credentials_file" .credentialsSecretKey "password_file" .passwordSecretKey "token_file" .tokenSecretKey "tls_ca_file" .tls.caSecretKey "tls_cert_file" .tls.certSecretKey "tls_key_file" .tls.keySecretKey }}
{{- if $key }}
{{ $setting }} = {{ include "tgrelay.toml" (printf "/etc/tgrelay/secrets/%s" $key) }}
{{- end }}
{{- end }}
{{- if .tls.required }}
tls_required = true
{{- end }}
{{- end }}
{{- else if eq .Values.sink.kind "kafka" }}
{{- with .Values.sink.kafka }}

[sink.kafka]
brokers = {{ include "tgrelay.toml" .brokers }}
topic = {{ include "tgrelay.toml" .topic }}
dead_letter_topic = {{ include "tgrelay.toml" .deadLetterTopic }}
create_topics = {{ .createTopics }}
partitions = {{ int .partitions }}
replication_factor = {{ int .replicationFactor }}
message_timeout = {{ include "tgrelay.toml" .messageTimeout }}
linger = {{ include "tgrelay.toml" .linger }}
allow_unsafe_properties = {{ .allowUnsafeProperties }}
{{- if .saslUsername }}
sasl_username = {{ include "tgrelay.toml" .saslUsername }}
{{- end }}
{{- if .saslPasswordSecretKey }}
sasl_password_file = {{ include "tgrelay.toml" (printf "/etc/tgrelay/secrets/%s" .saslPasswordSecretKey) }}
{{- end }}
{{- with .properties }}

[sink.kafka.properties]
{{- range $key, $value := . }}
{{ include "tgrelay.toml" $key }} = {{ include "tgrelay.toml" (toString $value) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.telegram }}
{{- if or .caConfigMap (not .builtinRoots) }}

[telegram]
builtin_roots = {{ .builtinRoots }}
{{- if .caConfigMap }}
ca_file = {{ include "tgrelay.toml" (printf "/etc/tgrelay/telegram-ca/%s" .caConfigMapKey) }}
{{- end }}
{{- end }}
{{- end }}
{{- if include "tgrelay.webhooks" . }}

[webhook]
listen = "0.0.0.0:8080"
{{- include "tgrelay.tomlTable" (dict "table" .Values.webhook.settings "where" "webhook.settings") }}
{{- end }}
{{- $publicUrl := trimSuffix "/" .Values.webhook.publicUrl }}
{{- $defaults := .Values.botDefaults }}
{{- if or $defaults (include "tgrelay.webhookDefaults" .) }}

# Under every bot's own settings; {bot} stands for each bot's name.
[bot_defaults]
{{- with $defaults.mode }}
mode = {{ include "tgrelay.toml" . }}
{{- end }}
{{- include "tgrelay.botSettings" $defaults }}
{{- $webhookDefaults := include "tgrelay.webhookDefaults" . }}
{{- if or $webhookDefaults $defaults.webhook }}

[bot_defaults.webhook]
{{- if $webhookDefaults }}
url = {{ include "tgrelay.toml" (printf "%s%s" $publicUrl (include "tgrelay.defaultWebhookPath" .)) }}
{{- with $defaults.webhookSecretKey }}
secret_token_file = {{ include "tgrelay.toml" (printf "/etc/tgrelay/secrets/%s" .) }}
{{- end }}
{{- end }}
{{- include "tgrelay.tomlTable" (dict "table" $defaults.webhook "where" "botDefaults.webhook") }}
{{- end }}
{{- end }}
{{- range $name, $bot := .Values.bots }}
{{- $mode := include "tgrelay.botMode" (dict "bot" $bot "defaults" $defaults) }}

[bots.{{ $name }}]
{{- if $bot.fromTokensSecret }}
# Token: the key {{ $name }} of the Secret {{ $.Values.tokensSecret }} (tokens_dir).
{{- else }}
token_file = {{ include "tgrelay.toml" (printf "/etc/tgrelay/secrets/%s" (include "tgrelay.tokenKey" (dict "name" $name "bot" $bot))) }}
{{- end }}
mode = {{ include "tgrelay.toml" $mode }}
{{- include "tgrelay.botSettings" $bot }}
{{- if eq $mode "webhook" }}

[bots.{{ $name }}.webhook]
url = {{ include "tgrelay.toml" (printf "%s%s" $publicUrl (include "tgrelay.webhookPath" (dict "name" $name "bot" $bot "defaults" $defaults))) }}
{{- with include "tgrelay.webhookSecretKey" (dict "bot" $bot "defaults" $defaults) }}
secret_token_file = {{ include "tgrelay.toml" (printf "/etc/tgrelay/secrets/%s" .) }}
{{- end }}
{{- include "tgrelay.tomlTable" (dict "table" $bot.webhook "where" (printf "bots.%s.webhook" $name)) }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The settings a bot and botDefaults share, one `key = value` line each (mode and
webhook aside). */}}
{{- define "tgrelay.botSettings" -}}
{{- with .apiUrl }}
api_url = {{ include "tgrelay.toml" . }}
{{- end }}
{{- with .allowedUpdates }}
allowed_updates = {{ include "tgrelay.toml" . }}
{{- end }}
{{- with .pollTimeout }}
poll_timeout = {{ include "tgrelay.toml" . }}
{{- end }}
{{- with .pollLimit }}
poll_limit = {{ int . }}
{{- end }}
{{- if hasKey . "deleteWebhook" }}
delete_webhook = {{ .deleteWebhook }}
{{- end }}
{{- end -}}

{{/* The path a webhook bot is served on: its own webhook.path, else botDefaults' with
{bot} replaced (as the relay does), else /telegram/<name>: (dict "name" "bot" "defaults"). */}}
{{- define "tgrelay.webhookPath" -}}
{{- $own := .bot.webhook | default dict -}}
{{- $defaults := .defaults.webhook | default dict -}}
{{- get $own "path" | default (get $defaults "path" | replace "{bot}" .name) | default (printf "/telegram/%s" .name) -}}
{{- end -}}

{{/* The keys of a free-form table, one `key = value` line each: (dict "table" "where"). */}}
{{- define "tgrelay.tomlTable" -}}
{{- $where := .where -}}
{{- range $key, $value := .table }}
{{- if kindIs "map" $value }}
{{- fail (printf "%s.%s: a table is not supported here" $where $key) }}
{{- end }}
{{ $key }} = {{ include "tgrelay.toml" $value }}
{{- end }}
{{- end -}}

{{/* Keys of existingSecret mounted as files under /etc/tgrelay/secrets, as a JSON list;
empty when nothing reads that Secret (every token from tokensSecret, no broker secret). */}}
{{- define "tgrelay.secretFiles" -}}
{{- $keys := list -}}
{{- $defaults := .Values.botDefaults -}}
{{- range $name, $bot := .Values.bots -}}
{{- if not $bot.fromTokensSecret -}}
{{- $keys = append $keys (include "tgrelay.tokenKey" (dict "name" $name "bot" $bot)) -}}
{{- end -}}
{{- $webhookSecret := include "tgrelay.webhookSecretKey" (dict "bot" $bot "defaults" $defaults) -}}
{{- if and (eq (include "tgrelay.botMode" (dict "bot" $bot "defaults" $defaults)) "webhook") $webhookSecret -}}
{{- $keys = append $keys $webhookSecret -}}
{{- end -}}
{{- end -}}
{{- if and (include "tgrelay.webhookDefaults" .) $defaults.webhookSecretKey -}}
{{- $keys = append $keys $defaults.webhookSecretKey -}}
{{- end -}}
{{- if eq .Values.sink.kind "nats" -}}
{{- $nats := .Values.sink.nats -}}
{{- range list $nats.credentialsSecretKey $nats.passwordSecretKey $nats.tokenSecretKey $nats.tls.caSecretKey $nats.tls.certSecretKey $nats.tls.keySecretKey -}}
{{- if . -}}
{{- $keys = append $keys . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.sink.kind "kafka") .Values.sink.kafka.saslPasswordSecretKey -}}
{{- $keys = append $keys .Values.sink.kafka.saslPasswordSecretKey -}}
{{- end -}}
{{- toJson ($keys | uniq | sortAlpha) -}}
{{- end -}}

{{/* Label matchers of this release's series: prometheusRule.selector, or the namespace and
the job a ServiceMonitor gives them (the Service's name). */}}
{{- define "tgrelay.ruleSelector" -}}
{{- default (printf "namespace=%q, job=%q" .Release.Namespace (include "tgrelay.fullname" .)) .Values.prometheusRule.selector -}}
{{- end -}}

{{/* One alerting rule, unless prometheusRule.disabled names it: (dict "root" $ "alert"
"expr" "for" "severity" "summary" "description"). Annotations may use Prometheus's own
{{ $labels.x }} and {{ $value }}. Each links its runbook: the README's heading named after
the alert, under prometheusRule.runbookUrl. */}}
{{- define "tgrelay.alert" -}}
{{- $config := .root.Values.prometheusRule -}}
{{- if not (get $config.disabled .alert) }}
- alert: {{ .alert }}
  expr: |-
    {{ .expr }}
  {{- with .for }}
  for: {{ . }}
  {{- end }}
  labels:
    severity: {{ get $config.additionalRuleLabels "severity" | default .severity }}
    {{- with omit $config.additionalRuleLabels "severity" }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    summary: {{ .summary | quote }}
    description: {{ .description | quote }}
    runbook_url: {{ printf "%s#%s" $config.runbookUrl (lower .alert) | quote }}
{{- end }}
{{- end -}}

{{/* The alerts of README.md's "Alerts worth setting", as a YAML list of rules. */}}
{{- define "tgrelay.alerts" -}}
{{- $s := include "tgrelay.ruleSelector" . -}}
{{- $window := .Values.prometheusRule.noUpdatesWindow -}}
{{- /* A bot whose source is up now and was a window ago, and that received nothing since. */}}
{{- include "tgrelay.alert" (dict "root" . "alert" "TgrelayNoUpdates" "for" "5m" "severity" "warning"
  "expr" (printf "(sum by (namespace, bot) (tgrelay_source_up{%s}) > 0) and on (namespace, bot) (sum by (namespace, bot) (tgrelay_source_up{%s} offset %s)) unless on (namespace, bot) (sum by (namespace, bot) (increase(tgrelay_updates_received_total{%s}[%s])) > 0)" $s $s $window $s $window)
  "summary" (printf "Bot {{ $labels.bot }} received no update for %s" $window)
  "description" (printf "tgrelay read no update of bot {{ $labels.bot }} for %s. For a bot without steady traffic, widen prometheusRule.noUpdatesWindow or disable the alert; otherwise look at the bot's Bot API errors and webhook." $window)) }}
{{- include "tgrelay.alert" (dict "root" . "alert" "TgrelayPublishRetrying" "for" "5m" "severity" "critical"
  "expr" (printf "sum by (namespace, bot) (rate(tgrelay_publish_failures_total{%s}[5m])) > 0" $s)
  "summary" "Updates of bot {{ $labels.bot }} are not reaching the broker"
  "description" "The broker has not acknowledged updates of bot {{ $labels.bot }} for 5 minutes, so none is confirmed to Telegram (which keeps them, most kinds for 24 h). Check the broker and /readyz.") }}
{{- include "tgrelay.alert" (dict "root" . "alert" "TgrelayPublishFatal" "severity" "critical"
  "expr" (printf "sum by (namespace, bot) (increase(tgrelay_publish_failures_total{%s, class=\"fatal\"}[5m])) > 0" $s)
  "summary" "The broker refuses updates of bot {{ $labels.bot }}"
  "description" "A publish of bot {{ $labels.bot }} failed in a way retrying cannot fix (a missing stream or topic, permissions, configuration): the relay's log names it. Nothing is confirmed meanwhile.") }}
{{- /* The share of a bot's calls failing with one code; 409 has its own alert, and 400/403
answer what a service asked through the gateway (a chat not found, a user who blocked the bot). */}}
{{- include "tgrelay.alert" (dict "root" . "alert" "TgrelayTelegramErrors" "for" "10m" "severity" "warning"
  "expr" (printf "sum by (namespace, bot, code) (rate(tgrelay_telegram_errors_total{%s, code!~\"400|403|409\"}[5m])) / on (namespace, bot) group_left () sum by (namespace, bot) (rate(tgrelay_telegram_requests_total{%s}[5m])) > 0.1" $s $s)
  "summary" "Bot API calls of bot {{ $labels.bot }} fail with {{ $labels.code }}"
  "description" "More than 10 % of the Bot API calls of bot {{ $labels.bot }} have failed with {{ $labels.code }} for 10 minutes (429: rate limited; 401: a revoked token; 5xx: Telegram or a proxy; transport: the network).") }}
{{- include "tgrelay.alert" (dict "root" . "alert" "TgrelayTelegramConflict" "for" "10m" "severity" "warning"
  "expr" (printf "sum by (namespace, bot) (rate(tgrelay_telegram_errors_total{%s, code=\"409\"}[5m])) > 0" $s)
  "summary" "Bot {{ $labels.bot }} gets 409 Conflict from Telegram"
  "description" "A second getUpdates caller of bot {{ $labels.bot }} (another relay, a script) or a webhook set for a polling bot: the two take turns, each getting part of the updates.") }}
{{- include "tgrelay.alert" (dict "root" . "alert" "TgrelayWebhookBacklog" "for" "5m" "severity" "warning"
  "expr" (printf "(max by (namespace, bot) (deriv(tgrelay_webhook_pending_updates{%s}[10m])) > 0) and (max by (namespace, bot) (tgrelay_webhook_pending_updates{%s}) > 100)" $s $s)
  "summary" "Telegram holds a growing backlog for bot {{ $labels.bot }}"
  "description" "getWebhookInfo reports more than 100 pending updates for bot {{ $labels.bot }}, and rising: Telegram cannot deliver them fast enough (failing requests, too few max_connections).") }}
{{- include "tgrelay.alert" (dict "root" . "alert" "TgrelayWebhookDeliveryErrors" "severity" "warning"
  "expr" (printf "max by (namespace, bot) (changes(tgrelay_webhook_last_error_timestamp_seconds{%s}[10m])) > 0" $s)
  "summary" "Telegram reports webhook errors for bot {{ $labels.bot }}"
  "description" "getWebhookInfo's last_error_date of bot {{ $labels.bot }} moved in the last 10 minutes: Telegram failed to deliver to the webhook (its last_error_message says why) and will retry.") }}
{{- include "tgrelay.alert" (dict "root" . "alert" "TgrelayDeadLetters" "severity" "warning"
  "expr" (printf "sum by (namespace, bot) (increase(tgrelay_updates_published_total{%s, outcome=\"dead_lettered\"}[1h])) > 0" $s)
  "summary" "Updates of bot {{ $labels.bot }} went to the dead-letter destination"
  "description" "Some updates of bot {{ $labels.bot }} could not be relayed as they are (too large, malformed) and were published to the dead-letter subject or topic with a tgrelay-error header.") }}
{{- include "tgrelay.alert" (dict "root" . "alert" "TgrelaySourceDown" "for" "5m" "severity" "critical"
  "expr" (printf "min by (namespace, bot) (tgrelay_source_up{%s}) == 0" $s)
  "summary" "The source of bot {{ $labels.bot }} is down"
  "description" "Bot {{ $labels.bot }} has had no accepted poll, or no registered webhook, for 5 minutes (a refused token stops it for good); the relay's log and /readyz?verbose say why. The pod stays ready for its other bots.") }}
{{- /* Shared mode: a bot no live replica owns is run by none. A bot that lost its owner
reads 0 (each replica keeps its series at 0 after releasing or losing it); one no replica
ever owned since they started shows as fewer owned bots than configured. */}}
{{- include "tgrelay.alert" (dict "root" . "alert" "TgrelayBotUnowned" "for" "2m" "severity" "critical"
  "expr" (printf "(sum by (namespace, bot) (tgrelay_bot_owner{%s}) == 0) or on (namespace) (max by (namespace) (tgrelay_bots_configured{%s}) > sum by (namespace) (tgrelay_bot_owner{%s}))" $s $s $s)
  "summary" "{{ with $labels.bot }}Bot {{ . }} has{{ else }}Some bots have{{ end }} no owner"
  "description" "{{ with $labels.bot }}No replica has owned bot {{ . }}{{ else }}Fewer bots are owned than configured{{ end }} for 2 minutes, and a bot without an owner is neither polled nor has its webhook registered. Likely the replicas cannot write the cluster's key-value buckets or topics, or their leases keep lapsing.") }}
{{- include "tgrelay.alert" (dict "root" . "alert" "TgrelayConfigReloadRefused" "for" "1m" "severity" "warning"
  "expr" (printf "max by (namespace, pod) (tgrelay_config_last_reload_successful{%s}) == 0" $s)
  "summary" "tgrelay {{ $labels.pod }} refused a configuration change"
  "description" "The last configuration change {{ $labels.pod }} read (a token Secret, tokens_dir, SIGHUP) was invalid and refused: it runs the bots it had before. Its log says what is wrong.") }}
{{- /* No absent(): with nothing scraped (the release scaled to zero or removed) it would
fire forever; Kubernetes' own alerts cover pods that do not run. */}}
{{- include "tgrelay.alert" (dict "root" . "alert" "TgrelayDown" "for" "5m" "severity" "critical"
  "expr" (printf "max by (namespace, job) (up{%s}) == 0" $s)
  "summary" "No tgrelay instance is up"
  "description" "Prometheus has failed to scrape every relay of this job for 5 minutes: the pods crash, hang, or their admin port is unreachable.") }}
{{- end -}}
