{{- define "cluster.name" -}}{{ .Release.Name | trunc 50 }}{{- end -}}
{{- define "machine.backend" -}}
backend:
  inMemory:
    vm:
      provisioning:
        startupDuration: {{ .Values.startup.vm }}
    node:
      provisioning:
        startupDuration: {{ .Values.startup.node }}
    apiServer:
      provisioning:
        startupDuration: {{ .Values.startup.apiServer }}
    etcd:
      provisioning:
        startupDuration: {{ .Values.startup.etcd }}
{{- end -}}
