package main

// The two Prometheus Operator kinds the chart renders (monitoring.coreos.com/v1), as far as the
// chart uses them: the operator's CRDs are not a Go module pinned here, so these structs hold the
// fields of its API the chart may set, and any other field is refused like a misspelt one.

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		TargetLabels      []string             `json:"targetLabels,omitempty"`
		PodTargetLabels   []string             `json:"podTargetLabels,omitempty"`
		Endpoints         []monitorEndpoint    `json:"endpoints"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		SampleLimit *uint64 `json:"sampleLimit,omitempty"`
	} `json:"spec"`
}

type monitorEndpoint struct {
	Port              string              `json:"port,omitempty"`
	Path              string              `json:"path,omitempty"`
	Scheme            string              `json:"scheme,omitempty"`
	Params            map[string][]string `json:"params,omitempty"`
	Interval          string              `json:"interval,omitempty"`
	ScrapeTimeout     string              `json:"scrapeTimeout,omitempty"`
	HonorLabels       bool                `json:"honorLabels,omitempty"`
	HonorTimestamps   *bool               `json:"honorTimestamps,omitempty"`
	Relabelings       []map[string]any    `json:"relabelings,omitempty"`
	MetricRelabelings []map[string]any    `json:"metricRelabelings,omitempty"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []struct {
			Name                    string            `json:"name"`
			Interval                string            `json:"interval,omitempty"`
			QueryOffset             string            `json:"query_offset,omitempty"`
			Limit                   *int              `json:"limit,omitempty"`
			PartialResponseStrategy string            `json:"partial_response_strategy,omitempty"`
			Labels                  map[string]string `json:"labels,omitempty"`
			Rules                   []struct {
				Record        string            `json:"record,omitempty"`
				Alert         string            `json:"alert,omitempty"`
				Expr          string            `json:"expr"`
				For           string            `json:"for,omitempty"`
				KeepFiringFor string            `json:"keep_firing_for,omitempty"`
				Labels        map[string]string `json:"labels,omitempty"`
				Annotations   map[string]string `json:"annotations,omitempty"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

func checkMonitoring(p *problems, obj any) {
	switch o := obj.(type) {
	case *serviceMonitor:
		checkMeta(p, "ServiceMonitor", &o.ObjectMeta)
		checkSelector(p, "spec.selector", &o.Spec.Selector, nil)
		if len(o.Spec.Endpoints) == 0 {
			p.add("spec.endpoints: required")
		}
		for i, e := range o.Spec.Endpoints {
			if e.Port == "" {
				p.add("spec.endpoints[%d].port: required (the Service's port name)", i)
			}
		}
	case *prometheusRule:
		checkMeta(p, "PrometheusRule", &o.ObjectMeta)
		if len(o.Spec.Groups) == 0 {
			p.add("spec.groups: required")
		}
		names := map[string]bool{}
		for _, g := range o.Spec.Groups {
			if g.Name == "" || names[g.Name] {
				p.add("spec.groups: a group needs a unique name (%q)", g.Name)
			}
			names[g.Name] = true
			for j, r := range g.Rules {
				if (r.Alert == "") == (r.Record == "") {
					p.add("spec.groups[%s].rules[%d]: exactly one of alert and record", g.Name, j)
				}
				if r.Expr == "" {
					p.add("spec.groups[%s].rules[%d]: expr required", g.Name, j)
				}
			}
		}
	}
}
