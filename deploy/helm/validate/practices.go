package main

// Best practices, on by default (-practices=false turns them off): what kube-linter's default
// checks would ask of the chart, written against the same API types. Each pod template's
// containers (init containers and sidecars too) run as non-root with a read-only root filesystem,
// no privilege escalation, all capabilities dropped, not privileged, with CPU and memory requests
// and limits and a pinned image tag; every long-running container (not a run-once init container)
// has liveness and readiness probes; pods share no host namespace and mount no service account
// token unless they say so; every Deployment or StatefulSet has a PodDisruptionBudget selecting it.

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func practicesPod(p *problems, field string, spec *corev1.PodSpec, longRunning bool) {
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		p.add("%s: shares a host namespace (hostNetwork/hostPID/hostIPC)", field)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		p.add("%s.automountServiceAccountToken: set it to false (the pod does not call the API)", field)
	}
	podNonRoot := spec.SecurityContext != nil && spec.SecurityContext.RunAsNonRoot != nil && *spec.SecurityContext.RunAsNonRoot
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		practicesContainer(p, fmt.Sprintf("%s.initContainers[%s]", field, c.Name), c, podNonRoot, sidecar)
	}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		practicesContainer(p, fmt.Sprintf("%s.containers[%s]", field, c.Name), c, podNonRoot, longRunning)
	}
}

func practicesContainer(p *problems, where string, c *corev1.Container, podNonRoot, longRunning bool) {
	sc := c.SecurityContext
	if sc == nil {
		p.add("%s.securityContext: missing", where)
		return
	}
	if !(podNonRoot || (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot)) {
		p.add("%s: may run as root (runAsNonRoot)", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		p.add("%s: root filesystem writable (readOnlyRootFilesystem)", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		p.add("%s: allowPrivilegeEscalation is not false", where)
	}
	if sc.Privileged != nil && *sc.Privileged {
		p.add("%s: privileged", where)
	}
	dropsAll := false
	if sc.Capabilities != nil {
		for _, capability := range sc.Capabilities.Drop {
			dropsAll = dropsAll || capability == "ALL"
		}
		if len(sc.Capabilities.Add) > 0 {
			p.add("%s: adds capabilities %v", where, sc.Capabilities.Add)
		}
	}
	if !dropsAll {
		p.add("%s: does not drop ALL capabilities", where)
	}
	for _, kind := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[kind]; !ok {
			p.add("%s.resources: no %s request", where, kind)
		}
		if _, ok := c.Resources.Limits[kind]; !ok {
			p.add("%s.resources: no %s limit", where, kind)
		}
	}
	// A digest pins the image; otherwise a tag that is not `latest` must.
	if !strings.Contains(c.Image, "@") {
		colon := strings.LastIndex(c.Image, ":")
		if colon <= strings.LastIndex(c.Image, "/") || strings.HasSuffix(c.Image, ":latest") {
			p.add("%s.image %q: no pinned tag", where, c.Image)
		}
	}
	if longRunning && (c.LivenessProbe == nil || c.ReadinessProbe == nil) {
		p.add("%s: a long-running container needs liveness and readiness probes", where)
	}
}

type workloadRef struct {
	where    string
	replicas int32
	labels   map[string]string
}

// practices checks one object; workloads and budgets are collected for the cross-object check.
func practices(obj any, where string, workloads *[]workloadRef, budgets *[]*metav1.LabelSelector) []string {
	p := &problems{}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		practicesPod(p, "spec.template.spec", &o.Spec.Template.Spec, true)
		*workloads = append(*workloads, workloadRef{where, replicas(o.Spec.Replicas), o.Spec.Template.Labels})
	case *appsv1.StatefulSet:
		practicesPod(p, "spec.template.spec", &o.Spec.Template.Spec, true)
		*workloads = append(*workloads, workloadRef{where, replicas(o.Spec.Replicas), o.Spec.Template.Labels})
	case *batchv1.Job:
		practicesPod(p, "spec.template.spec", &o.Spec.Template.Spec, false)
	case *policyv1.PodDisruptionBudget:
		*budgets = append(*budgets, o.Spec.Selector)
	}
	return p.list
}

func replicas(n *int32) int32 {
	if n == nil {
		return 1
	}
	return *n
}

// unbudgeted: the workloads no PodDisruptionBudget selects.
func unbudgeted(workloads []workloadRef, budgets []*metav1.LabelSelector) []string {
	var out []string
	for _, w := range workloads {
		covered := false
		for _, b := range budgets {
			if sel, err := metav1.LabelSelectorAsSelector(b); err == nil && !sel.Empty() && sel.Matches(labels.Set(w.labels)) {
				covered = true
			}
		}
		if !covered && w.replicas > 0 {
			out = append(out, fmt.Sprintf("%s: no PodDisruptionBudget selects its pods", w.where))
		}
	}
	return out
}
