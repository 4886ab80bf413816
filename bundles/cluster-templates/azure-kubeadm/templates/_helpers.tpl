{{- define "cluster.name" -}}{{ .Release.Name | trunc 50 }}{{- end -}}
{{- define "cloud.external" -}}
- name: cloud-provider
  value: external
{{- end -}}
{{- define "node.registration" -}}
name: {{ `'{{ ds.meta_data["local_hostname"] }}'` }}
kubeletExtraArgs:
  {{- include "cloud.external" . | nindent 2 }}
{{- end -}}
{{- /* CAPZ writes the cloud provider config of each machine template into
the secret <template>-azure-json; the bootstrap data puts it on disk. */ -}}
{{- define "azure.json" -}}
- path: /etc/kubernetes/azure.json
  owner: root:root
  permissions: "0644"
  contentFrom:
    secret:
      name: {{ include "cluster.name" .root }}-{{ .role }}-azure-json
      key: {{ .key }}
{{- end -}}
{{- define "users" -}}
{{- with .Values.sshPublicKey }}
users:
  - name: capi
    sshAuthorizedKeys: [{{ . | quote }}]
    sudo: ALL=(ALL) NOPASSWD:ALL
{{- end }}
{{- end -}}
{{- define "machine.spec" -}}
vmSize: {{ .m.vmSize }}
osDisk:
  osType: Linux
  diskSizeGB: {{ .m.rootVolumeSize | default 50 }}
{{- with .m.image }}
image: {{ . | toJson }}
{{- end }}
{{- with .root.Values.sshPublicKey }}
sshPublicKey: {{ . | b64enc }}
{{- else }}
sshPublicKey: ""
{{- end }}
{{- end -}}
{{- define "worker.bootstrap" -}}
files:
  {{- include "azure.json" (dict "root" . "role" "md" "key" "worker-node-azure.json") | nindent 2 }}
joinConfiguration:
  nodeRegistration:
    {{- include "node.registration" . | nindent 4 }}
{{- include "users" . }}
{{- end -}}
