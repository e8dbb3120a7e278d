package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/xcheng85/go-ldm/server"
)

// deployDir holds the Kubernetes manifests (kustomize base and overlays).
const deployDir = "../../deploy/k8s"

// imageBinary is where the container image (deploy/image) puts ldm.
const imageBinary = "/usr/local/bin/ldm"

// manifest is one YAML document of deploy/k8s, decoded strictly.
type manifest struct {
	file string // relative to deployDir
	kind string
	name string
	obj  any // *appsv1.StatefulSet, *corev1.Service, *policyv1.PodDisruptionBudget or *kustomization
}

// kustomization is the part of kustomize's Kustomization the manifests
// use; unknown fields fail the strict decode, like in the API types.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources,omitempty"`
	Patches    []struct {
		Path string `json:"path"`
	} `json:"patches,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// decodeManifest decodes one YAML document strictly (unknown or
// duplicated fields are errors) into the API type of its kind.
func decodeManifest(doc []byte) (kind, name string, obj any, err error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return "", "", nil, err
	}
	switch head.APIVersion + " " + head.Kind {
	case "apps/v1 StatefulSet":
		obj = &appsv1.StatefulSet{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "policy/v1 PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	case "kustomize.config.k8s.io/v1beta1 Kustomization":
		obj = &kustomization{}
	default:
		return "", "", nil, fmt.Errorf("apiVersion %q kind %q: not a kind these manifests use (add it to decodeManifest)", head.APIVersion, head.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return "", "", nil, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
	}
	return head.Kind, head.Metadata.Name, obj, nil
}

// splitYAML splits a multi-document YAML file at its "---" lines and
// drops documents that hold only comments.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		content := false
		for line := range strings.SplitSeq(cur.String(), "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				content = true
			}
		}
		if content {
			docs = append(docs, bytes.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.TrimRight(line, " \t\r") == "---" {
			flush()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

// loadManifests decodes every YAML file under dir.
func loadManifests(t *testing.T, dir string) []manifest {
	t.Helper()
	var out []manifest
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		for i, doc := range splitYAML(b) {
			kind, name, obj, err := decodeManifest(doc)
			if err != nil {
				return fmt.Errorf("%s, document %d: %w", rel, i+1, err)
			}
			out = append(out, manifest{file: rel, kind: kind, name: name, obj: obj})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("no manifests under %s", dir)
	}
	return out
}

// selects reports whether a selector (all of its labels) matches labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// varRef is a Kubernetes $(VAR) reference in args, commands and env values.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces the $(VAR) references in s by example values of the
// variables in vars, failing on a reference to an undefined variable
// (Kubernetes would leave it in the string as it is).
func expand(t *testing.T, where, s string, vars map[string]string) string {
	t.Helper()
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := varRef.FindStringSubmatch(ref)[1]
		v, ok := vars[name]
		if !ok {
			t.Errorf("%s: %s refers to %s, which is not defined (before it) in the container's env", where, s, ref)
		}
		return v
	})
}

// exampleEnv returns an example value of each env variable of c, in
// order, each one expanded with the variables defined before it, the way
// the kubelet expands them.
func exampleEnv(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for _, e := range c.Env {
		var v string
		switch {
		case e.ValueFrom == nil:
			v = expand(t, "env "+e.Name, e.Value, vars)
		case e.ValueFrom.FieldRef != nil:
			v = map[string]string{"metadata.name": "ldm-1", "metadata.namespace": "ns", "status.podIP": "10.1.2.3"}[e.ValueFrom.FieldRef.FieldPath]
			if v == "" {
				t.Errorf("env %s: no example for field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.ResourceFieldRef != nil:
			v = "2147483648"
		case e.ValueFrom.SecretKeyRef != nil:
			v = "c2VjcmV0LXNlY3JldC1zZWNyZXQ=" // base64, like the keys
		default:
			t.Errorf("env %s: no example for its source", e.Name)
		}
		vars[e.Name] = v
	}
	return vars
}

// parseLDM parses an ldm command line with the real command tree and
// returns the command it runs, its flags parsed.
func parseLDM(args []string) (*cobra.Command, error) {
	root := newRootCommand()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return nil, fmt.Errorf("ldm %s: %w", strings.Join(args, " "), err)
	}
	if !cmd.Runnable() {
		return nil, fmt.Errorf("ldm %s: %q is not a command that runs", strings.Join(args, " "), cmd.CommandPath())
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return nil, fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return nil, fmt.Errorf("%s: %w", cmd.CommandPath(), err)
	}
	return cmd, nil
}

// flagValue returns the value of the flag name as parsed on cmd.
func flagValue(cmd *cobra.Command, name string) (string, bool) {
	f := cmd.Flags().Lookup(name)
	if f == nil || !f.Changed {
		return "", false
	}
	return f.Value.String(), true
}

func TestDeploy_manifests(t *testing.T) {
	all := loadManifests(t, deployDir)
	var base []manifest
	for _, m := range all {
		if strings.HasPrefix(m.file, "base"+string(filepath.Separator)) {
			base = append(base, m)
		}
	}

	t.Run("kustomizations_name_real_files", func(t *testing.T) {
		for _, m := range all {
			k, ok := m.obj.(*kustomization)
			if !ok {
				continue
			}
			dir := filepath.Join(deployDir, filepath.Dir(m.file))
			for _, r := range k.Resources {
				if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
					t.Errorf("%s: resource %s: %v", m.file, r, err)
				}
			}
			for _, p := range k.Patches {
				if _, err := os.Stat(filepath.Join(dir, p.Path)); err != nil {
					t.Errorf("%s: patch %s: %v", m.file, p.Path, err)
				}
			}
		}
		// Every manifest of the base is listed by its kustomization.
		k := findKustomization(t, all, "base")
		for _, m := range base {
			if _, ok := m.obj.(*kustomization); !ok && !slices.Contains(k.Resources, filepath.Base(m.file)) {
				t.Errorf("base/kustomization.yaml does not list %s", m.file)
			}
		}
	})

	var sts *appsv1.StatefulSet
	services := map[string]*corev1.Service{}
	var pdbs []*policyv1.PodDisruptionBudget
	for _, m := range base {
		switch o := m.obj.(type) {
		case *appsv1.StatefulSet:
			if sts != nil {
				t.Fatalf("two StatefulSets in the base")
			}
			sts = o
		case *corev1.Service:
			services[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			pdbs = append(pdbs, o)
		}
	}
	if sts == nil {
		t.Fatal("no StatefulSet in deploy/k8s/base")
	}
	pod := sts.Spec.Template
	podLabels := pod.Labels
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("the pod has %d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	replicas := int32(1)
	if sts.Spec.Replicas != nil {
		replicas = *sts.Spec.Replicas
	}

	t.Run("statefulset", func(t *testing.T) {
		if sts.Spec.Selector == nil || !selects(sts.Spec.Selector.MatchLabels, podLabels) || len(sts.Spec.Selector.MatchExpressions) > 0 {
			t.Errorf("selector %v does not select the pod labels %v", sts.Spec.Selector, podLabels)
		}
		if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			t.Errorf("podManagementPolicy %q, want Parallel (with --bootstrap-expect)", sts.Spec.PodManagementPolicy)
		}
		if replicas < 3 {
			t.Errorf("replicas %d, want at least 3", replicas)
		}
		headless := services[sts.Spec.ServiceName]
		if headless == nil {
			t.Fatalf("serviceName %q: no such Service", sts.Spec.ServiceName)
		}
		if headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
			t.Errorf("service %s: clusterIP %q publishNotReadyAddresses %t; the peers' service must be headless and list pods before they are ready", headless.Name, headless.Spec.ClusterIP, headless.Spec.PublishNotReadyAddresses)
		}
		if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < int64(server.DefaultShutdownTimeout.Seconds())+30 {
			t.Errorf("terminationGracePeriodSeconds %v: want room for cluster leave and the server's %v drain", g, server.DefaultShutdownTimeout)
		}
		if pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks {
			t.Errorf("enableServiceLinks must be false: a Service named ldm puts LDM_* variables in the environment, and ldm reads LDM_* as flags")
		}
	})

	t.Run("volumes", func(t *testing.T) {
		volumes := map[string]bool{}
		for _, v := range pod.Spec.Volumes {
			volumes[v.Name] = true
		}
		claims := map[string]bool{}
		for _, pvc := range sts.Spec.VolumeClaimTemplates {
			claims[pvc.Name] = true
			if volumes[pvc.Name] {
				t.Errorf("%s is both a volume and a claim template", pvc.Name)
			}
			if _, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok {
				t.Errorf("claim template %s requests no storage", pvc.Name)
			}
		}
		if len(claims) != 1 {
			t.Errorf("%d claim templates, want one PersistentVolumeClaim per pod", len(claims))
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] && !claims[m.Name] {
				t.Errorf("volumeMount %s at %s names no volume or claim template", m.Name, m.MountPath)
			}
			if m.SubPath != "" {
				t.Errorf("volumeMount %s uses subPath: files under it would not follow Secret updates (certificate rotation)", m.Name)
			}
		}
		for name := range claims {
			if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == name && m.MountPath == "/data" }) {
				t.Errorf("claim template %s is not mounted at /data, the image's volume path", name)
			}
		}
	})

	// The container's args, expanded the way the kubelet expands them.
	vars := exampleEnv(t, c)
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = expand(t, "args", a, vars)
	}
	if len(c.Command) > 0 {
		t.Errorf("command %q replaces the image's entrypoint; use args", c.Command)
	}

	// mountFor returns the mount a path of the container lies under.
	mountFor := func(path string) *corev1.VolumeMount {
		var best *corev1.VolumeMount
		for i, m := range c.VolumeMounts {
			if (path == m.MountPath || strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")) && (best == nil || len(m.MountPath) > len(best.MountPath)) {
				best = &c.VolumeMounts[i]
			}
		}
		return best
	}
	isClaim := func(m *corev1.VolumeMount) bool {
		return m != nil && slices.ContainsFunc(sts.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == m.Name })
	}

	t.Run("serve_flags_exist", func(t *testing.T) {
		cmd, err := parseLDM(args)
		if err != nil {
			t.Fatalf("container args: %v", err)
		}
		if cmd.CommandPath() != "ldm serve" {
			t.Fatalf("the container runs %q, want ldm serve", cmd.CommandPath())
		}
		// Every LDM_* variable is a flag of ldm serve (flagsFromEnv).
		for _, e := range c.Env {
			if !strings.HasPrefix(e.Name, envPrefix) {
				continue
			}
			flag := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(e.Name, envPrefix), "_", "-"))
			if cmd.Flags().Lookup(flag) == nil {
				t.Errorf("env %s: ldm serve has no flag --%s", e.Name, flag)
			}
		}
		for _, name := range []string{"tls-cert", "tls-key", "client-ca"} {
			if v, ok := flagValue(cmd, name); ok && mountFor(v) == nil {
				t.Errorf("--%s=%s is on no volume", name, v)
			}
		}
		for _, name := range []string{"data", "raft-dir"} {
			v, ok := flagValue(cmd, name)
			if !ok {
				t.Errorf("--%s is not set: its default is outside the volume", name)
				continue
			}
			if !isClaim(mountFor(v)) {
				t.Errorf("--%s=%s is not on the PersistentVolumeClaim", name, v)
			}
		}
		if v, _ := flagValue(cmd, "node-id"); v != "ldm-1" {
			t.Errorf("--node-id is %q for pod ldm-1, want the pod name", v)
		}
		if v, _ := flagValue(cmd, "bootstrap-expect"); v != strconv.Itoa(int(replicas)) {
			t.Errorf("--bootstrap-expect=%s with %d replicas", v, replicas)
		}
		join, _ := flagValue(cmd, "join")
		if !strings.HasPrefix(strings.Trim(join, "[]"), sts.Spec.ServiceName+".ns.svc") {
			t.Errorf("--join=%s: want the headless service %s.NAMESPACE.svc...", join, sts.Spec.ServiceName)
		}
		// The advertised address is the pod's own service, on the API port.
		adv, _ := flagValue(cmd, "advertise")
		host, port, err := net.SplitHostPort(adv)
		if err != nil {
			t.Fatalf("--advertise=%s: %v", adv, err)
		}
		if svc := services[strings.Split(host, ".")[0]]; svc == nil || svc.Spec.Selector["statefulset.kubernetes.io/pod-name"] != "ldm-1" {
			t.Errorf("--advertise=%s for pod ldm-1 is not the pod's own service", adv)
		} else if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }) {
			t.Errorf("--advertise=%s: service %s has no port %s", adv, svc.Name, port)
		}
		addr, _ := flagValue(cmd, "addr")
		if _, p, _ := net.SplitHostPort(addr); !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
			return strconv.Itoa(int(cp.ContainerPort)) == p && cp.Name == "api"
		}) {
			t.Errorf("--addr=%s is not the container port named api", addr)
		}
		gossip, _ := flagValue(cmd, "gossip-addr")
		if _, p, _ := net.SplitHostPort(gossip); !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
			return strconv.Itoa(int(cp.ContainerPort)) == p && cp.Protocol == corev1.ProtocolUDP
		}) {
			t.Errorf("--gossip-addr=%s: no UDP container port %s", gossip, p)
		}
	})

	t.Run("prestop_leaves_the_cluster", func(t *testing.T) {
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
			t.Fatal("no preStop exec")
		}
		argv := c.Lifecycle.PreStop.Exec.Command
		if len(argv) < 2 || argv[0] != imageBinary {
			t.Fatalf("preStop %q does not run %s", argv, imageBinary)
		}
		cmd, err := parseLDM(argv[1:])
		if err != nil {
			t.Fatalf("preStop: %v", err)
		}
		if cmd.CommandPath() != "ldm cluster leave" {
			t.Errorf("preStop runs %q, want ldm cluster leave", cmd.CommandPath())
		}
		for _, name := range []string{"cacert", "cert", "key"} {
			if v, ok := flagValue(cmd, name); ok && mountFor(v) == nil {
				t.Errorf("preStop --%s=%s is on no volume", name, v)
			}
		}
	})

	t.Run("probes", func(t *testing.T) {
		tls := slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--tls-cert") })
		if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--require-client-cert") }) {
			t.Errorf("--require-client-cert: the kubelet's HTTPS probes present no certificate and would fail the handshake")
		}
		for _, p := range []struct {
			name  string
			probe *corev1.Probe
			path  string
		}{
			{"startupProbe", c.StartupProbe, server.LivezPath},
			{"livenessProbe", c.LivenessProbe, server.LivezPath},
			{"readinessProbe", c.ReadinessProbe, server.ReadyzPath},
		} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("%s: want an httpGet probe of %s", p.name, p.path)
				continue
			}
			g := p.probe.HTTPGet
			if g.Path != p.path {
				t.Errorf("%s: path %s, want %s", p.name, g.Path, p.path)
			}
			if !containerPortOf(c, g.Port, corev1.ProtocolTCP) {
				t.Errorf("%s: port %s is not a TCP port of the container", p.name, g.Port.String())
			}
			if want := map[bool]corev1.URIScheme{true: corev1.URISchemeHTTPS, false: corev1.URISchemeHTTP}[tls]; g.Scheme != want {
				t.Errorf("%s: scheme %q, want %q", p.name, g.Scheme, want)
			}
		}
	})

	t.Run("services", func(t *testing.T) {
		perPod := map[string]bool{}
		for _, svc := range services {
			sel := svc.Spec.Selector
			if podName, ok := sel["statefulset.kubernetes.io/pod-name"]; ok {
				rest := map[string]string{}
				for k, v := range sel {
					if k != "statefulset.kubernetes.io/pod-name" {
						rest[k] = v
					}
				}
				i, err := strconv.Atoi(strings.TrimPrefix(podName, sts.Name+"-"))
				if err != nil || !strings.HasPrefix(podName, sts.Name+"-") || i < 0 || i >= int(replicas) {
					t.Errorf("service %s selects pod %q, which the StatefulSet does not make", svc.Name, podName)
				}
				if svc.Name != podName {
					t.Errorf("service %s selects pod %s: name it after the pod (the node advertises its pod name)", svc.Name, podName)
				}
				if !svc.Spec.PublishNotReadyAddresses {
					t.Errorf("service %s: publishNotReadyAddresses must be true, nodes reach each other through it before they are ready", svc.Name)
				}
				sel = rest
				perPod[podName] = true
			}
			if !selects(sel, podLabels) {
				t.Errorf("service %s: selector %v does not select the pod labels %v", svc.Name, svc.Spec.Selector, podLabels)
			}
			for _, p := range svc.Spec.Ports {
				if !containerPortOf(c, p.TargetPort, p.Protocol) {
					t.Errorf("service %s port %s: targetPort %s is not a %s port of the container", svc.Name, p.Name, p.TargetPort.String(), p.Protocol)
				}
			}
		}
		for i := range int(replicas) {
			if name := fmt.Sprintf("%s-%d", sts.Name, i); !perPod[name] {
				t.Errorf("pod %s has no service of its own", name)
			}
		}
		clients := 0
		for _, svc := range services {
			if svc.Spec.ClusterIP != corev1.ClusterIPNone && !svc.Spec.PublishNotReadyAddresses {
				clients++
			}
		}
		if clients == 0 {
			t.Errorf("no client service over ready pods")
		}
	})

	t.Run("disruption_budget", func(t *testing.T) {
		if len(pdbs) != 1 {
			t.Fatalf("%d PodDisruptionBudgets, want 1", len(pdbs))
		}
		p := pdbs[0]
		if p.Spec.Selector == nil || !selects(p.Spec.Selector.MatchLabels, podLabels) {
			t.Errorf("PodDisruptionBudget selector %v does not select the pods", p.Spec.Selector)
		}
		if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.IntValue() != 1 {
			t.Errorf("maxUnavailable %v, want 1", p.Spec.MaxUnavailable)
		}
	})

	t.Run("security_and_resources", func(t *testing.T) {
		psc, sc := pod.Spec.SecurityContext, c.SecurityContext
		if psc == nil || sc == nil {
			t.Fatal("no securityContext")
		}
		if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("the pod may run as root: %+v", psc)
		}
		if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("seccompProfile %v, want RuntimeDefault", psc.SeccompProfile)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("the root file system is writable")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("allowPrivilegeEscalation is not false")
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			t.Errorf("capabilities %+v, want drop ALL", sc.Capabilities)
		}
		if m := mountFor("/tmp"); m == nil {
			t.Errorf("no writable /tmp under the read-only root")
		}
		mem, ok := c.Resources.Limits[corev1.ResourceMemory]
		req, ok2 := c.Resources.Requests[corev1.ResourceMemory]
		if !ok || !ok2 {
			t.Fatalf("resources %v: want memory requests and limits", c.Resources)
		}
		if req.Cmp(mem) > 0 {
			t.Errorf("memory request %s above the limit %s", req.String(), mem.String())
		}
		if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
			t.Errorf("no CPU request")
		}
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil
		}) {
			t.Errorf("GOMEMLIMIT does not come from the container's resources")
		}
	})

	t.Run("overlay_patches_name_base_objects", func(t *testing.T) {
		for _, m := range all {
			if !strings.HasPrefix(m.file, "overlays"+string(filepath.Separator)) {
				continue
			}
			switch o := m.obj.(type) {
			case *corev1.Service:
				if services[o.Name] == nil {
					t.Errorf("%s patches service %s, which the base does not have", m.file, o.Name)
				}
			case *appsv1.StatefulSet:
				if o.Name != sts.Name {
					t.Errorf("%s patches StatefulSet %s, the base has %s", m.file, o.Name, sts.Name)
				}
				for _, pc := range o.Spec.Template.Spec.Containers {
					if pc.Name != c.Name {
						t.Errorf("%s patches container %s, the base has %s", m.file, pc.Name, c.Name)
					}
					for _, e := range pc.Env {
						if !slices.ContainsFunc(c.Env, func(be corev1.EnvVar) bool { return be.Name == e.Name }) {
							t.Errorf("%s sets env %s, which the base container does not use", m.file, e.Name)
						}
					}
					req, okReq := pc.Resources.Requests[corev1.ResourceMemory]
					lim, okLim := pc.Resources.Limits[corev1.ResourceMemory]
					if okReq != okLim {
						t.Errorf("%s sets the memory request or limit alone; GOMEMLIMIT follows the request, set both", m.file)
					} else if okReq && req.Cmp(lim) > 0 {
						t.Errorf("%s: memory request %s above the limit %s", m.file, req.String(), lim.String())
					}
				}
				for _, pvc := range o.Spec.VolumeClaimTemplates {
					if !slices.ContainsFunc(sts.Spec.VolumeClaimTemplates, func(b corev1.PersistentVolumeClaim) bool { return b.Name == pvc.Name }) {
						t.Errorf("%s: claim template %s is not the base's (the mount would name no claim)", m.file, pvc.Name)
					}
				}
			}
		}
	})
}

// containerPortOf reports whether port (a name or number) is a port of c
// with the protocol.
func containerPortOf(c corev1.Container, port intstr.IntOrString, protocol corev1.Protocol) bool {
	if protocol == "" {
		protocol = corev1.ProtocolTCP
	}
	for _, cp := range c.Ports {
		p := cp.Protocol
		if p == "" {
			p = corev1.ProtocolTCP
		}
		if p == protocol && (cp.Name == port.String() || strconv.Itoa(int(cp.ContainerPort)) == port.String()) {
			return true
		}
	}
	return false
}

func findKustomization(t *testing.T, all []manifest, dir string) *kustomization {
	t.Helper()
	for _, m := range all {
		if k, ok := m.obj.(*kustomization); ok && filepath.Dir(m.file) == dir {
			return k
		}
	}
	t.Fatalf("no kustomization.yaml in %s", dir)
	return nil
}

// TestDeploy_decodeManifest_strict shows that the decoder the manifest
// test relies on rejects what Kubernetes would drop or refuse.
func TestDeploy_decodeManifest_strict(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown_field":    "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec:\n  replica: 3\n",
		"misplaced_field":  "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 1, containerPort: 1}]\n",
		"duplicate_field":  "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  type: ClusterIP\n  type: NodePort\n",
		"wrong_type":       "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\nspec:\n  selector: app\n",
		"unknown_kind":     "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
		"kustomize_typo":   "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresource: [a.yaml]\n",
		"wrong_apiversion": "apiVersion: apps/v1beta1\nkind: StatefulSet\nmetadata: {name: x}\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, _, err := decodeManifest([]byte(doc)); err == nil {
				t.Errorf("decoded without an error:\n%s", doc)
			}
		})
	}
	if _, _, _, err := decodeManifest([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  clusterIP: None\n")); err != nil {
		t.Errorf("a valid Service: %v", err)
	}
}

// TestDeploy_parseLDM checks the command-line check itself: an unknown
// flag, a bad value and an unknown command are reported.
func TestDeploy_parseLDM(t *testing.T) {
	for name, args := range map[string][]string{
		"unknown_flag":    {"serve", "--no-such-flag=1"},
		"bad_value":       {"serve", "--max-tile-bytes=lots"},
		"unknown_command": {"cluster", "explode"},
		"not_runnable":    {"cluster"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseLDM(args); err == nil {
				t.Errorf("ldm %s passed the check", strings.Join(args, " "))
			}
		})
	}
	if cmd, err := parseLDM([]string{"serve", "--data=/data/tiles", "--node-id=a", "--join=x.y.svc"}); err != nil || cmd.CommandPath() != "ldm serve" {
		t.Errorf("a valid serve command line was refused: %v", err)
	}
}
