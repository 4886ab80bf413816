#!/usr/bin/env python3
"""Writes the Tether Grafana dashboards (dashboards/*.json).

The dashboards are data: this script is only how they were first laid out,
kept so that a panel added here lands in the right grid place. Every panel
query is run against a real hub by e2e/telemetry
(TestTelemetryEndToEnd/grafana_dashboards).
"""
import json, os

DS = {"type": "prometheus", "uid": "${datasource}"}

def var_ds():
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "current": {}, "hide": 0}

def var_query(name, label, query, multi=False):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": name}, "definition": query,
            "refresh": 2, "multi": multi, "includeAll": multi, "current": {}, "hide": 0, "sort": 1}

def panel(kind, title, exprs, unit=None, w=12, h=8, legend="{{cluster}}", instant=False):
    targets = []
    for i, e in enumerate(exprs):
        if isinstance(e, tuple):
            e, leg = e
        else:
            leg = legend
        t = {"expr": e, "legendFormat": leg, "refId": chr(ord("A") + i), "datasource": DS}
        if instant:
            t["instant"] = True
            t["range"] = False
            t["format"] = "table"
        targets.append(t)
    p = {"type": kind, "title": title, "datasource": DS, "targets": targets,
         "gridPos": {"w": w, "h": h}, "fieldConfig": {"defaults": {}, "overrides": []}, "options": {}}
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    return p

def layout(panels):
    x = y = 0
    rowh = 0
    for i, p in enumerate(panels):
        g = p["gridPos"]
        if x + g["w"] > 24:
            x, y = 0, y + rowh
            rowh = 0
        g["x"], g["y"] = x, y
        x += g["w"]
        rowh = max(rowh, g["h"])
        p["id"] = i + 1
    return panels

def dashboard(uid, title, variables, panels, tags):
    return {"uid": uid, "title": title, "tags": ["tether"] + tags, "timezone": "browser",
            "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": variables}, "panels": layout(panels),
            "annotations": {"list": []}}

fleet = dashboard("tether-fleet", "Tether / Fleet overview", [var_ds()], [
    panel("stat", "Clusters connected", ["sum(tether_cluster_connected)"], w=6, h=4, legend="connected"),
    panel("stat", "Clusters known", ["count(tether_cluster_connected)"], w=6, h=4, legend="clusters"),
    panel("stat", "Nodes", ["count(kube_node_info)"], w=6, h=4, legend="nodes"),
    panel("stat", "Pods running", ['sum(kube_pod_status_phase{phase="Running"})'], w=6, h=4, legend="pods"),
    panel("timeseries", "CPU used by cluster", ["sum by (cluster) (rate(node_cpu_usage_seconds_total[$__rate_interval]))"], unit="cores"),
    panel("timeseries", "Memory working set by cluster", ["sum by (cluster) (node_memory_working_set_bytes)"], unit="bytes"),
    panel("timeseries", "CPU requested / allocatable", ['sum by (cluster) (kube_pod_container_resource_requests{resource="cpu"}) / sum by (cluster) (kube_node_status_allocatable{resource="cpu"})'], unit="percentunit"),
    panel("timeseries", "Memory requested / allocatable", ['sum by (cluster) (kube_pod_container_resource_requests{resource="memory"}) / sum by (cluster) (kube_node_status_allocatable{resource="memory"})'], unit="percentunit"),
    panel("table", "Services by state", ["count by (state) (tether_service_status == 1)"], legend="{{state}}", instant=True),
    panel("timeseries", "Outbox entries dropped", ["sum by (cluster, kind) (tether_outbox_dropped_total)"], legend="{{cluster}} {{kind}}"),
    panel("table", "Seconds since each cluster was last seen", ["time() - tether_cluster_last_seen_timestamp_seconds"], unit="s", instant=True),
    panel("table", "Agent certificate expiry (days)", ["(tether_agent_certificate_expiry_timestamp_seconds - time()) / 86400"], instant=True),
], ["fleet"])

