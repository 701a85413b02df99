// atb-kube-validate: checks rendered Kubernetes manifests offline against the API types of the
// pinned k8s.io/api (go.mod), strictly.
//
//	helm template deploy/helm/atb | atb-kube-validate -
//	atb-kube-validate rendered.yaml other.yaml
//	atb-kube-validate -practices=false -     # the API checks only
//
// Every document is decoded into its Go type from k8s.io/api with sigs.k8s.io/yaml's strict
// decoder: an unknown or misspelt field, a duplicate key, a wrong type or an unparsable quantity
// is an error, and so is a kind this program has no type for. On top of the decode it checks
// what the API server would refuse and a decode cannot see: names (DNS-1123/1035), label keys
// and values, env var names, container and port names, volume mounts that name no volume,
// probes on a port the container does not declare, requests above limits, workload selectors
// that do not match their pod template, and PodDisruptionBudgets with both or neither bound.
// Then, unless -practices=false comes first, the best practices of practices.go (non-root,
// read-only root, no escalation, capabilities dropped, resources, pinned images, probes, no
// host namespaces or service account token, a PodDisruptionBudget for every workload).
//
// Exit status: 0 when every document passes, 1 when any fails (one line per problem on
// stderr), 2 on a usage or read error.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// newObject returns an empty object of the type for apiVersion/kind, or nil when unknown.
func newObject(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "v1/PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}
	case "batch/v1/Job":
		return &batchv1.Job{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "rbac.authorization.k8s.io/v1/Role":
		return &rbacv1.Role{}
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		return &rbacv1.RoleBinding{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &serviceMonitor{}
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &prometheusRule{}
	}
	return nil
}

type problems struct{ list []string }

func (p *problems) add(format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

func (p *problems) all(field string, errs []string) {
	for _, e := range errs {
		p.add("%s: %s", field, e)
	}
}

func checkMeta(p *problems, kind string, meta *metav1.ObjectMeta) {
	if meta.Name == "" {
		p.add("metadata.name: required")
	} else if kind == "Service" {
		p.all("metadata.name "+meta.Name, validation.IsDNS1035Label(meta.Name))
	} else {
		p.all("metadata.name "+meta.Name, validation.IsDNS1123Subdomain(meta.Name))
	}
	checkLabels(p, "metadata.labels", meta.Labels)
	for key := range meta.Annotations {
		p.all("metadata.annotations "+key, validation.IsQualifiedName(strings.ToLower(key)))
	}
}

func checkLabels(p *problems, field string, set map[string]string) {
	for key, value := range set {
		p.all(field+" "+key, validation.IsQualifiedName(key))
		p.all(field+" "+key+"="+value, validation.IsValidLabelValue(value))
	}
}

func checkSelector(p *problems, field string, selector *metav1.LabelSelector, podLabels map[string]string) {
	if selector == nil {
		p.add("%s: required", field)
		return
	}
	checkLabels(p, field+".matchLabels", selector.MatchLabels)
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		p.add("%s: %v", field, err)
		return
	}
	if sel.Empty() {
		p.add("%s: empty (selects every pod)", field)
	}
	if podLabels != nil && !sel.Matches(labels.Set(podLabels)) {
		p.add("%s: does not match the pod template's labels %v", field, podLabels)
	}
}

var envName = regexp.MustCompile(`^[-._a-zA-Z][-._a-zA-Z0-9]*$`)

// checkPod checks a pod template; claims are the StatefulSet's volumeClaimTemplates, which a
// container mounts by name like a volume.
func checkPod(p *problems, field string, spec *corev1.PodSpec, claims ...string) {
	volumes := map[string]bool{}
	for _, claim := range claims {
		volumes[claim] = true
	}
	for _, v := range spec.Volumes {
		p.all(field+".volumes "+v.Name, validation.IsDNS1123Label(v.Name))
		if volumes[v.Name] {
			p.add("%s.volumes: duplicate name %q", field, v.Name)
		}
		volumes[v.Name] = true
	}
	if len(spec.Containers) == 0 {
		p.add("%s.containers: required", field)
	}
	names := map[string]bool{}
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for i := range all {
		c := &all[i]
		where := fmt.Sprintf("%s.containers[%s]", field, c.Name)
		p.all(where+".name", validation.IsDNS1123Label(c.Name))
		if names[c.Name] {
			p.add("%s: duplicate container name", where)
		}
		names[c.Name] = true
		if c.Image == "" {
			p.add("%s.image: required", where)
		}
		seenEnv := map[string]bool{}
		for _, e := range c.Env {
			if !envName.MatchString(e.Name) {
				p.add("%s.env %q: not a valid environment variable name", where, e.Name)
			}
			if seenEnv[e.Name] {
				p.add("%s.env %q: set twice", where, e.Name)
			}
			seenEnv[e.Name] = true
			if e.Value != "" && e.ValueFrom != nil {
				p.add("%s.env %q: value and valueFrom both set", where, e.Name)
			}
		}
		ports := map[string]bool{}
		for _, port := range c.Ports {
			p.all(fmt.Sprintf("%s.ports %d", where, port.ContainerPort), validation.IsValidPortNum(int(port.ContainerPort)))
			if port.Name != "" {
				p.all(where+".ports "+port.Name, validation.IsValidPortName(port.Name))
				if ports[port.Name] {
					p.add("%s.ports: duplicate name %q", where, port.Name)
				}
				ports[port.Name] = true
			}
		}
		mounts := map[string]bool{}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				p.add("%s.volumeMounts %q: no volume of that name", where, m.Name)
			}
			if !strings.HasPrefix(m.MountPath, "/") {
				p.add("%s.volumeMounts %q: mountPath %q is not absolute", where, m.Name, m.MountPath)
			}
			if mounts[m.MountPath] {
				p.add("%s.volumeMounts: %q mounted twice", where, m.MountPath)
			}
			mounts[m.MountPath] = true
		}
		for kind, probe := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe} {
			if probe == nil || probe.HTTPGet == nil {
				continue
			}
			port := probe.HTTPGet.Port
			if port.StrVal != "" && !ports[port.StrVal] {
				p.add("%s.%s: port %q is not a port of the container", where, kind, port.StrVal)
			}
			if port.StrVal == "" {
				p.all(where+"."+kind+".port", validation.IsValidPortNum(port.IntValue()))
			}
		}
		for name, limit := range c.Resources.Limits {
			if request, ok := c.Resources.Requests[name]; ok && request.Cmp(limit) > 0 {
				p.add("%s.resources: %s request %s above its limit %s", where, name, request.String(), limit.String())
			}
		}
	}
}

