// Package statefulset holds a test only: TestStatefulSet runs three real
// `ldm serve` processes the way a Kubernetes StatefulSet with a headless
// service runs them, on one machine. Each "pod" is a network namespace
// with its own address on a bridge (in a namespace of its own), peers are
// found through one DNS name that a stub server in the test answers with
// the addresses of every pod that exists, ready or not (a headless service
// with publishNotReadyAddresses), and the pods start at the same moment
// with --bootstrap-expect 3. It checks that they form one cluster every
// time, then restarts them one at a time under a steady write load: as the
// manifests do (preStop `ldm cluster leave`, then SIGTERM; the pod comes
// back with a new address under the same name), and with SIGTERM alone
// (same address). Nodes advertise their pod's DNS name, as the manifests'
// per-pod services do.
//
// Then pods are SIGKILLed (no preStop, no SIGTERM: a crash, an eviction,
// an OOM kill), the leader first, then a follower, and created again with
// a new address: every pod must list every pod as an alive voter of one
// cluster within readyTimeout, and no pod may log a gossip name conflict.
// This works because a node gossips under a name that is new at every
// start (cluster/incarnation.go); under its node id alone, the others held
// the old address and Serf's name conflict resolution could shut down the
// new process's gossip.
//
// It needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and the ip command;
// without them it fails and says so. LDM_STATEFULSET_ROUNDS sets the
// number of parallel starts (default 5).
package statefulset