sel = 'cluster="$cluster"'
cluster = dashboard("tether-cluster", "Tether / Cluster", [var_ds(), var_query("cluster", "Cluster", "label_values(kube_node_info, cluster)")], [
    panel("stat", "Nodes", [f"count(kube_node_info{{{sel}}})"], w=6, h=4, legend="nodes"),
    panel("stat", "CPU allocatable", [f'sum(kube_node_status_allocatable{{{sel},resource="cpu"}})'], unit="cores", w=6, h=4, legend="cores"),
    panel("stat", "Memory allocatable", [f'sum(kube_node_status_allocatable{{{sel},resource="memory"}})'], unit="bytes", w=6, h=4, legend="bytes"),
    panel("stat", "Pods running", [f'sum(kube_pod_status_phase{{{sel},phase="Running"}})'], w=6, h=4, legend="pods"),
    panel("timeseries", "CPU used by node", [f"sum by (node) (rate(node_cpu_usage_seconds_total{{{sel}}}[$__rate_interval]))"], unit="cores", legend="{{node}}"),
    panel("timeseries", "Memory working set by node", [f"sum by (node) (node_memory_working_set_bytes{{{sel}}})"], unit="bytes", legend="{{node}}"),
    panel("timeseries", "Top 10 pods by CPU", [f"topk(10, sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{{sel}}}[$__rate_interval])))"], unit="cores", legend="{{namespace}}/{{pod}}"),
    panel("timeseries", "Top 10 pods by memory", [f"topk(10, sum by (namespace, pod) (container_memory_working_set_bytes{{{sel}}}))"], unit="bytes", legend="{{namespace}}/{{pod}}"),
    panel("timeseries", "Pods by phase", [f"sum by (phase) (kube_pod_status_phase{{{sel}}})"], legend="{{phase}}"),
    panel("timeseries", "Container restarts", [f"sum by (namespace) (kube_pod_container_status_restarts_total{{{sel}}})"], legend="{{namespace}}"),
    panel("table", "CPU and memory requested by namespace", [
        (f'sum by (namespace) (kube_pod_container_resource_requests{{{sel},resource="cpu"}})', "cpu"),
        (f'sum by (namespace) (kube_pod_container_resource_requests{{{sel},resource="memory"}})', "memory")], instant=True),
    panel("table", "Scrape targets", [f"up{{{sel}}}"], legend="{{job}} {{instance}}", instant=True),
], ["cluster"])

services = dashboard("tether-services", "Tether / Services", [var_ds(), var_query("cluster", "Cluster", "label_values(tether_service_status, cluster)", multi=True)], [
    panel("table", "Service states", ['tether_service_status{cluster=~"$cluster"} == 1'], legend="{{cluster}} {{namespace}}/{{service}} {{state}}", instant=True, w=24),
    panel("timeseries", "Services by state", ['count by (state) (tether_service_status{cluster=~"$cluster"} == 1)'], legend="{{state}}"),
    panel("timeseries", "Pods per namespace", ['count by (cluster, namespace) (kube_pod_info{cluster=~"$cluster"})'], legend="{{cluster}} {{namespace}}"),
    panel("timeseries", "CPU used per namespace", ['sum by (cluster, namespace) (rate(container_cpu_usage_seconds_total{cluster=~"$cluster"}[$__rate_interval]))'], unit="cores", legend="{{cluster}} {{namespace}}"),
    panel("timeseries", "Memory per namespace", ['sum by (cluster, namespace) (container_memory_working_set_bytes{cluster=~"$cluster"})'], unit="bytes", legend="{{cluster}} {{namespace}}"),
], ["services"])

here = os.path.dirname(os.path.abspath(__file__))
for name, d in [("fleet", fleet), ("cluster", cluster), ("services", services)]:
    with open(os.path.join(here, "dashboards", f"tether-{name}.json"), "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")
