{{- define "cluster.name" -}}{{ .Release.Name | trunc 50 }}{{- end -}}
{{- define "cloud.external" -}}
- name: cloud-provider
  value: external
{{- end -}}
{{- define "node.registration" -}}
name: {{ `'{{ local_hostname }}'` }}
kubeletExtraArgs:
  {{- include "cloud.external" . | nindent 2 }}
  - name: provider-id
    value: {{ `openstack:///'{{ instance_id }}'` }}
{{- end -}}
{{- define "machine.spec" -}}
flavor: {{ .m.flavor }}
image:
  filter:
    name: {{ .m.image | quote }}
{{- with .root.Values.sshKeyName }}
sshKeyName: {{ . }}
{{- end }}
{{- with .m.rootVolumeSize }}
rootVolume:
  sizeGiB: {{ . }}
{{- end }}
{{- end -}}
{{- define "worker.bootstrap" -}}
joinConfiguration:
  nodeRegistration:
    {{- include "node.registration" . | nindent 4 }}
{{- end -}}