func check(obj any) []string {
	p := &problems{}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		checkMeta(p, "Deployment", &o.ObjectMeta)
		checkLabels(p, "spec.template.metadata.labels", o.Spec.Template.Labels)
		checkSelector(p, "spec.selector", o.Spec.Selector, o.Spec.Template.Labels)
		if o.Spec.Replicas != nil && *o.Spec.Replicas < 0 {
			p.add("spec.replicas: negative")
		}
		checkPod(p, "spec.template.spec", &o.Spec.Template.Spec)
	case *appsv1.StatefulSet:
		checkMeta(p, "StatefulSet", &o.ObjectMeta)
		checkLabels(p, "spec.template.metadata.labels", o.Spec.Template.Labels)
		checkSelector(p, "spec.selector", o.Spec.Selector, o.Spec.Template.Labels)
		if o.Spec.Replicas != nil && *o.Spec.Replicas < 0 {
			p.add("spec.replicas: negative")
		}
		var claims []string
		for _, t := range o.Spec.VolumeClaimTemplates {
			claims = append(claims, t.Name)
		}
		checkPod(p, "spec.template.spec", &o.Spec.Template.Spec, claims...)
	case *batchv1.Job:
		checkMeta(p, "Job", &o.ObjectMeta)
		checkPod(p, "spec.template.spec", &o.Spec.Template.Spec)
	case *policyv1.PodDisruptionBudget:
		checkMeta(p, "PodDisruptionBudget", &o.ObjectMeta)
		checkSelector(p, "spec.selector", o.Spec.Selector, nil)
		if (o.Spec.MinAvailable == nil) == (o.Spec.MaxUnavailable == nil) {
			p.add("spec: exactly one of minAvailable and maxUnavailable")
		}
	case *corev1.Service:
		checkMeta(p, "Service", &o.ObjectMeta)
		checkLabels(p, "spec.selector", o.Spec.Selector)
		for _, port := range o.Spec.Ports {
			p.all(fmt.Sprintf("spec.ports %d", port.Port), validation.IsValidPortNum(int(port.Port)))
			if port.Name != "" {
				p.all("spec.ports "+port.Name, validation.IsValidPortName(port.Name))
			}
		}
	case *networkingv1.NetworkPolicy:
		checkMeta(p, "NetworkPolicy", &o.ObjectMeta)
		checkLabels(p, "spec.podSelector.matchLabels", o.Spec.PodSelector.MatchLabels)
	case *corev1.ConfigMap:
		checkMeta(p, "ConfigMap", &o.ObjectMeta)
		for key := range o.Data {
			p.all("data "+key, validation.IsConfigMapKey(key))
		}
	case *corev1.Secret:
		checkMeta(p, "Secret", &o.ObjectMeta)
	case *corev1.ServiceAccount:
		checkMeta(p, "ServiceAccount", &o.ObjectMeta)
	case *corev1.PersistentVolumeClaim:
		checkMeta(p, "PersistentVolumeClaim", &o.ObjectMeta)
	case *rbacv1.Role:
		checkMeta(p, "Role", &o.ObjectMeta)
	case *rbacv1.RoleBinding:
		checkMeta(p, "RoleBinding", &o.ObjectMeta)
	default:
		checkMonitoring(p, obj)
	}
	return p.list
}

