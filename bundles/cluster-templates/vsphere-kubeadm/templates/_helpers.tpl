{{- define "cluster.name" -}}{{ .Release.Name | trunc 50 }}{{- end -}}
{{- define "cloud.external" -}}
- name: cloud-provider
  value: external
{{- end -}}
{{- define "node.registration" -}}
name: {{ `'{{ local_hostname }}'` }}
criSocket: unix:///var/run/containerd/containerd.sock
kubeletExtraArgs:
  {{- include "cloud.external" . | nindent 2 }}
{{- end -}}
{{- /* The VM's name as its host name, as CAPV's own templates do. */ -}}
{{- define "hostname.commands" -}}
- hostnamectl set-hostname "{{ `{{ ds.meta_data.hostname }}` }}"
- echo "::1         ipv6-localhost ipv6-loopback localhost6 localhost6.localdomain6" >/etc/hosts
- echo "127.0.0.1   {{ `{{ ds.meta_data.hostname }}` }} {{ `{{ local_hostname }}` }} localhost localhost.localdomain localhost4 localhost4.localdomain4" >>/etc/hosts
{{- end -}}
{{- define "users" -}}
{{- with .Values.sshPublicKey }}
users:
  - name: capv
    sshAuthorizedKeys: [{{ . | quote }}]
    sudo: ALL=(ALL) NOPASSWD:ALL
{{- end }}
{{- end -}}
{{- define "machine.spec" -}}
{{- $v := .root.Values.vsphere -}}
server: {{ $v.server }}
{{- with $v.thumbprint }}
thumbprint: {{ . | quote }}
{{- end }}
datacenter: {{ $v.datacenter }}
datastore: {{ $v.datastore }}
{{- with $v.resourcePool }}
resourcePool: {{ . | quote }}
{{- end }}
{{- with $v.folder }}
folder: {{ . }}
{{- end }}
{{- with $v.storagePolicyName }}
storagePolicyName: {{ . }}
{{- end }}
template: {{ .m.template }}
cloneMode: linkedClone
numCPUs: {{ .m.numCPUs | default 2 }}
memoryMiB: {{ .m.memoryMiB | default 4096 }}
diskGiB: {{ .m.diskGiB | default 40 }}
os: Linux
powerOffMode: trySoft
network:
  devices:
    - networkName: {{ $v.network | quote }}
      dhcp4: true
{{- end -}}
{{- define "worker.bootstrap" -}}
preKubeadmCommands:
  {{- include "hostname.commands" . | nindent 2 }}
joinConfiguration:
  nodeRegistration:
    {{- include "node.registration" . | nindent 4 }}
{{- include "users" . }}
{{- end -}}
{{- /* kube-vip as a static pod on every control-plane machine holds the
endpoint address (ARP), so the cluster needs no external load balancer. */ -}}
{{- define "kube-vip" -}}
apiVersion: v1
kind: Pod
metadata:
  name: kube-vip
  namespace: kube-system
spec:
  hostNetwork: true
  hostAliases:
    - hostnames: [kubernetes]
      ip: 127.0.0.1
  containers:
    - name: kube-vip
      image: {{ .Values.kubeVip.image }}
      args: [manager]
      env:
        - {name: cp_enable, value: "true"}
        - {name: vip_arp, value: "true"}
        - {name: vip_leaderelection, value: "true"}
        - {name: address, value: {{ .Values.controlPlaneEndpointIP | quote }}}
        - {name: port, value: {{ .Values.controlPlaneEndpointPort | quote }}}
        - {name: vip_leaseduration, value: "15"}
        - {name: vip_renewdeadline, value: "10"}
        - {name: vip_retryperiod, value: "2"}
      securityContext:
        capabilities:
          add: [NET_ADMIN, NET_RAW]
      volumeMounts:
        - mountPath: /etc/kubernetes/admin.conf
          name: kubeconfig
  volumes:
    - name: kubeconfig
      hostPath:
        path: /etc/kubernetes/admin.conf
        type: FileOrCreate
{{- end -}}
