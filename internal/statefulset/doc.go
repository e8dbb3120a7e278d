// Package statefulset holds a test only: TestStatefulSet runs three real
// `ldm serve` processes the way a Kubernetes StatefulSet with a headless
// service runs them, on one machine. Each "pod" is a network namespace
// with its own address on a bridge (in a namespace of its own), peers are
// found through one DNS name that a stub server in the test answers with
// the addresses of every pod that exists, ready or not (a headless service
// with publishNotReadyAddresses), and the pods start at the same moment
// with --bootstrap-expect 3. It checks that they form one cluster every
// time, then restarts them one at a time under a steady write load.
//
// It needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and the ip command;
// without them it fails and says so. LDM_STATEFULSET_ROUNDS sets the
// number of parallel starts (default 5).
package statefulset