// documents splits a YAML stream at its `---` lines; empty documents (comments only) are dropped.
func documents(data []byte) [][]byte {
	var docs [][]byte
	var current bytes.Buffer
	flush := func() {
		doc := current.Bytes()
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, append([]byte(nil), doc...))
		}
		current.Reset()
	}
	scanner := bufio.NewScanner(bytes.NewReader(data))
	scanner.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for scanner.Scan() {
		line := scanner.Text()
		if strings.HasPrefix(line, "---") && strings.TrimSpace(strings.TrimLeft(line, "-")) == "" {
			flush()
			continue
		}
		current.WriteString(line)
		current.WriteByte('\n')
	}
	flush()
	return docs
}

func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			out.WriteString(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

// source is the `# Source:` line helm writes above each rendered document, when there is one.
func source(doc []byte) string {
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "# Source: ") {
			return strings.TrimPrefix(line, "# Source: ")
		}
	}
	return ""
}

var checkPractices = true

func validate(name string, data []byte) (int, []string) {
	var failures []string
	var workloads []workloadRef
	var budgets []*metav1.LabelSelector
	docs := documents(data)
	for i, doc := range docs {
		where := fmt.Sprintf("%s: document %d", name, i+1)
		if src := source(doc); src != "" {
			where += " (" + src + ")"
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			failures = append(failures, fmt.Sprintf("%s: not YAML: %v", where, err))
			continue
		}
		where += fmt.Sprintf(" %s %s", head.Kind, head.Metadata.Name)
		obj := newObject(head.APIVersion, head.Kind)
		if obj == nil {
			failures = append(failures, fmt.Sprintf("%s: no type for apiVersion %q kind %q", where, head.APIVersion, head.Kind))
			continue
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		for _, problem := range check(obj) {
			failures = append(failures, fmt.Sprintf("%s: %s", where, problem))
		}
		if checkPractices {
			for _, problem := range practices(obj, where, &workloads, &budgets) {
				failures = append(failures, fmt.Sprintf("%s: practice: %s", where, problem))
			}
		}
	}
	if checkPractices {
		for _, problem := range unbudgeted(workloads, budgets) {
			failures = append(failures, "practice: "+problem)
		}
	}
	return len(docs), failures
}

// apiVersion is the version of k8s.io/api this binary was built with (from go.mod).
func apiVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "k8s.io/api" {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "-practices=false" {
		checkPractices, args = false, args[1:]
	}
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") || len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: atb-kube-validate [-practices=false] FILE... (- reads stdin)")
		os.Exit(2)
	}
	if len(args) == 1 && args[0] == "--version" {
		fmt.Println(apiVersion())
		return
	}
	total := 0
	var failures []string
	kinds := map[string]int{}
	for _, name := range args {
		var data []byte
		var err error
		if name == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(name)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "atb-kube-validate: %v\n", err)
			os.Exit(2)
		}
		n, f := validate(name, data)
		total += n
		failures = append(failures, f...)
		for _, doc := range documents(data) {
			var head struct {
				Kind string `json:"kind"`
			}
			if yaml.Unmarshal(doc, &head) == nil {
				kinds[head.Kind]++
			}
		}
	}
	for _, f := range failures {
		fmt.Fprintln(os.Stderr, f)
	}
	var summary []string
	for kind, n := range kinds {
		summary = append(summary, fmt.Sprintf("%d %s", n, kind))
	}
	sort.Strings(summary)
	if total == 0 {
		fmt.Fprintln(os.Stderr, "atb-kube-validate: no documents")
		os.Exit(1)
	}
	if len(failures) > 0 {
		fmt.Fprintf(os.Stderr, "atb-kube-validate: %d problem(s) in %d document(s)\n", len(failures), total)
		os.Exit(1)
	}
	fmt.Printf("atb-kube-validate (k8s.io/api %s): %d document(s) valid: %s\n", apiVersion(), total, strings.Join(summary, ", "))
}
