{{- define "cluster.name" -}}{{ .Release.Name | trunc 50 }}{{- end -}}
{{- /* Kubelet and control-plane flags for an external cloud provider (the
AWS cloud controller manager runs in the workload cluster). */ -}}
{{- define "cloud.external" -}}
- name: cloud-provider
  value: external
{{- end -}}
{{- define "node.registration" -}}
name: {{ "'{{ ds.meta_data.local_hostname }}'" }}
kubeletExtraArgs:
  {{- include "cloud.external" . | nindent 2 }}
{{- end -}}
{{- define "machine.spec" -}}
instanceType: {{ .instanceType }}
{{- with .iamInstanceProfile }}
iamInstanceProfile: {{ . }}
{{- end }}
{{- with .amiID }}
ami:
  id: {{ . }}
{{- end }}
{{- with .rootVolumeSize }}
rootVolume:
  size: {{ . }}
{{- end }}
{{- end -}}
